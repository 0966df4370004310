package memory

import (
	"context"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.ClientRegistry = (*Backbone)(nil)

// clientBinding is a client id's owner and secret until it expires.
type clientBinding struct {
	owner, secret string
	expires       time.Time
}

// BindClient implements rooms.ClientRegistry.
func (b *Backbone) BindClient(_ context.Context, client, owner, secret string, ttl time.Duration) (string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	if cb, ok := b.clients[client]; ok && now.Before(cb.expires) {
		if cb.owner != owner {
			return "", false, rooms.ErrClientInUse
		}
		cb.expires = now.Add(ttl)
		b.clients[client] = cb
		return cb.secret, false, nil
	}
	if _, ok := b.clients[client]; !ok && len(b.clients) >= b.opts.MaxClientBindings {
		// Full: free what expired since the last sweep, at most once a
		// second (a sweep walks every binding).
		if now.Sub(b.clientsSwept) >= time.Second {
			b.clientsSwept = now
			b.sweepClients(now)
		}
		if len(b.clients) >= b.opts.MaxClientBindings {
			return "", false, rooms.ErrClientsFull
		}
	}
	b.clients[client] = clientBinding{owner: owner, secret: secret, expires: now.Add(ttl)}
	return secret, true, nil
}

// UnbindClient implements rooms.ClientRegistry.
func (b *Backbone) UnbindClient(_ context.Context, client, owner, secret string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cb, ok := b.clients[client]; ok && cb.owner == owner && cb.secret == secret {
		delete(b.clients, client)
	}
	return nil
}

// ClientBinding implements rooms.ClientRegistry.
func (b *Backbone) ClientBinding(_ context.Context, client string) (string, string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cb, ok := b.clients[client]
	if !ok || !b.opts.Now().Before(cb.expires) {
		return "", "", false, nil
	}
	return cb.owner, cb.secret, true, nil
}

// ClientBindings implements rooms.ClientRegistry.
func (b *Backbone) ClientBindings(context.Context) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.clients), nil
}

// sweepClients frees expired bindings; b.mu must be held.
func (b *Backbone) sweepClients(now time.Time) {
	for client, cb := range b.clients {
		if !now.Before(cb.expires) {
			delete(b.clients, client)
		}
	}
}
