package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// instance is one relay instance: a backbone and the hub over it.
type instance struct {
	bb  *Backbone
	hub *rooms.Hub
}

// newInstances opens n instances sharing one Redis prefix, with a cursor
// key they agree on through it.
func newInstances(t *testing.T, n int) []instance {
	t.Helper()
	prefix := redistest.Prefix(t)
	out := make([]instance, n)
	for i := range out {
		bb := sharedBackbone(t, Options{Prefix: prefix})
		key, err := bb.SharedSecret(context.Background(), "cursor")
		if err != nil {
			t.Fatal(err)
		}
		codec, err := rooms.NewCursorCodec(key)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = instance{bb: bb, hub: rooms.NewHub(bb, codec, rooms.HubOptions{})}
	}
	return out
}

func connect(t *testing.T, h *rooms.Hub, req rooms.ConnectRequest) *rooms.Connection {
	t.Helper()
	conn, err := h.Connect(context.Background(), req)
	if err != nil {
		t.Fatalf("Connect(%+v): %v", req, err)
	}
	t.Cleanup(func() { h.Disconnect(conn) })
	return conn
}

// waitEvent takes conn's deliveries until the event id arrives.
func waitEvent(t *testing.T, conn *rooms.Connection, id string) {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	var seen []string
	for {
		for d := range conn.Drain() {
			if d.Kind == rooms.KindEvent {
				if d.Event.ID() == id {
					return
				}
				seen = append(seen, d.Event.ID())
			}
		}
		select {
		case <-conn.Ready():
		case <-conn.Done():
			t.Fatalf("connection closed (%+v) waiting for %s", conn.Reason(), id)
		case <-timer.C:
			t.Fatalf("event %s did not arrive; got %v", id, seen)
		}
	}
}

// TestCommandsReachTheOwner changes a connection held by instance A
// through instance B: the command is carried to A, takes effect there
// before B answers, and fails as it would on A.
func TestCommandsReachTheOwner(t *testing.T) {
	t.Parallel()
	insts := newInstances(t, 2)
	a, b := insts[0], insts[1]
	ctx := context.Background()
	owner := rooms.Identity{User: "u1"}
	conn := connect(t, a.hub, rooms.ConnectRequest{Multi: true, Client: "client-1", Identity: owner})
	single := connect(t, a.hub, rooms.ConnectRequest{Channels: []string{"lobby"}})

	client, err := b.hub.ProveClient(ctx, owner, conn.ID)
	if err != nil || client != "client-1" {
		t.Errorf("ProveClient from B = %q, %v; want client-1", client, err)
	}
	if _, err := b.hub.ProveClient(ctx, rooms.Identity{User: "u2"}, conn.ID); !errors.Is(err, rooms.ErrClientInUse) {
		t.Errorf("ProveClient(another user's connection) from B: %v, want ErrClientInUse", err)
	}
	if _, err := b.hub.ProveClient(ctx, owner, "no-such-connection"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("ProveClient(unknown) from B: %v, want ErrUnknownConnection", err)
	}

	if err := b.hub.Join(ctx, owner, conn.ID, "room"); err != nil {
		t.Fatalf("Join through B: %v", err)
	}
	if got := conn.Rooms(); len(got) != 1 || got[0] != "room" {
		t.Fatalf("rooms on A after Join through B returned = %v, want [room]", got)
	}
	// The join took effect before B answered: B's next publish reaches A.
	p := publish(t, b.bb, message("room"))
	waitEvent(t, conn, p.ID)

	if err := b.hub.Leave(ctx, owner, conn.ID, "room"); err != nil {
		t.Fatalf("Leave through B: %v", err)
	}
	if got := conn.Rooms(); len(got) != 0 {
		t.Errorf("rooms on A after Leave through B = %v, want none", got)
	}

	// Errors cross the wire by name.
	errorCases := []struct {
		name   string
		caller rooms.Identity
		id     string
		want   error
	}{
		{"unknown connection", owner, "no-such-connection", rooms.ErrUnknownConnection},
		{"single-room stream", rooms.Identity{}, single.ID, rooms.ErrSingleRoom},
		{"another user's connection", rooms.Identity{User: "u2"}, conn.ID, rooms.ErrForbidden},
	}
	for _, c := range errorCases {
		if err := b.hub.Join(ctx, c.caller, c.id, "room"); !errors.Is(err, c.want) {
			t.Errorf("%s: Join through B: %v, want %v", c.name, err, c.want)
		}
	}
	if got := conn.Rooms(); len(got) != 0 {
		t.Errorf("rooms on A after refused joins = %v, want none", got)
	}

	// The owner is gone: its registration outlives it, the command finds
	// no one to run it.
	_ = a.bb.Close()
	if err := b.hub.Join(ctx, owner, conn.ID, "room"); !errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("Join through B after A closed: %v, want ErrUnknownConnection", err)
	}
}

