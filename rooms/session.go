package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Sessions returns how many multi-room sessions the hub counts as kept:
// of its open streams, and of streams that ended within SessionTTL.
func (h *Hub) Sessions() int { return h.sessions.Held() }

func (h *Hub) saveSession(ctx context.Context, conn *Connection) error {
	if err := h.bb.SaveSession(ctx, conn.Session, conn.sessionEntries(), h.opts.SessionTTL); err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn.mu.Lock()
	conn.touchedAt = time.Now()
	conn.mu.Unlock()
	return nil
}

// Touch keeps a connection's registration and a multi-room connection's
// session alive; writers call it on every heartbeat. Sessions are written
// to the backbone at most once per quarter TTL.
func (h *Hub) Touch(ctx context.Context, conn *Connection) error {
	now := time.Now()
	epoch, epochKnown := h.backboneEpoch(ctx, now)
	conn.mu.Lock()
	if epochKnown && epoch != conn.claimsEpoch {
		// The backbone lost its data (Redis restarted without
		// persistence): the registration, client-id binding, session and
		// presence this connection holds are gone, and are written again
		// now rather than a quarter of their TTL later, meanwhile refused
		// as proofs and free for anyone to claim.
		conn.claimsEpoch = epoch
		conn.registeredAt, conn.touchedAt, conn.boundAt, conn.presentAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	}
	register := h.dir != nil && now.Sub(conn.registeredAt) > registrationTTL/4
	session := conn.multi && now.Sub(conn.touchedAt) > h.opts.SessionTTL/4
	bind := now.Sub(conn.boundAt) > h.opts.ClientTTL/4
	if register {
		conn.registeredAt = now
	}
	if bind {
		conn.boundAt = now
	}
	conn.mu.Unlock()
	if register {
		if err := h.register(ctx, conn); err != nil {
			return err
		}
	}
	if bind {
		// The stream keeps its client id for as long as it lives.
		err := h.renewClient(ctx, conn.Identity(), conn.bindCaller, conn.Proof)
		if errors.Is(err, ErrClientInUse) {
			// Another caller bound the id while the backbone had lost
			// this stream's binding (Redis restarted empty): it now
			// speaks for the id, and could exclude this stream from what
			// it publishes. The stream goes; its client comes back under
			// a fresh id.
			conn.Close(CloseReason{Code: CloseClientInUse, Message: "another caller holds this stream's client id; reconnect under a fresh one"})
			return nil
		}
		if err != nil {
			return err
		}
	}
	if h.presence != nil && now.Sub(conn.presentAt) > h.opts.PresenceRenew {
		// Presence shared between instances expires unless renewed, so
		// that an instance that dies takes its members with it.
		conn.presentAt = now
		id := conn.Identity()
		conn.mu.Lock()
		present := slices.Clone(conn.present)
		conn.mu.Unlock()
		for _, ch := range present {
			_, announce := h.presenceRules(ch)
			_ = h.presence.Enter(ctx, ch, Member{Conn: conn.ID, Client: conn.Client, User: id.User, Name: id.Name}, announce)
		}
	}
	if session {
		return h.saveSession(ctx, conn)
	}
	return nil
}

// epochCheckInterval is how often, at most, the hub reads the backbone's
// epoch to notice that the backbone lost its data.
const epochCheckInterval = time.Second

// backboneEpoch returns the backbone's epoch, read at most once per
// epochCheckInterval for all the connections of the hub; ok is false when
// it is unknown (the backbone is down).
func (h *Hub) backboneEpoch(ctx context.Context, now time.Time) (string, bool) {
	h.epochMu.Lock()
	if now.Sub(h.epochReadAt) < epochCheckInterval {
		defer h.epochMu.Unlock()
		return h.epochRead, h.epochRead != ""
	}
	h.epochReadAt = now
	h.epochMu.Unlock()
	epoch, err := h.bb.Epoch(ctx)
	h.epochMu.Lock()
	defer h.epochMu.Unlock()
	if err != nil {
		h.epochRead = ""
		return "", false
	}
	h.epochRead = epoch
	return epoch, true
}
