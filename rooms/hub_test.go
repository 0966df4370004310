package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait for something that must happen.
const wait = 10 * time.Second

// anon is an anonymous caller, who may change any anonymous connection.
var anon rooms.Identity

// env is a hub over an in-memory backbone.
type env struct {
	t     *testing.T
	bb    *memory.Backbone
	hub   *rooms.Hub
	codec *rooms.CursorCodec
	n     atomic.Int64
	// proofs are the client proofs handed out, by client id: an
	// anonymous caller sends its id's proof to use the id again.
	proofs sync.Map
}

// proof returns the proof of client handed out so far ("" for none).
func (e *env) proof(client string) string {
	p, _ := e.proofs.Load(client)
	s, _ := p.(string)
	return s
}

// keep records the proof a stream or poll handed out.
func (e *env) keep(client, proof string) {
	if client != "" && proof != "" {
		e.proofs.Store(client, proof)
	}
}

func newEnv(t *testing.T, hubOpts rooms.HubOptions, memOpts memory.Options) *env {
	t.Helper()
	bb := memory.New(memOpts)
	t.Cleanup(func() { _ = bb.Close() })
	return newEnvOn(t, bb, bb, hubOpts)
}

// newEnvOn builds the hub over through, which may wrap bb.
func newEnvOn(t *testing.T, bb *memory.Backbone, through rooms.Backbone, hubOpts rooms.HubOptions) *env {
	t.Helper()
	codec, err := rooms.NewCursorCodec([]byte("hub-test-cursor-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, bb: bb, hub: rooms.NewHub(through, codec, hubOpts), codec: codec}
}

// publish publishes m, filling in an event name and a numbered payload.
func (e *env) publish(m rooms.Message) rooms.Published {
	e.t.Helper()
	if m.Event == "" {
		m.Event = "message"
	}
	if m.Data == nil {
		m.Data = json.RawMessage(fmt.Sprintf(`{"n":%d}`, e.n.Add(1)))
	}
	p, err := e.bb.Publish(context.Background(), m, "")
	if err != nil {
		e.t.Fatalf("Publish: %v", err)
	}
	return p
}

// send publishes an ordinary event to channels.
func (e *env) send(channels ...string) uint64 {
	e.t.Helper()
	return e.publish(rooms.Message{Channels: channels}).Seq
}

func (e *env) connect(req rooms.ConnectRequest) *reader {
	e.t.Helper()
	if req.Proof == "" {
		req.Proof = e.proof(req.Client)
	}
	conn, err := e.hub.Connect(context.Background(), req)
	if err != nil {
		e.t.Fatalf("Connect(%+v): %v", req, err)
	}
	e.keep(conn.Client, conn.Proof)
	e.t.Cleanup(func() { e.hub.Disconnect(conn) })
	return &reader{t: e.t, conn: conn}
}

func (e *env) single(ch string) *reader {
	e.t.Helper()
	return e.connect(rooms.ConnectRequest{Channels: []string{ch}})
}

// item is what a stream's writer makes of one delivery.
type item struct {
	kind     rooms.DeliveryKind
	seq      uint64
	event    string
	room     string // the channel an event came through; a reset's, join's or leave's channel
	reason   string
	volatile bool
	env      []byte
	cursor   string // the cursor written with the item, "" for a volatile event
}

func (it item) String() string {
	switch it.kind {
	case rooms.KindEvent:
		if it.volatile {
			return fmt.Sprintf("volatile(%s)", it.room)
		}
		return fmt.Sprintf("event(%d@%s)", it.seq, it.room)
	case rooms.KindReset:
		return fmt.Sprintf("reset(%s,%q)", it.reason, it.room)
	case rooms.KindJoined:
		return fmt.Sprintf("joined(%s)", it.room)
	case rooms.KindLeft:
		return fmt.Sprintf("left(%s)", it.room)
	}
	return "?"
}

// reader plays a stream's single writer: it takes deliveries and computes
// the cursor of each one exactly as relay's SSE writer does.
type reader struct {
	t       *testing.T
	conn    *rooms.Connection
	pending []item
	cursor  string
}

// fill takes what is waiting, waiting up to d for something.
func (r *reader) fill(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-r.conn.Ready():
	case <-timer.C:
		return false
	}
	for d := range r.conn.Drain() {
		it := item{kind: d.Kind, room: d.Channel, reason: d.Reason}
		switch d.Kind {
		case rooms.KindEvent:
			ev := d.Event
			it.seq, it.event, it.room, it.volatile, it.env = ev.Seq, ev.Event, ev.Channels[d.Index], ev.Volatile, ev.Envelope(d.Index)
			if !ev.Volatile {
				r.cursor = string(r.conn.AppendCursor(nil))
				it.cursor = r.cursor
			}
		default:
			r.cursor = string(r.conn.AppendCursor(nil))
			it.cursor = r.cursor
		}
		r.pending = append(r.pending, it)
	}
	return true
}

// until reads up to and including the first item for which match holds.
func (r *reader) until(what string, match func(item) bool) []item {
	r.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if i := slices.IndexFunc(r.pending, match); i >= 0 {
			got := slices.Clone(r.pending[:i+1])
			r.pending = r.pending[i+1:]
			return got
		}
		if left := time.Until(deadline); left <= 0 || !r.fill(left) {
			r.t.Fatalf("timed out waiting for %s; read %v", what, r.pending)
		}
	}
}