// TestForwardTimesOut checks that an owner that does not answer in time is
// reported as the backbone being down, not as an unknown connection.
func TestForwardTimesOut(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	// The owner's own bound on running a command keeps Close short.
	owner := sharedBackbone(t, Options{Prefix: prefix, OpTimeout: 500 * time.Millisecond})
	sender := sharedBackbone(t, Options{Prefix: prefix})
	owner.HandleCommands(func(ctx context.Context, _ rooms.Command) error {
		<-ctx.Done()
		return ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := sender.Forward(ctx, owner.Instance(), rooms.Command{Op: "join", Connection: "c", Channel: "room"})
	if !errors.Is(err, rooms.ErrBackboneDown) || errors.Is(err, rooms.ErrUnknownConnection) {
		t.Errorf("Forward to a silent owner: %v, want ErrBackboneDown", err)
	}
}

// TestConnectionRegistry checks registration, lookup, expiry and removal.
func TestConnectionRegistry(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	a := sharedBackbone(t, Options{Prefix: prefix})
	b := sharedBackbone(t, Options{Prefix: prefix})
	ctx := context.Background()
	if a.Instance() == b.Instance() || a.Instance() == "" {
		t.Fatalf("instances %q and %q, want two distinct ids", a.Instance(), b.Instance())
	}
	info := rooms.ConnectionInfo{ID: "c1", Owner: a.Instance(), Client: "client-1"}
	if err := a.RegisterConnection(ctx, info, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.LookupConnection(ctx, "c1")
	if err != nil || !ok || got != info {
		t.Errorf("Lookup from B = %+v, %v, %v; want %+v", got, ok, err, info)
	}
	if err := a.UnregisterConnection(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.LookupConnection(ctx, "c1"); ok || err != nil {
		t.Errorf("Lookup after Unregister: ok=%v, %v; want not found", ok, err)
	}
	short := rooms.ConnectionInfo{ID: "c2", Owner: a.Instance(), Client: "client-2"}
	if err := a.RegisterConnection(ctx, short, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	roomstest.Eventually(t, "the registration to expire", func() bool {
		_, ok, err := b.LookupConnection(ctx, "c2")
		return err == nil && !ok
	})
}

// TestSessionsAreShared checks that a session saved by one instance is
// loaded by another until it expires.
func TestSessionsAreShared(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	a := sharedBackbone(t, Options{Prefix: prefix})
	b := sharedBackbone(t, Options{Prefix: prefix})
	ctx := context.Background()
	if err := a.SaveSession(ctx, "s1", []string{"room-1", "room-2"}, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	chs, ok, err := b.LoadSession(ctx, "s1")
	if err != nil || !ok || len(chs) != 2 || chs[0] != "room-1" || chs[1] != "room-2" {
		t.Errorf("LoadSession from B = %v, %v, %v; want [room-1 room-2]", chs, ok, err)
	}
	if _, ok, err := b.LoadSession(ctx, "never"); ok || err != nil {
		t.Errorf("LoadSession(never) = ok %v, %v; want not found", ok, err)
	}
	roomstest.Eventually(t, "the session to expire", func() bool {
		_, ok, err := b.LoadSession(ctx, "s1")
		return err == nil && !ok
	})
}
