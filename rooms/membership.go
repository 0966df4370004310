package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// ErrSingleRoom is returned when rooms are joined to or left from a stream
// that was opened for one room.
var ErrSingleRoom = errors.New("single-room stream")

// Join adds channel to the live multi-room connection id. When Join
// returns, every event published to channel afterwards reaches the
// connection, and none published before does.
func (h *Hub) Join(ctx context.Context, caller Identity, id, channel string) error {
	conn, forwarded, err := h.changeable(ctx, caller, "join", id, channel)
	if conn == nil || forwarded {
		return err
	}
	if err := h.authorize(conn.Identity(), channel); err != nil {
		return err
	}
	// Joins and leaves of one connection are applied one at a time, so
	// that the room count and the namespace channels stay exact.
	conn.changing.Lock()
	defer conn.changing.Unlock()
	conn.mu.Lock()
	already := conn.rooms[channel]
	n := len(conn.rooms)
	conn.mu.Unlock()
	if already {
		return nil
	}
	if n >= h.opts.MaxRooms {
		return fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	want := []string{channel}
	if ns := NamespaceChannel(channelNamespace(channel)); !conn.inNamespace(ns) {
		want = append(want, ns)
	}
	if err := h.joinChannels(ctx, conn, want); err != nil {
		return err
	}
	conn.mu.Lock()
	conn.rooms[channel] = true
	conn.mu.Unlock()
	if err := h.saveSession(ctx, conn); err != nil {
		// The session would not name the room (a resume would lose it):
		// the join is undone, before anyone saw it in presence.
		h.leave(conn, channel, "")
		return err
	}
	h.enter(ctx, conn, channel)
	return nil
}

// joinChannels joins conn to the channels want, each from the backbone's
// head; a join that fails takes back what it did, so that an error leaves
// the connection as it was. conn.changing must be held.
func (h *Hub) joinChannels(ctx context.Context, conn *Connection, want []string) error {
	var joinedNow []string
	undo := func() {
		conn.mu.Lock()
		var cs []*hubChannel
		for _, ch := range joinedNow {
			if m, ok := conn.joined[ch]; ok {
				delete(conn.joined, ch)
				cs = append(cs, m.c)
				conn.leftLocked(ch, m)
			}
		}
		conn.mu.Unlock()
		for _, c := range cs {
			h.part(conn, c)
		}
	}
	for _, ch := range want {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			undo()
			return fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		conn.mu.Lock()
		closed := conn.closed
		_, raced := conn.joined[ch]
		conn.mu.Unlock()
		if closed || raced {
			h.release(c)
			if closed {
				return ErrUnknownConnection
			}
			continue
		}
		atLeast, err := h.bb.Head(ctx, ch)
		if err != nil {
			h.release(c)
			undo()
			return fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		h.joinAt(conn, c, atLeast)
		joinedNow = append(joinedNow, ch)
	}
	return nil
}

// changeable finds the multi-room connection id that caller may change. A
// connection held by another instance gets op forwarded there: forwarded is
// then true and err is the outcome.
func (h *Hub) changeable(ctx context.Context, caller Identity, op, id, channel string) (conn *Connection, forwarded bool, err error) {
	conn, err = h.Lookup(id)
	if err != nil {
		return nil, true, h.forward(ctx, caller, op, id, channel)
	}
	if err := conn.ownedBy(caller); err != nil {
		return nil, false, err
	}
	if !conn.multi {
		return nil, false, fmt.Errorf("%w: %s rooms on a /v1/stream connection", ErrSingleRoom, op)
	}
	return conn, false, nil
}

// Leave removes channel from the live multi-room connection id.
func (h *Hub) Leave(ctx context.Context, caller Identity, id, channel string) error {
	conn, forwarded, err := h.changeable(ctx, caller, "leave", id, channel)
	if conn == nil || forwarded {
		return err
	}
	conn.changing.Lock()
	defer conn.changing.Unlock()
	h.leave(conn, channel, "")
	return h.saveSession(ctx, conn)
}

// leave takes conn out of room channel, and out of its namespace channel
// when it was the last room there; reason ("" for a requested leave) goes
// with the roomcast:left event. conn.changing must be held.
func (h *Hub) leave(conn *Connection, channel, reason string) {
	conn.mu.Lock()
	if !conn.rooms[channel] {
		conn.mu.Unlock()
		return
	}
	delete(conn.rooms, channel)
	conn.present = slices.DeleteFunc(conn.present, func(ch string) bool { return ch == channel })
	parts := []string{channel}
	if ns := NamespaceChannel(channelNamespace(channel)); !conn.inNamespaceLocked(ns) {
		parts = append(parts, ns)
	}
	var cs []*hubChannel
	leftAt := make(map[string]uint64, len(parts)) // each channel's position at the leave
	for _, ch := range parts {
		if m, ok := conn.joined[ch]; ok {
			delete(conn.joined, ch)
			delete(conn.joinedAt, ch)
			cs = append(cs, m.c)
			conn.leftLocked(ch, m)
			leftAt[ch] = m.got
		}
	}
	conn.mu.Unlock()
	for _, c := range cs {
		// Events of the channel up to its head when it let the
		// connection go were queued ahead of the roomcast:left.
		leftAt[c.name] = max(leftAt[c.name], h.part(conn, c))
	}
	if conn.multi {
		// The namespace channel too: its broadcasts up to the leave
		// reached the stream.
		conn.mu.Lock()
		for _, ch := range parts {
			if p, ok := leftAt[ch]; ok {
				if ch == channel {
					conn.rememberLeftLocked(ch, p, reason, "")
				} else {
					conn.rememberLeftLocked(ch, p, "", channel)
				}
			}
		}
		conn.mu.Unlock()
	}
	h.exit(conn.ID, channel)
	if !conn.multi && reason != "" {
		// A stream of one room has nothing left to carry.
		conn.Close(CloseReason{Code: reason, Message: "the stream's room was taken away (" + reason + ")"})
		return
	}
	conn.control(Delivery{Kind: KindLeft, Channel: channel, Reason: reason})
	for _, ch := range parts[1:] {
		conn.control(Delivery{Kind: kindUntrack, Channel: ch})
	}
}