// untilSeq reads up to and including the event seq.
func (r *reader) untilSeq(seq uint64) []item {
	r.t.Helper()
	return r.until(fmt.Sprint("event ", seq), func(it item) bool { return it.kind == rooms.KindEvent && it.seq == seq })
}

// quiet fails if anything is waiting to be read.
func (r *reader) quiet() {
	r.t.Helper()
	r.fill(0)
	if len(r.pending) > 0 {
		r.t.Fatalf("unexpected deliveries %v", r.pending)
	}
}

// expect reads until the event last and checks that exactly want came.
func (r *reader) expect(want []uint64, last uint64) []item {
	r.t.Helper()
	got := r.untilSeq(last)
	if s := seqsOf(got); !slices.Equal(s, want) || len(got) != len(want) {
		r.t.Fatalf("read %v; want events %v", got, want)
	}
	return got
}

func seqsOf(items []item) []uint64 {
	var out []uint64
	for _, it := range items {
		if it.kind == rooms.KindEvent && !it.volatile {
			out = append(out, it.seq)
		}
	}
	return out
}

func (e *env) decode(cursor string) *rooms.Cursor {
	e.t.Helper()
	c, err := e.codec.Decode(cursor)
	if err != nil {
		e.t.Fatalf("writer's cursor does not decode: %v", err)
	}
	return &c
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFanoutToManyConnections(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	readers := make([]*reader, 200)
	for i := range readers {
		readers[i] = e.single("lobby")
	}
	elsewhere := e.single("chat:lobby")
	var want []uint64
	for range 5 {
		want = append(want, e.send("lobby"))
	}
	for _, r := range readers {
		for _, it := range r.expect(want, want[len(want)-1]) {
			var env struct{ Room string }
			if err := json.Unmarshal(it.env, &env); err != nil || env.Room != "lobby" {
				t.Fatalf("envelope %s", it.env)
			}
		}
	}
	other := e.send("chat:lobby")
	elsewhere.expect([]uint64{other}, other)
	if got := rooms.ChannelConns(e.hub, "lobby"); got != len(readers) {
		t.Fatalf("channel holds %d connections; want %d", got, len(readers))
	}
}

func TestMultiRoomEventDeliveredOnce(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	multi := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b", "c"}, Multi: true})
	onA, onB := e.single("a"), e.single("b")
	ev := e.send("a", "b", "x")
	marker := e.send("c")
	got := multi.expect([]uint64{ev, marker}, marker)
	if got[0].room != "a" && got[0].room != "b" {
		t.Fatalf("multi-room event came through %q", got[0].room)
	}
	onA.expect([]uint64{ev}, ev)
	onB.expect([]uint64{ev}, ev)
	after := e.send("a", "b", "c")
	multi.expect([]uint64{after}, after)
	multi.quiet()
}

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

func TestExcludeClient(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	const alice = "alice-client-01"
	a1 := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Client: alice})
	a2 := e.connect(rooms.ConnectRequest{Channels: []string{"r", "s"}, Client: alice, Multi: true})
	bob := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Client: "bob-client-01"})
	if a1.conn.Client != alice || a2.conn.Client != alice {
		t.Fatal("connection does not keep its client id")
	}
	x := e.publish(rooms.Message{Channels: []string{"r"}, Client: alice, Exclude: []string{alice}}).Seq
	xm := e.publish(rooms.Message{Channels: []string{"r", "s"}, Exclude: []string{alice}}).Seq
	marker := e.send("r")
	cursor := a1.expect([]uint64{marker}, marker)[0].cursor
	multiCursor := a2.expect([]uint64{marker}, marker)[0].cursor
	bob.expect([]uint64{x, xm, marker}, marker)

	// On replay: alice reconnects after more excluded events.
	e.hub.Disconnect(a1.conn)
	e.hub.Disconnect(a2.conn)
	x2 := e.publish(rooms.Message{Channels: []string{"r"}, Exclude: []string{alice}}).Seq
	xm2 := e.publish(rooms.Message{Channels: []string{"s", "r"}, Exclude: []string{alice}}).Seq
	y := e.send("r")
	z := e.publish(rooms.Message{Channels: []string{"r"}, Exclude: []string{"someone-else"}, Client: "bob-client-01"}).Seq
	back := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Client: alice, Resume: cursor})
	back.expect([]uint64{y, z}, z)
	multiBack := e.connect(rooms.ConnectRequest{Client: alice, Multi: true, Resume: multiCursor})
	multiBack.expect([]uint64{y, z}, z)
	// Her cursor moved past the excluded events: resuming again replays nothing.
	e.hub.Disconnect(back.conn)
	again := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Client: alice, Resume: back.cursor})
	live := e.send("r")
	again.expect([]uint64{live}, live)
	// Another client resuming from the same cursor gets the excluded event.
	other := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Resume: cursor})
	other.expect([]uint64{x2, xm2, y, z, live}, live)
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
			eventually(t, "publishing to go on past the cursor", func() bool { return started.Load() > 200 })
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
				eventually(t, "the session to expire", func() bool {
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
	eventually(t, "publishing to start", func() bool { return count.Load() > 50 })
	if err := e.hub.Join(context.Background(), anon, r.conn.ID, "b"); err != nil {
		t.Fatal(err)
	}
	head, _ := e.bb.Head(context.Background(), "b")
	n := count.Load()
	eventually(t, "more events", func() bool { return count.Load() > n+50 })
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

func TestSlowConsumer(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{QueueSize: 8}, memory.Options{})
	slow := e.single("r")
	fast := e.single("r")
	first := e.send("r")
	slow.untilSeq(first) // the slow reader gets one cursor, then stops reading
	fast.untilSeq(first)
	var want []uint64
	for i := range 20 {
		want = append(want, e.send("r"))
		fast.untilSeq(want[i]) // the fast reader keeps up
	}
	select {
	case <-slow.conn.Done():
	case <-time.After(wait):
		t.Fatal("a connection whose queue overflowed was not closed")
	}
	if reason := slow.conn.Reason(); reason.Code != rooms.CloseSlowConsumer || !reason.Error || reason.Message == "" {
		t.Fatalf("close reason %+v", reason)
	}
	select {
	case <-fast.conn.Done():
		t.Fatal("the fast connection was closed too")
	default:
	}
	more := e.send("r")
	fast.untilSeq(more)
	// The slow client resumes from the last cursor it got.
	e.hub.Disconnect(slow.conn)
	back := e.connect(rooms.ConnectRequest{Channels: []string{"r"}, Resume: slow.cursor})
	back.expect(append(want, more), more)
}

func TestVolatileDroppedFirst(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{QueueSize: 8}, memory.Options{})
	r := e.single("r")
	r.fill(wait)
	volatile := func() { e.publish(rooms.Message{Channels: []string{"r"}, Volatile: true}) }
	var want []uint64
	volatile()
	for range 3 {
		want = append(want, e.send("r"))
	}
	// The queue is half full: volatile events no longer fit, others do.
	volatile()
	volatile()
	for range 4 {
		want = append(want, e.send("r"))
	}
	if r.conn.Dropped() != 2 {
		t.Fatalf("dropped %d volatile events; want 2", r.conn.Dropped())
	}
	select {
	case <-r.conn.Done():
		t.Fatal("closed although only volatile events overflowed")
	default:
	}
	got := r.untilSeq(want[len(want)-1])
	if len(got) != 8 || !got[0].volatile || got[0].cursor != "" || !slices.Equal(seqsOf(got), want) {
		t.Fatalf("read %v; want the first volatile event and %v", got, want)
	}
	var env struct{ ID *string }
	if err := json.Unmarshal(got[0].env, &env); err != nil || env.ID != nil {
		t.Fatalf("volatile envelope %s", got[0].env)
	}
	// A volatile event does not move the cursor.
	volatile()
	v := r.until("volatile", func(it item) bool { return it.volatile })
	if v[0].cursor != "" || r.cursor != got[len(got)-1].cursor {
		t.Fatal("a volatile event moved the cursor")
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	conns := []*reader{
		e.single("a"),
		e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true}),
		e.connect(rooms.ConnectRequest{Multi: true}),
	}
	if e.hub.Connections() != len(conns) {
		t.Fatalf("hub holds %d connections", e.hub.Connections())
	}
	e.hub.Drain(func() time.Duration { return 1500 * time.Millisecond })
	for i, r := range conns {
		select {
		case <-r.conn.Done():
		default:
			t.Fatalf("connection %d not closed by Drain", i)
		}
		if reason := r.conn.Reason(); reason.Code != rooms.CloseShutdown || reason.Error || reason.ReconnectMS != 1500 || reason.Message == "" {
			t.Fatalf("close reason %+v", reason)
		}
	}
	if _, err := e.hub.Connect(context.Background(), rooms.ConnectRequest{Channels: []string{"a"}}); !errors.Is(err, rooms.ErrDraining) {
		t.Fatalf("Connect while draining = %v; want ErrDraining", err)
	}
}

