package rooms_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// TestTouchClosesStreamWhoseClientIDWasTaken checks that a heartbeat
// renewing a stream's client id that another caller bound meanwhile (the
// stream's binding lapsed) closes the stream with client_in_use, rather
// than letting it live on under an id someone else speaks for.
func TestTouchClosesStreamWhoseClientIDWasTaken(t *testing.T) {
	var skew atomic.Int64 // how far the backbone's clock is ahead
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e := newEnv(t, rooms.HubOptions{ClientTTL: time.Millisecond}, memory.Options{Now: now})
	ctx := context.Background()
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Client: "shared-client", Identity: rooms.Identity{User: "u"}})
	if err := e.hub.Touch(ctx, r.conn); err != nil || r.conn.Closed() {
		t.Fatalf("Touch while the stream holds its id: %v, closed %v", err, r.conn.Closed())
	}

	// The binding lapses in the backbone, and another user binds the id,
	// for an hour of the backbone's clock once it is back.
	skew.Store(int64(time.Hour))
	e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Client: "shared-client", Identity: rooms.Identity{User: "v"}})
	skew.Store(0)

	roomstest.Eventually(t, "the stream closed by a heartbeat", func() bool {
		if err := e.hub.Touch(ctx, r.conn); err != nil {
			t.Fatalf("Touch: %v", err)
		}
		return r.conn.Closed()
	})
	if got := r.conn.Reason().Code; got != rooms.CloseClientInUse {
		t.Fatalf("closed with %q; want %q", got, rooms.CloseClientInUse)
	}
}
