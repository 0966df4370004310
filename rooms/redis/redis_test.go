package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// TestMain fails the package when any test leaves a goroutine running:
// every Backbone a test opens must stop everything it started on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait for an event that should come.
const waitTimeout = roomstest.Wait

// sharedBackbone opens a Backbone on the shared Redis, closed when the test
// ends. A zero opts.Prefix takes a fresh prefix of the test's own; pass the
// same prefix to several backbones to make them instances of one relay.
func sharedBackbone(t testing.TB, opts Options) *Backbone {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = redistest.Prefix(t)
	}
	return openBackbone(t, redistest.SharedURL(t), opts)
}

// openBackbone opens a Backbone on the Redis at url, closed when the test ends.
func openBackbone(t testing.TB, url string, opts Options) *Backbone {
	t.Helper()
	if opts.OpTimeout == 0 {
		// Generous: the machine running the tests may be busy.
		opts.OpTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.OpTimeout)
	defer cancel()
	b, err := New(ctx, url, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// message is a small message for channels.
func message(channels ...string) rooms.Message {
	return rooms.Message{Channels: channels, Event: "update", Data: json.RawMessage(`{"n":1}`)}
}

// received is one delivery to a recorder.
type received struct {
	ev      *rooms.Event
	channel string
}

// recorder is a Receiver that keeps what it is handed.
type recorder struct {
	mu  sync.Mutex
	got []received
}

func (r *recorder) Receive(ev *rooms.Event, i int) {
	r.mu.Lock()
	r.got = append(r.got, received{ev: ev, channel: ev.Channels[i]})
	r.mu.Unlock()
}

func (r *recorder) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// seqs returns the Seq of every received non-volatile event, in order.
func (r *recorder) seqs() []uint64 {
	var out []uint64
	for _, g := range r.all() {
		if !g.ev.Volatile {
			out = append(out, g.ev.Seq)
		}
	}
	return out
}

// waitSeqs waits until r received want, in order, and nothing else.
func (r *recorder) waitSeqs(t testing.TB, want []uint64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := r.seqs()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("received seqs %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func historySeqs(t testing.TB, b *Backbone, ch string, after uint64) []uint64 {
	t.Helper()
	h, err := b.Since(context.Background(), ch, after, 0)
	if err != nil {
		t.Fatalf("Since(%s, %d): %v", ch, after, err)
	}
	var out []uint64
	for _, ev := range h.Events {
		out = append(out, ev.Seq)
	}
	return out
}

func publish(t testing.TB, b *Backbone, m rooms.Message) rooms.Published {
	t.Helper()
	p, err := b.Publish(context.Background(), m, "")
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return p
}

func subscribe(t testing.TB, b *Backbone, ch string, r rooms.Receiver) uint64 {
	t.Helper()
	head, err := b.Subscribe(context.Background(), ch, r)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", ch, err)
	}
	return head
}

// TestMessageSurvivesTheRoundTrip checks that every field of a message
// comes back the same live and from history, where it was encoded to Redis.
func TestMessageSurvivesTheRoundTrip(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{})
	ctx := context.Background()
	var rec recorder
	subscribe(t, b, "room-b", &rec)
	m := rooms.Message{
		Channels: []string{"room-a", "room-b"},
		Event:    "chat",
		Data:     json.RawMessage(`"aGVsbG8="`),
		Base64:   true,
		From:     &rooms.Sender{User: "u1", Name: "Ann | \"the\" first"},
		Client:   "client-1",
		Exclude:  []string{"client-2", "client-3"},
	}
	p, err := b.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	epoch, err := b.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := rooms.FormatEventID(epoch, p.Seq); p.ID != want || p.Event != "chat" || !slices.Equal(p.Channels, m.Channels) {
		t.Fatalf("Publish answered %+v, want id %s for event chat on %v", p, want, m.Channels)
	}
	rec.waitSeqs(t, []uint64{p.Seq})
	live := rec.all()[0]
	if live.channel != "room-b" {
		t.Fatalf("delivered through %q, want room-b", live.channel)
	}
	hist, err := b.Since(ctx, "room-a", 0, 10)
	if err != nil || len(hist.Events) != 1 {
		t.Fatalf("Since(room-a) = %+v, %v; want one event", hist, err)
	}
	for name, ev := range map[string]*rooms.Event{"live": live.ev, "history": hist.Events[0]} {
		if ev.Epoch != epoch || ev.Seq != p.Seq || ev.ID() != p.ID || ev.TS == 0 {
			t.Errorf("%s: position %s/%d ts %d, want %s", name, ev.Epoch, ev.Seq, ev.TS, p.ID)
		}
		if !slices.Equal(ev.Channels, m.Channels) || ev.Event != m.Event || string(ev.Data) != string(m.Data) ||
			ev.Base64 != m.Base64 || *ev.From != *m.From || ev.Client != m.Client || !slices.Equal(ev.Exclude, m.Exclude) {
			t.Errorf("%s: message %+v (from %+v), want %+v", name, ev.Message, ev.From, m)
		}
		for i, ch := range m.Channels {
			var env struct {
				ID   string `json:"id"`
				Room string `json:"room"`
			}
			if err := json.Unmarshal(ev.Envelope(i), &env); err != nil || env.ID != p.ID || env.Room != ch {
				t.Errorf("%s: envelope %d = %s (%v), want id %s room %s", name, i, ev.Envelope(i), err, p.ID, ch)
			}
		}
	}
}

// TestHistorySizeTrims checks that a channel keeps its newest HistorySize
// events and reports older positions as truncated.
func TestHistorySizeTrims(t *testing.T) {
	t.Parallel()
	const size = 5
	b := sharedBackbone(t, Options{HistorySize: size})
	var all []uint64
	for range 12 {
		all = append(all, publish(t, b, message("room")).Seq)
		publish(t, b, message("other")) // seqs of one channel are not contiguous
	}
	ctx := context.Background()
	oldest := len(all) - size // index of the oldest retained event
	cases := []struct {
		name      string
		after     uint64
		want      []uint64
		truncated bool
	}{
		{"from the start", 0, all[oldest:], true},
		{"from a trimmed event", all[oldest-2], all[oldest:], true},
		{"from the last trimmed event", all[oldest-1], all[oldest:], false},
		{"from a retained event", all[oldest+1], all[oldest+2:], false},
		{"from the head", all[len(all)-1], nil, false},
	}
	for _, c := range cases {
		h, err := b.Since(ctx, "room", c.after, 0)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []uint64
		for _, ev := range h.Events {
			got = append(got, ev.Seq)
		}
		if !slices.Equal(got, c.want) || h.Truncated != c.truncated || h.More {
			t.Errorf("%s: Since(%d) = %v truncated=%v more=%v; want %v truncated=%v",
				c.name, c.after, got, h.Truncated, h.More, c.want, c.truncated)
		}
	}
	before, err := b.Before(ctx, "room", 0, 0)
	if err != nil || len(before) != size || before[0].Seq != all[oldest] {
		t.Errorf("Before(0) = %d events (%v), want the %d retained ones", len(before), err, size)
	}
}

// TestHistoryAgeExpires checks that events older than HistoryAge stop being
// replayed and that asking for them reports the loss.
func TestHistoryAgeExpires(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{HistoryAge: time.Second})
	ctx := context.Background()
	old := []uint64{publish(t, b, message("room")).Seq, publish(t, b, message("room")).Seq}
	if got := historySeqs(t, b, "room", 0); !slices.Equal(got, old) {
		t.Fatalf("history right after publishing = %v, want %v", got, old)
	}
	roomstest.Eventually(t, "the events to age out", func() bool {
		h, err := b.Since(ctx, "room", 0, 0)
		return err == nil && h.Truncated && len(h.Events) == 0
	})
	if before, err := b.Before(ctx, "room", 0, 0); err != nil || len(before) != 0 {
		t.Errorf("Before after expiry = %d events, %v; want none", len(before), err)
	}
	fresh := publish(t, b, message("room")).Seq
	cases := []struct {
		after     uint64
		truncated bool
	}{
		{0, true},
		{old[0], true},
		{old[1], false},
	}
	for _, c := range cases {
		h, err := b.Since(ctx, "room", c.after, 0)
		if err != nil || len(h.Events) != 1 || h.Events[0].Seq != fresh || h.Truncated != c.truncated {
			t.Errorf("Since(%d) after a fresh publish = %+v, %v; want only seq %d, truncated=%v", c.after, h, err, fresh, c.truncated)
		}
	}
}