// counting wraps a backbone and counts live subscriptions.
type counting struct {
	rooms.Backbone
	mu   sync.Mutex
	subs map[string]int
	fail string // Subscribe fails for this channel
}

func (c *counting) Subscribe(ctx context.Context, ch string, r rooms.Receiver) (uint64, error) {
	if ch == c.fail {
		return 0, errors.New("injected failure")
	}
	head, err := c.Backbone.Subscribe(ctx, ch, r)
	if err == nil {
		c.mu.Lock()
		c.subs[ch]++
		c.mu.Unlock()
	}
	return head, err
}

func (c *counting) Unsubscribe(ctx context.Context, ch string, r rooms.Receiver) error {
	c.mu.Lock()
	c.subs[ch]--
	if c.subs[ch] < 0 {
		panic("unsubscribed more than subscribed: " + ch)
	}
	c.mu.Unlock()
	return c.Backbone.Unsubscribe(ctx, ch, r)
}

func (c *counting) active() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int)
	for ch, n := range c.subs {
		if n != 0 {
			out[ch] = n
		}
	}
	return out
}

func TestDisconnectReleasesSubscriptions(t *testing.T) {
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	cb := &counting{Backbone: bb, subs: make(map[string]int), fail: "broken"}
	e := newEnvOn(t, bb, cb, rooms.HubOptions{QueueSize: 4, MaxRooms: 4})
	ctx := context.Background()

	var all []*rooms.Connection
	connect := func(req rooms.ConnectRequest) *rooms.Connection {
		c, err := e.hub.Connect(ctx, req)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		all = append(all, c)
		return c
	}
	for i := range 20 {
		connect(rooms.ConnectRequest{Channels: []string{fmt.Sprint("r", i%5)}})
	}
	m := connect(rooms.ConnectRequest{Channels: []string{"r0", "m1"}, Multi: true})
	if err := e.hub.Join(ctx, anon, m.ID, "m2"); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Join(ctx, anon, m.ID, "m3"); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Leave(ctx, anon, m.ID, "m1"); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Join(ctx, anon, m.ID, "broken"); err == nil {
		t.Fatal("Join of a channel whose subscription fails succeeded")
	}
	// Failed connects hold nothing.
	if _, err := e.hub.Connect(ctx, rooms.ConnectRequest{Channels: []string{"x1", "broken", "x2"}}); !errors.Is(err, rooms.ErrBackboneDown) {
		t.Fatalf("Connect with a failing subscription = %v", err)
	}
	if _, err := e.hub.Connect(ctx, rooms.ConnectRequest{Channels: []string{"1", "2", "3", "4", "5"}}); !errors.Is(err, rooms.ErrTooManyRooms) {
		t.Fatalf("Connect with too many rooms = %v", err)
	}
	if _, err := e.hub.Connect(ctx, rooms.ConnectRequest{}); !errors.Is(err, rooms.ErrInvalidRoom) {
		t.Fatalf("Connect without rooms = %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.hub.Connect(canceled, rooms.ConnectRequest{Channels: []string{"y"}}); err == nil {
		t.Fatal("Connect with a canceled context succeeded")
	}
	// A slow consumer closed by the hub, and polls held and answered.
	slow := connect(rooms.ConnectRequest{Channels: []string{"r1"}})
	for range 10 {
		e.send("r1")
	}
	<-slow.Done()
	tail, err := e.hub.Poll(ctx, rooms.PollRequest{Channels: []string{"p1", "p2"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Poll(ctx, rooms.PollRequest{Channels: []string{"p1", "p2"}, Cursor: tail.Cursor, Timeout: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan error)
	go func() {
		_, err := e.hub.Poll(pollCtx, rooms.PollRequest{Channels: []string{"p3"}, Cursor: tail.Cursor, Timeout: time.Minute})
		polled <- err
	}()
	eventually(t, "the poll to be held", func() bool { return rooms.ChannelConns(e.hub, "p3") == 1 })
	stopPoll()
	if err := <-polled; err != nil {
		t.Fatal(err)
	}

	if e.hub.Channels() == 0 || len(cb.active()) == 0 {
		t.Fatal("no channels held while connections are open")
	}
	for _, c := range all {
		e.hub.Disconnect(c)
		e.hub.Disconnect(c) // idempotent
	}
	if n := e.hub.Channels(); n != 0 {
		t.Fatalf("hub holds %d channels after every connection went", n)
	}
	if active := cb.active(); len(active) != 0 {
		t.Fatalf("backbone subscriptions left: %v", active)
	}
	if e.hub.Connections() != 0 {
		t.Fatalf("hub holds %d connections", e.hub.Connections())
	}
}

func TestEpochChange(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	r := e.single("r")
	seq := e.send("r")
	r.expect([]uint64{seq}, seq)
	// The backbone lost its history and starts a new epoch.
	ev, err := rooms.NewEvent(rooms.Message{Channels: []string{"r"}, Event: "m", Data: json.RawMessage(`1`)}, "new-epoch", 1, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	e.hub.Receive(ev, 0)
	got := r.untilSeq(1)
	if len(got) != 2 || got[0].kind != rooms.KindReset || got[0].reason != rooms.ResetHistoryLost {
		t.Fatalf("read %v; want reset(history_lost) then the new epoch's event", got)
	}
	if c := e.decode(got[1].cursor); c.Epoch != "new-epoch" {
		t.Fatalf("cursor after the new epoch's event is of epoch %q", c.Epoch)
	} else if p, _ := c.Get("r"); p != 1 {
		t.Fatalf("cursor position %d; want 1", p)
	}
}

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

func (e *env) poll(req rooms.PollRequest) rooms.PollResult {
	e.t.Helper()
	if req.Proof == "" {
		req.Proof = e.proof(req.Client)
	}
	res, err := e.hub.Poll(context.Background(), req)
	if err != nil {
		e.t.Fatalf("Poll: %v", err)
	}
	e.keep(res.Client, res.Proof)
	return res
}

// startPoll runs a poll in the background and returns its answer channel
// once the poll is held on ch.
func (e *env) startPoll(ctx context.Context, req rooms.PollRequest, ch string) <-chan rooms.PollResult {
	e.t.Helper()
	out := make(chan rooms.PollResult, 1)
	before := rooms.ChannelConns(e.hub, ch)
	go func() {
		res, err := e.hub.Poll(ctx, req)
		if err != nil {
			e.t.Errorf("Poll: %v", err)
		}
		out <- res
	}()
	eventually(e.t, "the poll to be held", func() bool { return rooms.ChannelConns(e.hub, ch) > before })
	return out
}

// answer waits for a held poll's answer; it cancels the poll if none comes.
func answer(t *testing.T, out <-chan rooms.PollResult, cancel context.CancelFunc, what string) rooms.PollResult {
	t.Helper()
	select {
	case res := <-out:
		return res
	case <-time.After(wait / 2):
		cancel()
		<-out
		t.Fatalf("poll not answered: %s", what)
	}
	return rooms.PollResult{}
}

func pollSeqs(res rooms.PollResult) []uint64 {
	var out []uint64
	for _, d := range res.Events {
		if d.Kind != rooms.KindEvent {
			panic("poll answered a non-event delivery")
		}
		out = append(out, d.Event.Seq)
	}
	return out
}

func TestPollWithoutCursorAnswersTail(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	old := e.send("r")
	start := time.Now()
	res := e.poll(rooms.PollRequest{Channels: []string{"r", "s"}, Timeout: time.Minute})
	if time.Since(start) > wait/2 || len(res.Events) != 0 || res.Reset {
		t.Fatalf("first poll = %+v after %v; want an empty answer at once", res, time.Since(start))
	}
	c := e.decode(res.Cursor)
	if p, _ := c.Get("r"); p != old || c.Session != "" || c.Epoch != epochOf(t, e) {
		t.Fatalf("tail cursor %+v; want r at %d", c, old)
	}
	if _, ok := c.Get("s"); !ok {
		t.Fatal("tail cursor has no position for an empty room")
	}
	next := e.send("s")
	res = e.poll(rooms.PollRequest{Channels: []string{"r", "s"}, Cursor: res.Cursor})
	if got := pollSeqs(res); !slices.Equal(got, []uint64{next}) {
		t.Fatalf("poll after the tail = %v; want only [%d]", got, next)
	}
}

func TestPollAnswersAtOnce(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	const client = "poller-client-1"
	tail := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}}).Cursor
	want := []uint64{e.send("a", "b"), e.send("a"), e.send("c"), e.send("b")}
	want = slices.Delete(want, 2, 3) // c is not polled
	e.publish(rooms.Message{Channels: []string{"a"}, Exclude: []string{client}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan rooms.PollResult, 1)
	go func() {
		res, err := e.hub.Poll(ctx, rooms.PollRequest{Channels: []string{"b", "a"}, Cursor: tail, Client: client,
			Proof: e.proof(client), Timeout: time.Minute})
		if err != nil {
			t.Errorf("Poll: %v", err)
		}
		out <- res
	}()
	res := answer(t, out, cancel, "events were waiting")
	e.keep(res.Client, res.Proof)
	if got := pollSeqs(res); !slices.Equal(got, want) || res.Reset {
		t.Fatalf("poll = %v reset=%v; want %v", got, res.Reset, want)
	}
	for _, d := range res.Events {
		if ch := d.Event.Channels[d.Index]; ch != "a" && ch != "b" {
			t.Fatalf("event %d answered through %q", d.Event.Seq, ch)
		}
	}
	// The cursor moved past the excluded event too.
	res = e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: res.Cursor, Client: client})
	if len(res.Events) != 0 {
		t.Fatalf("next poll = %v; want nothing", pollSeqs(res))
	}
	// Others get it.
	res = e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: tail})
	if len(res.Events) != 4 {
		t.Fatalf("another client's poll = %v; want 4 events", pollSeqs(res))
	}
}

