package rooms_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestConnectValidation(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{MaxRooms: 2}, memory.Options{})
	if e.hub.MaxRooms() != 2 {
		t.Fatalf("MaxRooms = %d", e.hub.MaxRooms())
	}
	ctx := context.Background()
	if _, err := e.hub.Connect(ctx, rooms.ConnectRequest{Channels: []string{"a", "b", "c"}, Multi: true}); !errors.Is(err, rooms.ErrTooManyRooms) {
		t.Fatalf("Connect with 3 rooms = %v; want ErrTooManyRooms", err)
	}
	// Duplicates count once.
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b", "a"}, Multi: true})
	if !slices.Equal(r.conn.Rooms(), []string{"a", "b"}) {
		t.Fatalf("rooms %v", r.conn.Rooms())
	}
	if r.conn.Client == "" || r.conn.ID == "" || r.conn.Session == "" {
		t.Fatalf("connection without generated ids: %+v", r.conn)
	}
	if got, err := e.hub.Lookup(r.conn.ID); err != nil || got != r.conn {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	if _, err := e.hub.Lookup("unknown"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Fatalf("Lookup(unknown) = %v", err)
	}
}
