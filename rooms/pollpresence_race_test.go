package rooms_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// failingSince wraps a backbone: reading the history of channel fail waits
// for release and then fails, and every read of channel watch is counted.
type failingSince struct {
	rooms.Backbone
	fail, watch string
	release     chan struct{}
	watched     atomic.Int32
}

func (g *failingSince) Unwrap() rooms.Backbone { return g.Backbone }

func (g *failingSince) Since(ctx context.Context, ch string, after uint64, limit int) (rooms.History, error) {
	switch ch {
	case g.fail:
		select {
		case <-g.release:
		case <-ctx.Done():
		}
		return rooms.History{}, errors.New("injected failure")
	case g.watch:
		g.watched.Add(1)
	}
	return g.Backbone.Since(ctx, ch, after, limit)
}

// Two long-polls of one client at once: the first enters presence, the
// second renews the entry and is held; the first then fails. The entry is
// the held poll's now: the failed one must not take it back (it did: the
// user was listed with no connection, and left once the grace ran out,
// while their poll was held).
func TestFailedPollLeavesConcurrentPollsPresence(t *testing.T) {
	bb := memory.New(memory.Options{PresenceGrace: time.Minute})
	t.Cleanup(func() { _ = bb.Close() })
	gate := &failingSince{Backbone: bb, fail: "x", watch: "r", release: make(chan struct{})}
	e := newEnvOn(t, bb, gate, rooms.HubOptions{})
	alice := rooms.Identity{User: "alice"}
	const client = "client-race-1"

	first := e.poll(rooms.PollRequest{Channels: []string{"r", "x"}, Client: client, Identity: alice})
	req := rooms.PollRequest{Channels: []string{"r", "x"}, Client: client, Proof: first.Proof, Identity: alice,
		Cursor: first.Cursor, Timeout: time.Minute}
	failed := make(chan error, 1)
	go func() {
		_, err := e.hub.Poll(context.Background(), req)
		failed <- err
	}()
	roomstest.Eventually(t, "the first poll to read r's history", func() bool { return gate.watched.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req.Channels = []string{"r"}
	held := e.startPoll(ctx, req, "r")
	roomstest.Eventually(t, "the second poll to read r's history", func() bool { return gate.watched.Load() == 2 })

	close(gate.release)
	if err := <-failed; err == nil {
		t.Fatal("the first poll did not fail")
	}
	list, err := e.hub.Presence(context.Background(), alice, "r")
	if err != nil {
		t.Fatal(err)
	}
	if list.Users != 1 || list.Connections != 1 {
		t.Fatalf("while the second poll is held, presence of r = %+v; want alice with one connection", list)
	}
	if list, _ := e.hub.Presence(context.Background(), alice, "x"); list.Connections != 0 {
		t.Fatalf("presence of x = %+v; want the failed poll's entry taken back", list)
	}
	cancel()
	<-held
}

// Two polls of one user claim a fresh client id at once: the first binds
// it, the second renews the binding and is held; the first then fails.
// The binding is the held poll's: the failed poll must not take it back
// (it did: the held poller's proof was refused, and anyone could claim
// its id).
func TestFailedPollLeavesConcurrentPollsBinding(t *testing.T) {
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	gate := &failingSince{Backbone: bb, fail: "x", watch: "r", release: make(chan struct{})}
	e := newEnvOn(t, bb, gate, rooms.HubOptions{})
	bob := rooms.Identity{User: "bob"}
	start := e.poll(rooms.PollRequest{Channels: []string{"r", "x"}, Client: "other-client", Identity: bob})

	const client = "client-race-2"
	req := rooms.PollRequest{Channels: []string{"r", "x"}, Client: client, Identity: bob, Caller: "bob",
		Cursor: start.Cursor, Timeout: time.Minute}
	failed := make(chan error, 1)
	go func() {
		_, err := e.hub.Poll(context.Background(), req)
		failed <- err
	}()
	roomstest.Eventually(t, "the first poll to read r's history", func() bool { return gate.watched.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req.Channels = []string{"r"}
	held := make(chan rooms.PollResult, 1)
	go func() {
		res, _ := e.hub.Poll(ctx, req)
		held <- res
	}()
	roomstest.Eventually(t, "the second poll to read r's history", func() bool { return gate.watched.Load() == 2 })
	close(gate.release)
	if err := <-failed; err == nil {
		t.Fatal("the first poll did not fail")
	}
	if owner, _, ok, err := bb.ClientBinding(context.Background(), client); err != nil || !ok || owner != "u:bob" {
		t.Errorf("while the second poll is held, the binding of %s: %q %v %v; want bob's", client, owner, ok, err)
	}
	if _, err := e.hub.Poll(context.Background(), rooms.PollRequest{Channels: []string{"r"}, Client: client,
		Identity: rooms.Identity{User: "mallory"}}); !errors.Is(err, rooms.ErrClientInUse) {
		t.Errorf("mallory claiming the held poller's id: %v, want ErrClientInUse", err)
	}
	cancel()
	<-held
}