func TestPollLimitPages(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{PollLimit: 3}, memory.Options{})
	cursor := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}}).Cursor
	var want []uint64
	for i := range 7 {
		want = append(want, e.send([]string{"a", "b"}[i%2]))
	}
	want = append(want, e.send("a", "b"))
	var got []uint64
	for range 10 {
		res := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: cursor})
		if len(res.Events) == 0 {
			break
		}
		got = append(got, pollSeqs(res)...)
		cursor = res.Cursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged polls returned %v; want %v", got, want)
	}
}

func TestPollHeldWakesOnPublish(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{PollSessionTTL: 50 * time.Millisecond}, memory.Options{})
	tail := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}}).Cursor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := e.startPoll(ctx, rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: tail, Timeout: time.Minute,
		Client: "held-client", KeepSession: true}, "a")
	seq := e.send("a", "b")
	res := answer(t, out, cancel, "an event was published")
	if got := pollSeqs(res); !slices.Equal(got, []uint64{seq}) {
		t.Fatalf("held poll = %v; want [%d] once", got, seq)
	}
	// The event is delivered through a; b's copy only moves b, and may
	// come after the answer (the held poll wakes on the first copy).
	c := e.decode(res.Cursor)
	if p, _ := c.Get("a"); p != seq {
		t.Fatalf("cursor has a at %d; want %d", p, seq)
	}
	if p, _ := c.Get("b"); p != 0 && p != seq {
		t.Fatalf("cursor has b at %d; want 0 or %d", p, seq)
	}
	// The poller's connection waits for its next poll, then goes.
	if n := e.hub.PollSessions(); n != 1 {
		t.Fatalf("%d poll sessions parked after the answer; want 1", n)
	}
	// Its next poll, from that cursor, does not deliver the event again.
	next := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: res.Cursor, Timeout: 20 * time.Millisecond,
		Client: "held-client", Proof: res.Proof})
	if got := pollSeqs(next); len(got) != 0 {
		t.Fatalf("the next poll = %v; want nothing (the event came through a)", got)
	}
	eventually(t, "the unused poll session to end with its channels", func() bool {
		return e.hub.PollSessions() == 0 && e.hub.Channels() == 0
	})
}