// TestIdempotencyAcrossInstances checks that one idempotency key publishes
// once whichever instances use it, even at the same moment.
func TestIdempotencyAcrossInstances(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	a := sharedBackbone(t, Options{Prefix: prefix})
	b := sharedBackbone(t, Options{Prefix: prefix})
	ctx := context.Background()

	t.Run("sequential", func(t *testing.T) {
		first, err := a.Publish(ctx, message("room-1", "room-2"), "key-1")
		if err != nil {
			t.Fatal(err)
		}
		m := message("room-1", "room-2")
		m.Event = "different" // a retry answers what the first publish did
		again, err := b.Publish(ctx, m, "key-1")
		if err != nil {
			t.Fatal(err)
		}
		if first.Duplicate || !again.Duplicate {
			t.Errorf("Duplicate = %v then %v, want false then true", first.Duplicate, again.Duplicate)
		}
		again.Duplicate = false
		if !equalPublished(first, again) {
			t.Errorf("duplicate answered %+v, want %+v", again, first)
		}
		if got := historySeqs(t, a, "room-1", 0); !slices.Equal(got, []uint64{first.Seq}) {
			t.Errorf("history %v, want only %d", got, first.Seq)
		}
		other, err := b.Publish(ctx, message("room-1"), "key-2")
		if err != nil || other.Duplicate || other.Seq == first.Seq {
			t.Errorf("another key answered %+v, %v; want a new event", other, err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 8
		results := make([]rooms.Published, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			bb := a
			if i%2 == 1 {
				bb = b
			}
			wg.Go(func() { results[i], errs[i] = bb.Publish(ctx, message("room-3"), "key-3") })
		}
		wg.Wait()
		originals := 0
		for i, p := range results {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if !p.Duplicate {
				originals++
			}
			if p.ID != results[0].ID || p.Seq != results[0].Seq || p.Event != results[0].Event {
				t.Errorf("publish %d answered %+v, publish 0 %+v", i, p, results[0])
			}
		}
		if originals != 1 {
			t.Errorf("%d publishes were not duplicates, want 1", originals)
		}
		if got := historySeqs(t, a, "room-3", 0); len(got) != 1 {
			t.Errorf("history %v, want one event", got)
		}
	})
}

func equalPublished(a, b rooms.Published) bool {
	return a.ID == b.ID && a.Seq == b.Seq && a.Event == b.Event && slices.Equal(a.Channels, b.Channels) && a.Duplicate == b.Duplicate
}

// TestSharedSecret checks that instances agree on a secret they never
// exchanged, and that secrets differ by name.
func TestSharedSecret(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	a := sharedBackbone(t, Options{Prefix: prefix})
	b := sharedBackbone(t, Options{Prefix: prefix})
	ctx := context.Background()
	secret := func(bb *Backbone, name string) []byte {
		s, err := bb.SharedSecret(ctx, name)
		if err != nil {
			t.Fatalf("SharedSecret(%s): %v", name, err)
		}
		return s
	}
	fromA, fromB := secret(a, "cursor"), secret(b, "cursor")
	if len(fromA) != 32 || string(fromA) != string(fromB) {
		t.Fatalf("secrets %x and %x, want the same 32 bytes", fromA, fromB)
	}
	if again := secret(a, "cursor"); string(again) != string(fromA) {
		t.Errorf("second call returned %x, want %x", again, fromA)
	}
	if other := secret(b, "dev-token"); string(other) == string(fromA) {
		t.Errorf("secret dev-token equals secret cursor")
	}
}

// TestUnreachableRedis checks that New reports an unreachable Redis as the
// backbone being down, and parses URLs.
func TestUnreachableRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := New(ctx, "redis://127.0.0.1:1", Options{OpTimeout: 500 * time.Millisecond})
	if !errors.Is(err, rooms.ErrBackboneDown) {
		t.Errorf("New on a closed port: %v, want ErrBackboneDown", err)
	}
	if _, err := New(ctx, "http://127.0.0.1:6379", Options{}); err == nil || errors.Is(err, rooms.ErrBackboneDown) {
		t.Errorf("New with an http:// URL: %v, want a URL error", err)
	}
}

// TestCloseStopsGoroutines checks that Close stops every goroutine a
// backbone started: its reader, its dispatcher and running commands.
// It is not parallel, so the goroutines of other tests do not count.
func TestCloseStopsGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	prefix := redistest.Prefix(t)
	url := redistest.SharedURL(t)
	ctx := context.Background()
	for round := range 3 {
		a, err := New(ctx, url, Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(ctx, url, Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		var rec recorder
		subscribe(t, a, "room", &rec)
		p := publish(t, b, message("room"))
		rec.waitSeqs(t, []uint64{p.Seq})
		// A forwarded command runs on a goroutine of its own.
		a.HandleCommands(func(context.Context, rooms.Command) error { return nil })
		if err := b.Forward(ctx, a.Instance(), rooms.Command{Op: "join", Connection: fmt.Sprint("c", round), Channel: "x"}); err != nil {
			t.Fatalf("Forward: %v", err)
		}
		// Close with a subscription still open.
		_ = a.Close()
		_ = b.Close()
	}
}
