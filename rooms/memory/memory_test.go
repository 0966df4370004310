package memory_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/backbonetest"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	backbonetest.Run(t, func(t *testing.T, cfg backbonetest.Config) rooms.Backbone {
		b := memory.New(memory.Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge})
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A channel that stays empty and unsubscribed for a retention age is freed;
// a cursor into it must still read as a gap, and a fresh one must not.
func TestSweepFreesIdleChannels(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	b := memory.New(memory.Options{HistoryAge: time.Minute, Now: clk.Now, SweepEvery: time.Millisecond})
	defer b.Close()
	ctx := context.Background()
	publish := func(ch string) uint64 {
		p, err := b.Publish(ctx, rooms.Message{Channels: []string{ch}, Event: "e", Data: json.RawMessage(`1`)}, "")
		if err != nil {
			t.Fatal(err)
		}
		return p.Seq
	}
	old := publish("idle")
	clk.Add(2 * time.Minute)
	// The event has expired: reading applies retention and empties the channel.
	if h, err := b.Since(ctx, "idle", 0, 10); err != nil || !h.Truncated || len(h.Events) != 0 {
		t.Fatalf("Since(0) after the age = %+v, %v; want an empty, Truncated page", h, err)
	}
	busy := publish("busy")  // the global Seq moves on
	clk.Add(2 * time.Minute) // empty for a whole age: the sweeper frees it
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A freed channel reports the current Seq as its head.
		head, err := b.Head(ctx, "idle")
		if err != nil {
			t.Fatal(err)
		}
		if head == busy {
			break
		}
		if head != old || time.Now().After(deadline) {
			t.Fatalf("Head(idle) = %d; want %d until freed, then %d", head, old, busy)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h, err := b.Since(ctx, "idle", 0, 10)
	if err != nil || !h.Truncated || len(h.Events) != 0 {
		t.Fatalf("Since(0) on a freed channel = %+v, %v; want Truncated", h, err)
	}
	h, err = b.Since(ctx, "idle", old, 10)
	if err != nil || h.Truncated {
		t.Fatalf("Since(last event) on a freed channel = %+v, %v; want no gap", h, err)
	}
	// A subscribed channel is never freed.
	r := &discard{}
	if _, err := b.Subscribe(ctx, "watched", r); err != nil {
		t.Fatal(err)
	}
	w := publish("watched")
	publish("canary") // an unsubscribed channel of the same age, to see the sweeper at work
	clk.Add(2 * time.Minute)
	busy = publish("busy")
	// Reading applies retention: the canary is empty from now on.
	if _, err := b.Since(ctx, "canary", 0, 1); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute) // the canary has now been empty for a whole age
	// Once the sweeper has freed the canary it has looked at "watched" too.
	deadline = time.Now().Add(10 * time.Second)
	for {
		if head, _ := b.Head(ctx, "canary"); head == busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper never freed the unsubscribed canary channel")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if head, _ := b.Head(ctx, "watched"); head != w {
		t.Fatalf("a subscribed channel was freed: Head = %d; want %d", head, w)
	}
	_ = b.Unsubscribe(ctx, "watched", r)
}

// discard is a Receiver that ignores what it gets. Backbones tell receivers
// apart with ==, so it is a pointer.
type discard struct{ _ int }

func (*discard) Receive(*rooms.Event, int) {}

func TestIdempotencyKeyExpires(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	b := memory.New(memory.Options{HistoryAge: time.Minute, Now: clk.Now})
	defer b.Close()
	ctx := context.Background()
	m := rooms.Message{Channels: []string{"a"}, Event: "e"}
	first, err := b.Publish(ctx, m, "k")
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(59 * time.Second)
	if again, _ := b.Publish(ctx, m, "k"); !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("key forgotten within the retention window: %+v", again)
	}
	clk.Add(2 * time.Second)
	if later, _ := b.Publish(ctx, m, "k"); later.Duplicate || later.Seq <= first.Seq {
		t.Fatalf("key remembered past the retention window: %+v", later)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	b := memory.New(memory.Options{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// A channel that was only ever subscribed is freed at its last
// unsubscription (anyone could otherwise grow the backbone by subscribing
// to new names), and freeing others does not make a quiet channel's cursor
// look like a gap.
func TestSubscribedOnlyChannelIsFreed(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	b := memory.New(memory.Options{HistoryAge: time.Minute, Now: clk.Now, SweepEvery: time.Millisecond})
	defer b.Close()
	ctx := context.Background()
	base := b.Channels()
	r := &discard{}
	head, err := b.Subscribe(ctx, "quiet", r)
	if err != nil {
		t.Fatal(err)
	}
	if b.Channels() != base+1 {
		t.Fatalf("Channels = %d while subscribed, want %d", b.Channels(), base+1)
	}
	_ = b.Unsubscribe(ctx, "quiet", r)
	if b.Channels() != base {
		t.Fatalf("Channels = %d after the last unsubscription, want %d", b.Channels(), base)
	}
	// Another channel's history expires and it is freed.
	if _, err := b.Publish(ctx, rooms.Message{Channels: []string{"busy"}, Event: "e", Data: json.RawMessage(`1`)}, ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	if _, err := b.Since(ctx, "busy", 0, 1); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for b.Channels() != base {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper never freed the expired channel")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if h, err := b.Since(ctx, "quiet", head, 10); err != nil || h.Truncated {
		t.Fatalf("Since(head) of the quiet channel = %+v, %v; want no gap", h, err)
	}
}
