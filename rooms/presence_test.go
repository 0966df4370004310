package rooms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// TestPresence checks that a stream is present in its rooms where the
// namespace keeps presence, that a namespace without it says so, and that
// only callers who may subscribe to a room may list it.
func TestPresence(t *testing.T) {
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true, Presence: true},
		Named: map[string]rooms.NamespaceOptions{
			"quiet":   {Anonymous: true},
			"members": {Presence: true},
		},
	}
	e := newEnv(t, rooms.HubOptions{Namespaces: ns}, memory.Options{})
	ctx := context.Background()
	u := rooms.Identity{User: "u", Name: "U"}
	e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Identity: u})

	list, err := e.hub.Presence(ctx, anon, "a")
	if err != nil {
		t.Fatalf("Presence(a): %v", err)
	}
	if list.Users != 1 || len(list.Members) != 1 || list.Members[0].User != "u" || list.Members[0].Name != "U" {
		t.Fatalf("Presence(a) = %+v; want user u", list)
	}
	if _, err := e.hub.Presence(ctx, anon, "quiet:x"); !errors.Is(err, rooms.ErrPresenceOff) {
		t.Fatalf("Presence(quiet:x) = %v; want ErrPresenceOff", err)
	}
	if _, err := e.hub.Presence(ctx, anon, "members:x"); !errors.Is(err, rooms.ErrUnauthenticated) {
		t.Fatalf("anonymous Presence(members:x) = %v; want ErrUnauthenticated", err)
	}
}