func TestPollTimeout(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	e.send("r")
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	start := time.Now()
	res := e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: 50 * time.Millisecond})
	if time.Since(start) < 50*time.Millisecond {
		t.Fatalf("poll answered after %v, before its timeout", time.Since(start))
	}
	if len(res.Events) != 0 || res.Reset || res.Cursor != tail {
		t.Fatalf("timed-out poll = %+v; want no events and the cursor it was given", res)
	}
}

func TestPollVolatile(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	volatile := rooms.Message{Channels: []string{"r"}, Event: "typing", Volatile: true}
	e.publish(volatile)
	if res := e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: tail}); len(res.Events) != 0 {
		t.Fatalf("a volatile event published before the poll was answered: %+v", res.Events)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := e.startPoll(ctx, rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute}, "r")
	e.publish(volatile)
	res := answer(t, out, cancel, "a volatile event was published")
	if len(res.Events) != 1 || !res.Events[0].Event.Volatile || res.Events[0].Event.Event != "typing" {
		t.Fatalf("held poll = %+v; want the volatile event", res.Events)
	}
	if res.Cursor != tail {
		t.Fatal("a volatile event moved the poll cursor")
	}
}

func TestPollReset(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{HistorySize: 3})
	e.send("r")
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	var all []uint64
	for range 10 {
		all = append(all, e.send("r"))
	}
	res := e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute})
	if !res.Reset || !slices.Equal(pollSeqs(res), all[7:]) {
		t.Fatalf("poll past retention = %v reset=%v; want reset and the retained %v", pollSeqs(res), res.Reset, all[7:])
	}
	// From the answer on, no more resets.
	next := e.send("r")
	res = e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: res.Cursor})
	if res.Reset || !slices.Equal(pollSeqs(res), []uint64{next}) {
		t.Fatalf("poll after the reset = %v reset=%v", pollSeqs(res), res.Reset)
	}
	// A cursor of another epoch starts from the oldest retained event.
	gone := e.codec.Encode(rooms.Cursor{Epoch: "gone", Positions: []rooms.Position{{Key: rooms.ChannelKey("r"), Seq: 5}}})
	res = e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: gone, Timeout: time.Minute})
	if !res.Reset || !slices.Equal(pollSeqs(res), append(all[8:], next)) || e.decode(res.Cursor).Epoch != epochOf(t, e) {
		t.Fatalf("poll with another epoch's cursor = %v reset=%v", pollSeqs(res), res.Reset)
	}
	// A room the cursor does not know starts at its head.
	other := e.send("s")
	res = e.poll(rooms.PollRequest{Channels: []string{"r", "s"}, Cursor: res.Cursor})
	if p, _ := e.decode(res.Cursor).Get("s"); len(res.Events) != 0 || p != other {
		t.Fatalf("poll adding a room = %v, s at %d; want nothing and s at its head %d", pollSeqs(res), p, other)
	}
}

