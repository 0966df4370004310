package rooms_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

func TestMultiRoomEventOnceOnResume(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	first := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true})
	seen := e.send("a", "b")
	cursor := first.expect([]uint64{seen}, seen)[0].cursor
	e.hub.Disconnect(first.conn)

	missed := []uint64{e.send("a", "b"), e.send("a"), e.send("b", "x"), e.send("x"), e.send("b", "a")}
	missed = slices.Delete(missed, 3, 4) // x is not one of its rooms
	again := e.connect(rooms.ConnectRequest{Multi: true, Resume: cursor})
	again.expect(missed, missed[len(missed)-1])
	live := e.send("b", "a")
	again.expect([]uint64{live}, live)
	again.quiet()
}

// A stream resumed from a cursor gets exactly the events it missed, in
// order, then live events.
func TestResumeReplaysMissedThenLive(t *testing.T) {
	tests := []struct {
		name  string
		req   rooms.ConnectRequest
		pub   []string // channels published to, in turn
		multi bool
	}{
		{"single room", rooms.ConnectRequest{Channels: []string{"r"}}, []string{"r"}, false},
		{"multi room", rooms.ConnectRequest{Channels: []string{"r", "ns:s"}, Multi: true}, []string{"r", "ns:s"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, rooms.HubOptions{}, memory.Options{})
			send := func(i int) uint64 { return e.send(tt.pub[i%len(tt.pub)]) }
			first := e.connect(tt.req)
			var seen []uint64
			for i := range 3 {
				seen = append(seen, send(i))
			}
			items := first.expect(seen, seen[2])
			cursor := items[1].cursor // the client saw only two of them
			e.hub.Disconnect(first.conn)
			missed := []uint64{seen[2]}
			for i := range 4 {
				missed = append(missed, send(i))
			}
			req := tt.req
			req.Resume = cursor
			if tt.multi {
				req.Channels = nil // the session restores the rooms
			}
			again := e.connect(req)
			got := again.expect(missed, missed[len(missed)-1])
			if c := e.decode(got[len(got)-1].cursor); (c.Session != "") != tt.multi {
				t.Fatalf("resumed cursor has session %q", c.Session)
			}
			live := []uint64{send(0), send(1)}
			again.expect(live, live[1])
			again.quiet()
			if tt.multi && !slices.Equal(again.conn.Rooms(), []string{"ns:s", "r"}) {
				t.Fatalf("resumed rooms %v", again.conn.Rooms())
			}
		})
	}
}

// checkExactlyAfter checks that got holds every retained event after pos on
// channels, once each, in Seq order per channel.
func checkExactlyAfter(t *testing.T, e *env, pos *rooms.Cursor, channels []string, got []item) {
	t.Helper()
	want := make(map[uint64]bool)
	for _, ch := range channels {
		p, _ := pos.Get(ch)
		h, err := e.bb.Since(context.Background(), ch, p, 1<<20)
		if err != nil || h.Truncated {
			t.Fatalf("Since: %+v %v", h.Truncated, err)
		}
		for _, ev := range h.Events {
			want[ev.Seq] = true
		}
	}
	seen := make(map[uint64]bool)
	last := make(map[string]uint64)
	for _, it := range got {
		if it.kind != rooms.KindEvent {
			t.Fatalf("unexpected %v", it)
		}
		if seen[it.seq] {
			t.Fatalf("event %d delivered twice", it.seq)
		}
		if !want[it.seq] {
			t.Fatalf("event %d delivered but not after the cursor", it.seq)
		}
		seen[it.seq] = true
		if it.seq <= last[it.room] {
			t.Fatalf("event %d on %s after %d", it.seq, it.room, last[it.room])
		}
		last[it.room] = it.seq
	}
	if len(seen) != len(want) {
		t.Fatalf("delivered %d events; want %d", len(seen), len(want))
	}
}

