package rooms_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// TestRefresh checks that a token refresh replaces a stream's identity,
// leaves the rooms the new token does not allow with reason "forbidden",
// and is refused for a token of another user.
func TestRefresh(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{Namespaces: &rooms.Namespaces{}}, memory.Options{})
	ctx := context.Background()
	u := rooms.Identity{User: "u"}
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true, Identity: u})

	if err := e.hub.Refresh(ctx, rooms.Identity{User: "v"}, r.conn.ID); !errors.Is(err, rooms.ErrForbidden) {
		t.Fatalf("Refresh with another user's token = %v; want ErrForbidden", err)
	}
	gen := r.conn.IdentityGeneration()
	narrower := rooms.Identity{User: "u", Subscribe: []string{"a"}}
	if err := e.hub.Refresh(ctx, narrower, r.conn.ID); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	got := r.until("left(b)", func(it item) bool { return it.kind == rooms.KindLeft })
	if last := got[len(got)-1]; last.room != "b" || last.reason != "forbidden" {
		t.Fatalf("read %v; want left(b) with reason forbidden", got)
	}
	if rs := r.conn.Rooms(); !slices.Equal(rs, []string{"a"}) {
		t.Fatalf("rooms after the refresh: %v; want [a]", rs)
	}
	if id := r.conn.Identity(); !slices.Equal(id.Subscribe, narrower.Subscribe) {
		t.Fatalf("identity after the refresh: %+v", id)
	}
	if r.conn.IdentityGeneration() == gen {
		t.Fatal("the identity's generation did not move: the writer would not see the new expiry")
	}
	// Joins are authorised against the new identity.
	if err := e.hub.Join(ctx, u, r.conn.ID, "b"); !errors.Is(err, rooms.ErrForbidden) {
		t.Fatalf("Join(b) after the refresh = %v; want ErrForbidden", err)
	}
}