func TestPollErrors(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{MaxRooms: 2}, memory.Options{})
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	tests := []struct {
		name string
		req  rooms.PollRequest
		want error
	}{
		{"no rooms", rooms.PollRequest{}, rooms.ErrInvalidRoom},
		{"too many rooms", rooms.PollRequest{Channels: []string{"a", "b", "c"}}, rooms.ErrTooManyRooms},
		{"garbage cursor", rooms.PollRequest{Channels: []string{"r"}, Cursor: "garbage"}, rooms.ErrInvalidCursor},
		{"tampered cursor", rooms.PollRequest{Channels: []string{"r"}, Cursor: tail[:len(tail)-2] + "AA"}, rooms.ErrInvalidCursor},
	}
	for _, tt := range tests {
		if _, err := e.hub.Poll(context.Background(), tt.req); !errors.Is(err, tt.want) {
			t.Errorf("%s: Poll = %v; want %v", tt.name, err, tt.want)
		}
	}
}

// truncateSecond reports a gap on the second history read: retention
// dropped events between a poll's first look and its join.
type truncateSecond struct {
	rooms.Backbone
	calls atomic.Int64
}

func (b *truncateSecond) Since(ctx context.Context, ch string, after uint64, limit int) (rooms.History, error) {
	h, err := b.Backbone.Since(ctx, ch, after, limit)
	if b.calls.Add(1) == 2 {
		h.Truncated = true
	}
	return h, err
}