// Resuming while events keep coming: every event after the cursor arrives
// exactly once, in order per channel, across replay and live.
func TestResumeWhilePublishing(t *testing.T) {
	tests := []struct {
		name string
		req  rooms.ConnectRequest
		pub  [][]string
	}{
		{"single room", rooms.ConnectRequest{Channels: []string{"r"}}, [][]string{{"r"}}},
		{"multi room", rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true}, [][]string{{"a"}, {"b"}, {"a", "b"}, {"b", "zz"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, rooms.HubOptions{QueueSize: 1 << 20, ReplayLimit: 1 << 20}, memory.Options{HistorySize: 1 << 20})
			first := e.connect(tt.req)
			var (
				stop    = make(chan struct{})
				done    = make(chan uint64)
				started atomic.Int64
			)
			go func() {
				var last uint64
				for i := 0; ; i++ {
					select {
					case <-stop:
						done <- last
						return
					default:
					}
					p, err := e.bb.Publish(context.Background(), rooms.Message{Channels: tt.pub[i%len(tt.pub)], Event: "m"}, "")
					if err != nil {
						t.Errorf("Publish: %v", err)
					}
					last = p.Seq
					started.Add(1)
				}
			}()
			n := 0
			items := first.until("40 events", func(item) bool { n++; return n == 40 })
			cursor := items[len(items)-1].cursor
			e.hub.Disconnect(first.conn)
			roomstest.Eventually(t, "publishing to go on past the cursor", func() bool { return started.Load() > 200 })
			req := tt.req
			req.Resume = cursor
			again := e.connect(req)
			n = 0
			got := again.until("40 more events", func(item) bool { n++; return n == 40 })
			close(stop)
			last := <-done
			got = append(got, again.untilSeq(last)...)
			checkExactlyAfter(t, e, e.decode(cursor), tt.req.Channels, got)
			again.quiet()
		})
	}
}

func TestResets(t *testing.T) {
	codec2, _ := rooms.NewCursorCodec([]byte("another-key-entirely-0123456789"))
	// tenBehind is the cursor of a client of room r that left after one
	// event and missed the ten published since.
	tenBehind := func(t *testing.T, e *env) string {
		r := e.single("r")
		seq := e.send("r")
		cursor := r.expect([]uint64{seq}, seq)[0].cursor
		e.hub.Disconnect(r.conn)
		for range 10 {
			e.send("r")
		}
		return cursor
	}
	tests := []struct {
		name    string
		hubOpts rooms.HubOptions
		memOpts memory.Options
		multi   bool
		// cursor returns the cursor to resume from.
		cursor func(t *testing.T, e *env) string
		reason string
		room   string
	}{
		{
			name:   "garbage cursor",
			cursor: func(*testing.T, *env) string { return "not-a-cursor" },
			reason: rooms.ResetCursorInvalid,
		},
		{
			name: "tampered cursor",
			cursor: func(t *testing.T, e *env) string {
				c := e.codec.Encode(rooms.Cursor{Epoch: epochOf(t, e), Positions: []rooms.Position{{Key: rooms.ChannelKey("r"), Seq: 1}}})
				return c[:10] + string(c[10]^1) + c[11:]
			},
			reason: rooms.ResetCursorInvalid,
		},
		{
			name: "cursor signed with another key",
			cursor: func(t *testing.T, e *env) string {
				return codec2.Encode(rooms.Cursor{Epoch: epochOf(t, e), Positions: []rooms.Position{{Key: rooms.ChannelKey("r"), Seq: 1}}})
			},
			reason: rooms.ResetCursorInvalid,
		},
		{
			name: "multi-room cursor on a single-room stream",
			cursor: func(t *testing.T, e *env) string {
				return e.codec.Encode(rooms.Cursor{Epoch: epochOf(t, e), Session: "AAAAAAAAAAAAAAAA"})
			},
			reason: rooms.ResetCursorInvalid,
		},
		{
			name:  "single-room cursor on a multi-room stream",
			multi: true,
			cursor: func(t *testing.T, e *env) string {
				return e.codec.Encode(rooms.Cursor{Epoch: epochOf(t, e), Positions: []rooms.Position{{Key: rooms.ChannelKey("r"), Seq: 1}}})
			},
			reason: rooms.ResetCursorInvalid,
		},
		{
			name: "other epoch",
			cursor: func(t *testing.T, e *env) string {
				return e.codec.Encode(rooms.Cursor{Epoch: "gone", Positions: []rooms.Position{{Key: rooms.ChannelKey("r"), Seq: 1}}})
			},
			reason: rooms.ResetHistoryLost,
		},
		{
			name:    "expired by retention",
			memOpts: memory.Options{HistorySize: 3},
			cursor:  tenBehind,
			reason:  rooms.ResetCursorExpired,
			room:    "r",
		},
		{
			name:    "beyond the replay limit",
			hubOpts: rooms.HubOptions{ReplayLimit: 5},
			cursor:  tenBehind,
			reason:  rooms.ResetCursorExpired,
			room:    "r",
		},
		{
			name:    "session expired",
			hubOpts: rooms.HubOptions{SessionTTL: 100 * time.Millisecond},
			multi:   true,
			cursor: func(t *testing.T, e *env) string {
				r := e.connect(rooms.ConnectRequest{Channels: []string{"old"}, Multi: true})
				seq := e.send("old")
				cursor := r.expect([]uint64{seq}, seq)[0].cursor
				e.hub.Disconnect(r.conn)
				roomstest.Eventually(t, "the session to expire", func() bool {
					_, ok, _ := e.bb.LoadSession(context.Background(), r.conn.Session)
					return !ok
				})
				return cursor
			},
			reason: rooms.ResetSessionExpired,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.hubOpts, tt.memOpts)
			cursor := tt.cursor(t, e)
			r := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Multi: tt.multi, Resume: cursor})
			live := e.send("r")
			got := r.untilSeq(live)
			if len(got) != 2 || got[0].kind != rooms.KindReset || got[0].reason != tt.reason || got[0].room != tt.room {
				t.Fatalf("resuming read %v; want reset(%s,%q) then event %d", got, tt.reason, tt.room, live)
			}
			// The reset's cursor is valid and current: resuming from it is clean.
			c := e.decode(got[0].cursor)
			if c.Epoch != epochOf(t, e) || (c.Session != "") != tt.multi {
				t.Fatalf("reset cursor %+v", c)
			}
			if tt.multi && !slices.Equal(r.conn.Rooms(), []string{"r"}) {
				t.Fatalf("rooms after the reset %v; want the requested ones", r.conn.Rooms())
			}
			e.hub.Disconnect(r.conn)
			again := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Multi: tt.multi, Resume: got[0].cursor})
			again.expect([]uint64{live}, live)
		})
	}
}

