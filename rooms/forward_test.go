package rooms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// TestChangesOfUnknownConnections checks that a join, leave or refresh of a
// connection no instance holds is ErrUnknownConnection, with no directory to
// forward it through (the embedded backbone). Forwarding between instances
// is tested over Redis in relay's cluster tests.
func TestChangesOfUnknownConnections(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	ctx := context.Background()
	u := rooms.Identity{User: "u"}
	if err := e.hub.Join(ctx, u, "nobody", "a"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("Join = %v; want ErrUnknownConnection", err)
	}
	if err := e.hub.Leave(ctx, u, "nobody", "a"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("Leave = %v; want ErrUnknownConnection", err)
	}
	if err := e.hub.Refresh(ctx, u, "nobody"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("Refresh = %v; want ErrUnknownConnection", err)
	}
}