func TestPollResetFoundWhileJoiningAnswersAtOnce(t *testing.T) {
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	e := newEnvOn(t, bb, &truncateSecond{Backbone: bb}, rooms.HubOptions{})
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan rooms.PollResult, 1)
	go func() {
		res, err := e.hub.Poll(ctx, rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute})
		if err != nil {
			t.Errorf("Poll: %v", err)
		}
		out <- res
	}()
	if res := answer(t, out, cancel, "the history reported a gap"); !res.Reset {
		t.Fatalf("poll = %+v; want a reset", res)
	}
}

func TestPollHeldDuringDrain(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := e.startPoll(ctx, rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute}, "r")
	e.hub.Drain(func() time.Duration { return time.Second })
	res := answer(t, out, cancel, "the hub drained")
	if len(res.Events) != 0 || res.Cursor != tail {
		t.Fatalf("drained poll = %+v; want an empty answer with its cursor", res)
	}
	// Polls after the drain are answered at once.
	start := time.Now()
	e.poll(rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute})
	if time.Since(start) > wait/2 {
		t.Fatal("a poll was held while draining")
	}
}

func TestPollHeldAcrossEpochChange(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	e.send("r")
	tail := e.poll(rooms.PollRequest{Channels: []string{"r"}}).Cursor
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := e.startPoll(ctx, rooms.PollRequest{Channels: []string{"r"}, Cursor: tail, Timeout: time.Minute}, "r")
	ev, err := rooms.NewEvent(rooms.Message{Channels: []string{"r"}, Event: "m", Data: json.RawMessage(`1`)}, "new-epoch", 1, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	e.hub.Receive(ev, 0)
	res := answer(t, out, cancel, "the epoch changed")
	if !res.Reset {
		t.Fatalf("poll across an epoch change = %+v; want a reset", res)
	}
	for _, d := range res.Events {
		if d.Kind != rooms.KindEvent || d.Event.Epoch != "new-epoch" {
			t.Fatalf("poll answered %+v", d)
		}
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