func epochOf(t *testing.T, e *env) string {
	t.Helper()
	ep, err := e.bb.Epoch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestSessionRestoresRooms(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Multi: true})
	if err := e.hub.Join(context.Background(), anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	cursor := r.until("joined(b)", func(it item) bool { return it.kind == rooms.KindJoined })[0].cursor
	e.hub.Disconnect(r.conn)
	missed := e.send("b")
	// A browser reconnects to the URL it first opened: the session wins.
	back := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Multi: true, Resume: cursor})
	if back.conn.Session != r.conn.Session || !slices.Equal(back.conn.Rooms(), []string{"a", "b"}) {
		t.Fatalf("resumed session %q rooms %v; want %q [a b]", back.conn.Session, back.conn.Rooms(), r.conn.Session)
	}
	back.expect([]uint64{missed}, missed)
	// A forged session restores nothing.
	forged := e.codec.Encode(rooms.Cursor{Epoch: epochOf(t, e), Session: "forgedforgedforg"})
	f := e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Multi: true, Resume: forged})
	if f.conn.Session == "forgedforgedforg" || !slices.Equal(f.conn.Rooms(), []string{"a"}) {
		t.Fatalf("forged session restored %q %v", f.conn.Session, f.conn.Rooms())
	}
}

// publishOnSubscribe publishes a message just before subscribing to a
// channel, once armed: it places an event between a stream's joins.
type publishOnSubscribe struct {
	rooms.Backbone
	on  string
	msg atomic.Pointer[rooms.Message]
	seq atomic.Uint64
}

func (b *publishOnSubscribe) Subscribe(ctx context.Context, ch string, r rooms.Receiver) (uint64, error) {
	if m := b.msg.Load(); m != nil && ch == b.on && b.msg.CompareAndSwap(m, nil) {
		p, err := b.Backbone.Publish(ctx, *m, "")
		if err != nil {
			return 0, err
		}
		b.seq.Store(p.Seq)
	}
	return b.Backbone.Subscribe(ctx, ch, r)
}

// A multi-room event published while a resuming stream joins its rooms
// reaches it live through the room joined first and is in the replay of the
// room joined next: it must arrive once.
func TestResumeEventBetweenJoinsDeliveredOnce(t *testing.T) {
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	hook := &publishOnSubscribe{Backbone: bb, on: "b"}
	e := newEnvOn(t, bb, hook, rooms.HubOptions{})
	first := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true})
	seen := e.send("a", "b")
	cursor := first.expect([]uint64{seen}, seen)[0].cursor
	e.hub.Disconnect(first.conn)
	missed := e.send("b")

	hook.msg.Store(&rooms.Message{Channels: []string{"a", "b"}, Event: "between"})
	again := e.connect(rooms.ConnectRequest{Multi: true, Resume: cursor})
	between := hook.seq.Load()
	if between == 0 {
		t.Fatal("the hook did not publish")
	}
	live := e.send("a", "b")
	again.expect([]uint64{missed, between, live}, live)
	again.quiet()
}
