package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

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
	roomstest.Eventually(e.t, "the poll to be held", func() bool { return rooms.ChannelConns(e.hub, ch) > before })
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
	roomstest.Eventually(t, "the unused poll session to end with its channels", func() bool {
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
