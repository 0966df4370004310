package rooms_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

func TestJoinRecordsPosition(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{MaxRooms: 3}, memory.Options{})
	ctx := context.Background()
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Multi: true})
	before := e.send("b")
	if err := e.hub.Join(ctx, anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	after := e.send("b")
	got := r.untilSeq(after)
	if len(got) != 2 || got[0].kind != rooms.KindJoined || got[0].room != "b" {
		t.Fatalf("read %v; want joined(b) then only event %d (not %d)", got, after, before)
	}
	if p, ok := e.decode(got[0].cursor).Get("b"); !ok || p != before {
		t.Fatalf("cursor after the join has b at %d, %v; want %d", p, ok, before)
	}
	// Joining again changes nothing.
	if err := e.hub.Join(ctx, anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	again := e.send("b")
	r.expect([]uint64{again}, again)
	// The session knows the room: a resume replays it.
	cursor := r.cursor
	e.hub.Disconnect(r.conn)
	missed := e.send("b")
	back := e.connect(rooms.ConnectRequest{Multi: true, Resume: cursor})
	back.expect([]uint64{missed}, missed)

	errs := []struct {
		name string
		id   func() string
		ch   string
		want error
	}{
		{"unknown connection", func() string { return "nope" }, "c", rooms.ErrUnknownConnection},
		{"single-room stream", func() string { return e.single("s").conn.ID }, "c", rooms.ErrSingleRoom},
		{"too many rooms", func() string {
			return e.connect(rooms.ConnectRequest{Channels: []string{"1", "2", "3"}, Multi: true}).conn.ID
		}, "4", rooms.ErrTooManyRooms},
		{"disconnected", func() string {
			c := e.connect(rooms.ConnectRequest{Channels: []string{"1"}, Multi: true})
			e.hub.Disconnect(c.conn)
			return c.conn.ID
		}, "2", rooms.ErrUnknownConnection},
	}
	for _, tt := range errs {
		if err := e.hub.Join(ctx, anon, tt.id(), tt.ch); !errors.Is(err, tt.want) {
			t.Errorf("%s: Join = %v; want %v", tt.name, err, tt.want)
		}
	}
}

// A join while the room is busy: the connection gets a gapless suffix of the
// room's events that includes everything published after Join returned.
func TestJoinWhilePublishing(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{QueueSize: 1 << 20}, memory.Options{HistorySize: 1 << 20})
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Multi: true})
	stop := make(chan struct{})
	done := make(chan []uint64)
	var count atomic.Int64
	go func() {
		var pub []uint64
		for {
			select {
			case <-stop:
				done <- pub
				return
			default:
			}
			p, err := e.bb.Publish(context.Background(), rooms.Message{Channels: []string{"b"}, Event: "m"}, "")
			if err != nil {
				t.Errorf("Publish: %v", err)
			}
			pub = append(pub, p.Seq)
			count.Add(1)
		}
	}()
	roomstest.Eventually(t, "publishing to start", func() bool { return count.Load() > 50 })
	if err := e.hub.Join(context.Background(), anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	head, _ := e.bb.Head(context.Background(), "b")
	n := count.Load()
	roomstest.Eventually(t, "more events", func() bool { return count.Load() > n+50 })
	close(stop)
	pub := <-done
	got := r.untilSeq(pub[len(pub)-1])
	if got[0].kind != rooms.KindJoined {
		t.Fatalf("first item %v; want joined(b)", got[0])
	}
	recv := seqsOf(got)
	i := slices.Index(pub, recv[0])
	if i < 0 || !slices.Equal(recv, pub[i:]) {
		t.Fatalf("received %d events that are not a gapless suffix of the %d published", len(recv), len(pub))
	}
	if recv[0] > head+1 && slices.Contains(pub, head+1) {
		t.Fatalf("events after the join (head %d) are missing: first received %d", head, recv[0])
	}
	if p, _ := e.decode(got[0].cursor).Get("b"); p >= recv[0] {
		t.Fatalf("joined at position %d but received %d", p, recv[0])
	}
}

func TestLeave(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	ctx := context.Background()
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true})
	if err := e.hub.Leave(ctx, anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	e.send("b")
	marker := e.send("a")
	got := r.untilSeq(marker)
	if len(got) != 2 || got[0].kind != rooms.KindLeft || got[0].room != "b" {
		t.Fatalf("read %v; want left(b) then event %d", got, marker)
	}
	if _, ok := e.decode(got[0].cursor).Get("b"); ok {
		t.Fatal("cursor after leaving b still has a position for it")
	}
	if !slices.Equal(r.conn.Rooms(), []string{"a"}) {
		t.Fatalf("rooms %v", r.conn.Rooms())
	}
	if saved, ok, _ := e.bb.LoadSession(ctx, r.conn.Session); !ok || !slices.Equal(rooms.SessionRooms(saved), []string{"a"}) {
		t.Fatalf("saved session %v, %v; want [a]", saved, ok)
	}
	if rooms.ChannelConns(e.hub, "b") != 0 {
		t.Fatal("hub still holds b after its last member left")
	}
	if err := e.hub.Leave(ctx, anon, r.conn.ID, "never-joined"); err != nil {
		t.Fatalf("Leave of a room not joined: %v", err)
	}
	if err := e.hub.Leave(ctx, anon, e.single("s").conn.ID, "s"); !errors.Is(err, rooms.ErrSingleRoom) {
		t.Fatalf("Leave on a single-room stream = %v", err)
	}
	// Leaving the last room keeps the stream, which can join again.
	if err := e.hub.Leave(ctx, anon, r.conn.ID, "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Join(ctx, anon, r.conn.ID, "c"); err != nil {
		t.Fatal(err)
	}
	c := e.send("c")
	got = r.untilSeq(c)
	if len(got) != 3 || got[0].kind != rooms.KindLeft || got[1].kind != rooms.KindJoined {
		t.Fatalf("read %v; want left(a) joined(c) event", got)
	}
}
