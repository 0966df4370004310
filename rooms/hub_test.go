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
	"github.com/roomcast/roomcast/rooms/roomstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait for something that must happen.
const wait = roomstest.Wait

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
