package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Moderator is implemented by backbones that keep bans and can delete
// events, for every instance sharing them.
type Moderator interface {
	// Ban refuses user until the given time; a zero time lifts the ban.
	Ban(ctx context.Context, user string, until time.Time) error
	// BannedUntil returns when user's ban ends, zero when not banned.
	BannedUntil(ctx context.Context, user string) (time.Time, error)
	// DeleteEvent removes the event at seq from channel's history and
	// reports whether it was there.
	DeleteEvent(ctx context.Context, channel string, seq uint64) (bool, error)
}

// controlChannel carries moderation orders to every hub sharing a backbone.
const controlChannel = "#control"

// order is a moderation order on the control channel.
type order struct {
	Op   string `json:"op"` // "ban" or "kick"
	User string `json:"user"`
	Room string `json:"room,omitempty"`
}

// ErrNotFound is returned for an event that is not in history.
var ErrNotFound = fmt.Errorf("not found")

// Ban refuses user for d (0 lifts the ban) and closes the user's streams
// on every instance with reason "banned".
func (h *Hub) Ban(ctx context.Context, user string, d time.Duration) error {
	mod, ok := BackboneAs[Moderator](h.bb)
	if !ok {
		return fmt.Errorf("%w: this backbone cannot keep bans", ErrBackboneDown)
	}
	var until time.Time
	if d > 0 {
		until = time.Now().Add(d)
	}
	if err := mod.Ban(ctx, user, until); err != nil {
		return err
	}
	if d > 0 {
		return h.sendOrder(ctx, order{Op: "ban", User: user})
	}
	return nil
}

// Kick takes user's connections out of room channel on every instance.
func (h *Hub) Kick(ctx context.Context, user, channel string) error {
	return h.sendOrder(ctx, order{Op: "kick", User: user, Room: channel})
}

// DeleteEvent removes the event with id from room channel's history.
func (h *Hub) DeleteEvent(ctx context.Context, channel, id string) error {
	mod, ok := BackboneAs[Moderator](h.bb)
	if !ok {
		return fmt.Errorf("%w: this backbone cannot delete events", ErrBackboneDown)
	}
	epoch, seq, err := ParseEventID(id)
	if err != nil {
		return fmt.Errorf("%w: event %q", ErrNotFound, id)
	}
	current, err := h.bb.Epoch(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if epoch != current {
		return fmt.Errorf("%w: event %q", ErrNotFound, id)
	}
	found, err := mod.DeleteEvent(ctx, channel, seq)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: event %q", ErrNotFound, id)
	}
	return nil
}

// checkBan refuses a banned identity.
func (h *Hub) checkBan(ctx context.Context, id Identity) error {
	if id.User == "" || id.Server {
		return nil
	}
	mod, ok := BackboneAs[Moderator](h.bb)
	if !ok {
		return nil
	}
	until, err := mod.BannedUntil(ctx, id.User)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if !until.IsZero() && time.Now().Before(until) {
		return fmt.Errorf("%w until %s", ErrBanned, until.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckBan refuses a banned identity; publishes call it.
func (h *Hub) CheckBan(ctx context.Context, id Identity) error { return h.checkBan(ctx, id) }

func (h *Hub) sendOrder(ctx context.Context, o order) error {
	data, _ := json.Marshal(o)
	_, err := h.bb.Publish(ctx, Message{Channels: []string{controlChannel}, Event: "roomcast:order", Data: data}, "")
	return err
}

// obey carries out a moderation order on this instance's connections.
func (h *Hub) obey(ev *Event) {
	var o order
	if json.Unmarshal(ev.Data, &o) != nil || o.User == "" {
		return
	}
	h.mu.RLock()
	var mine []*Connection
	for _, c := range h.conns {
		if c.Identity().User == o.User {
			mine = append(mine, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range mine {
		switch o.Op {
		case "ban":
			c.Close(CloseReason{Code: CloseBanned, Message: "this user is banned"})
		case "kick":
			// Leaving takes locks the delivery path holds: do it aside.
			go func() {
				c.changing.Lock()
				defer c.changing.Unlock()
				h.leave(c, o.Room, "kicked")
			}()
		}
	}
}
