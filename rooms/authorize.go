package rooms

import (
	"context"
	"fmt"
	"strings"
)

// Authorize checks that id may subscribe to channel, as a stream would.
func (h *Hub) Authorize(id Identity, channel string) error { return h.authorize(id, channel) }

// authorize checks that id may subscribe to channel. User channels belong
// to their user alone; namespace channels come with the rooms.
func (h *Hub) authorize(id Identity, channel string) error {
	switch {
	case strings.HasPrefix(channel, userChannelPrefix):
		if id.Server || id.User == strings.TrimPrefix(channel, userChannelPrefix) {
			return nil
		}
		return fmt.Errorf("%w: a user's channel is theirs alone", ErrForbidden)
	case !IsRoomChannel(channel):
		return nil
	case h.opts.Namespaces == nil:
		return nil
	}
	room, err := ParseRoom(channel)
	if err != nil {
		return err
	}
	return h.opts.Namespaces.CanSubscribe(id, room)
}

// Refresh replaces the identity of connection id with next, a fresh token
// of the same user, so that a long-lived stream outlives its first token.
// Rooms the new token does not allow are left with reason "forbidden".
func (h *Hub) Refresh(ctx context.Context, next Identity, id string) error {
	conn, err := h.Lookup(id)
	if err != nil {
		return h.forwardRefresh(ctx, next, id)
	}
	cur := conn.Identity()
	if cur.User == "" || next.User != cur.User {
		return fmt.Errorf("%w: only a token of the connection's own user can refresh it", ErrForbidden)
	}
	conn.changing.Lock()
	defer conn.changing.Unlock()
	conn.mu.Lock()
	conn.identity = next
	conn.mu.Unlock()
	for _, ch := range conn.Rooms() {
		if h.authorize(next, ch) != nil {
			h.leave(conn, ch, "forbidden")
		}
	}
	conn.identityGen.Add(1)
	select {
	case conn.identityChanged <- struct{}{}:
	default:
	}
	conn.mu.Lock()
	conn.signal()
	conn.mu.Unlock()
	if conn.multi {
		return h.saveSession(ctx, conn)
	}
	return nil
}
