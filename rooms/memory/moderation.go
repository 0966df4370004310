package memory

import (
	"context"
	"slices"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.Moderator = (*Backbone)(nil)

// Ban implements rooms.Moderator.
func (b *Backbone) Ban(_ context.Context, user string, until time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if until.IsZero() {
		delete(b.bans, user)
		return nil
	}
	b.bans[user] = until
	return nil
}

// BannedUntil implements rooms.Moderator.
func (b *Backbone) BannedUntil(_ context.Context, user string) (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.bans[user]
	if !ok || !b.opts.Now().Before(until) {
		return time.Time{}, nil
	}
	return until, nil
}

// DeleteEvent implements rooms.Moderator.
func (b *Backbone) DeleteEvent(_ context.Context, channel string, seq uint64) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.channels[channel]
	if c == nil {
		return false, nil
	}
	i, ok := slices.BinarySearchFunc(c.events, seq, func(e *rooms.Event, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	if !ok {
		return false, nil
	}
	c.events = slices.Delete(c.events, i, i+1)
	return true, nil
}
