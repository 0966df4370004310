package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

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
	roomstest.Eventually(t, "the poll to be held", func() bool { return rooms.ChannelConns(e.hub, "p3") == 1 })
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
