// Package backbonetest is the conformance suite of rooms.Backbone. Every
// implementation runs it from its own tests, so that the embedded backbone
// and the production one keep the same guarantees:
//
//	func TestConformance(t *testing.T) {
//		backbonetest.Run(t, func(t *testing.T, cfg backbonetest.Config) rooms.Backbone {
//			b := memory.New(memory.Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge})
//			t.Cleanup(func() { b.Close() })
//			return b
//		})
//	}
//
// The suite uses the backbone only through the interface and does not assume
// it is in-process: every subtest names its own channels, idempotency keys
// and sessions, so backbones may share storage (one Redis for all subtests)
// and other writers may advance the global Seq meanwhile.
package backbonetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// Config is the retention a subtest asks of the backbone it is given.
type Config struct {
	// HistorySize is how many events each channel must retain at least.
	HistorySize int
	// HistoryAge is how long events and idempotency keys must be retained
	// at least.
	HistoryAge time.Duration
}

// Factory returns a backbone retaining what cfg says. It registers the
// backbone's shutdown with t.Cleanup.
type Factory func(t *testing.T, cfg Config) rooms.Backbone

// Wait bounds every wait for a live delivery or an expiry.
var Wait = roomstest.Wait

// defaultConfig retains more than any subtest publishes, for long enough.
var defaultConfig = Config{HistorySize: 1000, HistoryAge: 5 * time.Minute}

// Run runs the conformance suite against the backbones newBackbone makes.
func Run(t *testing.T, newBackbone Factory) {
	tests := []struct {
		name string
		cfg  Config
		run  func(t *testing.T, s *suite)
	}{
		{"Epoch", defaultConfig, testEpoch},
		{"SeqGrowsAcrossChannels", defaultConfig, testSeqGrows},
		{"MultiChannelOneSeq", defaultConfig, testMultiChannel},
		{"ConcurrentPublish", defaultConfig, testConcurrentPublish},
		{"Head", defaultConfig, testHead},
		{"LiveDelivery", defaultConfig, testLiveDelivery},
		{"LiveMultiChannel", defaultConfig, testLiveMultiChannel},
		{"SubscribeHeadIsExact", defaultConfig, testSubscribeHead},
		{"Unsubscribe", defaultConfig, testUnsubscribe},
		{"SincePaging", defaultConfig, testSincePaging},
		{"Before", defaultConfig, testBefore},
		{"RetentionBySize", Config{HistorySize: 10, HistoryAge: 5 * time.Minute}, testRetentionBySize},
		{"RetentionByAge", Config{HistorySize: 1000, HistoryAge: 300 * time.Millisecond}, testRetentionByAge},
		{"RetentionPerMessage", defaultConfig, testRetentionPerMessage},
		{"Idempotency", defaultConfig, testIdempotency},
		{"IdempotencyConcurrent", defaultConfig, testIdempotencyConcurrent},
		{"PublishToken", defaultConfig, testPublishToken},
		{"PublishTokenConcurrent", defaultConfig, testPublishTokenConcurrent},
		{"PublishTokenExpired", defaultConfig, testPublishTokenExpired},
		{"PublishTokenBound", defaultConfig, testPublishTokenBound},
		{"Volatile", defaultConfig, testVolatile},
		{"Sessions", defaultConfig, testSessions},
		{"ClientBindings", defaultConfig, testClientBindings},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, &suite{
				bb:     newBackbone(t, tt.cfg),
				cfg:    tt.cfg,
				prefix: "bbt." + randomHex(6) + ".",
			})
		})
	}
}

type suite struct {
	bb     rooms.Backbone
	cfg    Config
	prefix string
}

// channel names a channel (or key, or session) of this subtest alone.
func (s *suite) channel(name string) string { return s.prefix + name }

// nsChannel names a channel of this subtest in namespace ns.
func (s *suite) nsChannel(ns, name string) string { return ns + ":" + s.prefix + name }

func (s *suite) msg(event string, n int, channels ...string) rooms.Message {
	return rooms.Message{
		Channels: channels,
		Event:    event,
		Data:     json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
	}
}

func (s *suite) publish(t *testing.T, m rooms.Message, idemKey string) rooms.Published {
	t.Helper()
	p, err := s.bb.Publish(context.Background(), m, idemKey)
	if err != nil {
		t.Fatalf("Publish(%v): %v", m.Channels, err)
	}
	return p
}

func (s *suite) since(t *testing.T, ch string, after uint64, limit int) rooms.History {
	t.Helper()
	h, err := s.bb.Since(context.Background(), ch, after, limit)
	if err != nil {
		t.Fatalf("Since(%s, %d, %d): %v", ch, after, limit, err)
	}
	for i, ev := range h.Events {
		if ev.Seq <= after || (i > 0 && ev.Seq <= h.Events[i-1].Seq) {
			t.Fatalf("Since(%s, %d): Seqs %v are not ascending above %d", ch, after, seqs(h.Events), after)
		}
		if ev.ChannelIndex(ch) < 0 {
			t.Fatalf("Since(%s): event %d is of channels %v", ch, ev.Seq, ev.Channels)
		}
	}
	return h
}

func (s *suite) before(t *testing.T, ch string, before uint64, limit int) []*rooms.Event {
	t.Helper()
	evs, err := s.bb.Before(context.Background(), ch, before, limit)
	if err != nil {
		t.Fatalf("Before(%s, %d, %d): %v", ch, before, limit, err)
	}
	return evs
}

func (s *suite) head(t *testing.T, ch string) uint64 {
	t.Helper()
	h, err := s.bb.Head(context.Background(), ch)
	if err != nil {
		t.Fatalf("Head(%s): %v", ch, err)
	}
	return h
}

func (s *suite) epoch(t *testing.T) string {
	t.Helper()
	e, err := s.bb.Epoch(context.Background())
	if err != nil {
		t.Fatalf("Epoch: %v", err)
	}
	return e
}

func (s *suite) subscribe(t *testing.T, ch string, r rooms.Receiver) uint64 {
	t.Helper()
	head, err := s.bb.Subscribe(context.Background(), ch, r)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", ch, err)
	}
	t.Cleanup(func() { _ = s.bb.Unsubscribe(context.Background(), ch, r) })
	return head
}

func seqs(evs []*rooms.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// delivery is one Receive call.
type delivery struct {
	ev *rooms.Event
	i  int
}

// recorder is a Receiver that keeps what it is handed.
type recorder struct {
	mu      sync.Mutex
	got     []delivery
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) Receive(ev *rooms.Event, i int) {
	r.mu.Lock()
	r.got = append(r.got, delivery{ev, i})
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor waits until done holds for what r received, and returns that.
func (r *recorder) waitFor(t *testing.T, what string, done func([]delivery) bool) []delivery {
	t.Helper()
	deadline := time.NewTimer(Wait)
	defer deadline.Stop()
	for {
		got := r.snapshot()
		if done(got) {
			return got
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; received %d deliveries", what, len(got))
		}
	}
}

// waitSeq waits until r received the event seq on channel ch.
func (r *recorder) waitSeq(t *testing.T, ch string, seq uint64) []delivery {
	t.Helper()
	return r.waitFor(t, fmt.Sprintf("event %d on %s", seq, ch), func(got []delivery) bool {
		return slices.ContainsFunc(got, func(d delivery) bool { return d.ev.Seq == seq && d.ev.Channels[d.i] == ch })
	})
}

func testEpoch(t *testing.T, s *suite) {
	e := s.epoch(t)
	if e == "" {
		t.Fatal("Epoch is empty")
	}
	p := s.publish(t, s.msg("e", 1, s.channel("a")), "")
	if again := s.epoch(t); again != e {
		t.Fatalf("Epoch changed from %q to %q without losing history", e, again)
	}
	if p.ID != rooms.FormatEventID(e, p.Seq) {
		t.Fatalf("published id %q; want %q", p.ID, rooms.FormatEventID(e, p.Seq))
	}
	h := s.since(t, s.channel("a"), 0, 10)
	if len(h.Events) != 1 || h.Events[0].Epoch != e || h.Events[0].ID() != p.ID {
		t.Fatalf("retained event does not carry epoch %q and id %q: %+v", e, p.ID, h.Events)
	}
}

func testSeqGrows(t *testing.T, s *suite) {
	a, b, c := s.channel("a"), s.channel("b"), s.channel("c")
	plan := [][]string{{a}, {b}, {a}, {a, b}, {c}, {b, c}, {a}, {c, a, b}}
	var last uint64
	for i, chs := range plan {
		m := s.msg(fmt.Sprint("ev", i), i, chs...)
		p := s.publish(t, m, "")
		if p.Seq <= last {
			t.Fatalf("publish %d to %v got Seq %d after %d", i, chs, p.Seq, last)
		}
		last = p.Seq
		if p.Duplicate || p.Event != m.Event || !slices.Equal(p.Channels, chs) || p.ID == "" {
			t.Fatalf("Published %+v does not repeat what was published (%v, %s)", p, chs, m.Event)
		}
	}
}

func testMultiChannel(t *testing.T, s *suite) {
	chs := []string{s.channel("a"), s.channel("b"), s.nsChannel("chat", "c")}
	p := s.publish(t, s.msg("multi", 7, chs...), "")
	for i, ch := range chs {
		h := s.since(t, ch, 0, 10)
		if len(h.Events) != 1 {
			t.Fatalf("channel %s retains %d events; want the multi-channel one", ch, len(h.Events))
		}
		ev := h.Events[0]
		if ev.Seq != p.Seq || ev.ID() != p.ID || !slices.Equal(ev.Channels, chs) || ev.ChannelIndex(ch) != i {
			t.Fatalf("channel %s retains Seq %d of %v; want Seq %d of %v", ch, ev.Seq, ev.Channels, p.Seq, chs)
		}
		var env struct {
			ID    string   `json:"id"`
			Room  string   `json:"room"`
			Rooms []string `json:"rooms"`
		}
		if err := json.Unmarshal(ev.Envelope(i), &env); err != nil {
			t.Fatal(err)
		}
		if env.ID != p.ID || env.Room != rooms.DisplayName(ch) || len(env.Rooms) != len(chs) {
			t.Fatalf("envelope through %s: %s", ch, ev.Envelope(i))
		}
		if head := s.head(t, ch); head != p.Seq {
			t.Fatalf("Head(%s) = %d; want %d", ch, head, p.Seq)
		}
	}
}

func testConcurrentPublish(t *testing.T, s *suite) {
	chs := []string{s.channel("a"), s.channel("b"), s.channel("c"), s.channel("d")}
	recs := make([]*recorder, len(chs))
	for i, ch := range chs {
		recs[i] = newRecorder()
		s.subscribe(t, ch, recs[i])
	}
	const workers, each = 8, 40
	results := make([][]rooms.Published, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				targets := []string{chs[(w+n)%len(chs)]}
				if n%5 == 0 {
					targets = append(targets, chs[(w+n+1)%len(chs)])
				}
				p, err := s.bb.Publish(context.Background(), s.msg("c", n, targets...), "")
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				results[w] = append(results[w], p)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	bySeq := make(map[uint64]rooms.Published)
	perChannel := make(map[string][]uint64)
	for _, ps := range results {
		var last uint64
		for _, p := range ps {
			if _, dup := bySeq[p.Seq]; dup || p.Seq == 0 {
				t.Fatalf("Seq %d assigned twice (or zero)", p.Seq)
			}
			if p.Seq <= last {
				t.Fatalf("one publisher's Seqs went from %d to %d", last, p.Seq)
			}
			last = p.Seq
			bySeq[p.Seq] = p
			for _, ch := range p.Channels {
				perChannel[ch] = append(perChannel[ch], p.Seq)
			}
		}
	}
	for i, ch := range chs {
		want := perChannel[ch]
		slices.Sort(want)
		if got := seqs(s.since(t, ch, 0, 1000).Events); !slices.Equal(got, want) {
			t.Fatalf("history of %s is %v; want %v", ch, got, want)
		}
		got := recs[i].waitFor(t, "every event live on "+ch, func(got []delivery) bool { return len(got) >= len(want) })
		live := make([]uint64, len(got))
		for j, d := range got {
			live[j] = d.ev.Seq
		}
		if !slices.Equal(live, want) {
			t.Fatalf("live order on %s is %v; want history order %v", ch, live, want)
		}
	}
}

func testHead(t *testing.T, s *suite) {
	a, b := s.channel("a"), s.channel("b")
	h0 := s.head(t, a)
	if h := s.since(t, a, h0, 10); len(h.Events) != 0 || h.Truncated || h.More {
		t.Fatalf("a channel without events has history after its head %d: %+v", h0, h)
	}
	p1 := s.publish(t, s.msg("e", 1, a), "")
	if p1.Seq <= h0 {
		t.Fatalf("event Seq %d is not above the earlier head %d", p1.Seq, h0)
	}
	if h := s.head(t, a); h != p1.Seq {
		t.Fatalf("Head = %d after publishing Seq %d", h, p1.Seq)
	}
	p2 := s.publish(t, s.msg("e", 2, b), "")
	if h := s.head(t, a); h != p1.Seq {
		t.Fatalf("Head(a) moved to %d when b got %d", h, p2.Seq)
	}
	if h := s.head(t, b); h != p2.Seq {
		t.Fatalf("Head(b) = %d; want %d", h, p2.Seq)
	}
}

func testLiveDelivery(t *testing.T, s *suite) {
	ch := s.channel("live")
	r1, r2 := newRecorder(), newRecorder()
	head1 := s.subscribe(t, ch, r1)
	s.subscribe(t, ch, r2)
	var want []uint64
	for n := range 20 {
		want = append(want, s.publish(t, s.msg("live", n, ch), "").Seq)
	}
	for _, r := range []*recorder{r1, r2} {
		got := r.waitSeq(t, ch, want[len(want)-1])
		if len(got) != len(want) {
			t.Fatalf("received %d deliveries; want %d", len(got), len(want))
		}
		for j, d := range got {
			if d.ev.Seq != want[j] || d.ev.Channels[d.i] != ch || d.ev.Volatile {
				t.Fatalf("delivery %d is Seq %d on %s; want %d on %s", j, d.ev.Seq, d.ev.Channels[d.i], want[j], ch)
			}
		}
	}
	if hist := seqs(s.since(t, ch, head1, 100).Events); !slices.Equal(hist, want) {
		t.Fatalf("live events %v are not the history after the head %v", want, hist)
	}
}

func testLiveMultiChannel(t *testing.T, s *suite) {
	a, b, c := s.channel("a"), s.channel("b"), s.channel("c")
	r := newRecorder()
	s.subscribe(t, a, r)
	s.subscribe(t, b, r)
	p := s.publish(t, s.msg("m", 1, a, b, c), "")
	marker := s.publish(t, s.msg("marker", 2, b), "")
	r.waitSeq(t, b, marker.Seq)
	got := r.waitSeq(t, a, p.Seq)
	var through []string
	for _, d := range got {
		if d.ev.Seq == p.Seq {
			through = append(through, d.ev.Channels[d.i])
		}
	}
	slices.Sort(through)
	if !slices.Equal(through, []string{a, b}) {
		t.Fatalf("multi-channel event reached the receiver through %v; want once through each of %v", through, []string{a, b})
	}
}

func testSubscribeHead(t *testing.T, s *suite) {
	ch := s.channel("race")
	const total = 300
	// Unbuffered: each Subscribe below runs while the next Publish does.
	published := make(chan uint64)
	go func() {
		defer close(published)
		for n := range total {
			p, err := s.bb.Publish(context.Background(), s.msg("r", n, ch), "")
			if err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			published <- p.Seq
		}
	}()
	type sub struct {
		r    *recorder
		head uint64
	}
	var subs []sub
	n := 0
	for range published {
		if n++; n%60 == 0 {
			r := newRecorder()
			subs = append(subs, sub{r, s.subscribe(t, ch, r)})
		}
	}
	if t.Failed() {
		return
	}
	// A final event every receiver must see.
	final := s.publish(t, s.msg("final", 0, ch), "").Seq
	for _, sb := range subs {
		got := sb.r.waitSeq(t, ch, final)
		live := make([]uint64, len(got))
		for j, d := range got {
			live[j] = d.ev.Seq
		}
		want := seqs(s.since(t, ch, sb.head, 1000).Events)
		if !slices.Equal(live, want) {
			t.Fatalf("subscribed at head %d, received %v; want exactly the events after it %v", sb.head, live, want)
		}
	}
}

func testUnsubscribe(t *testing.T, s *suite) {
	ch := s.channel("unsub")
	r1, r2 := newRecorder(), newRecorder()
	s.subscribe(t, ch, r1)
	s.subscribe(t, ch, r2)
	first := s.publish(t, s.msg("e", 1, ch), "").Seq
	r1.waitSeq(t, ch, first)
	r2.waitSeq(t, ch, first)
	if err := s.bb.Unsubscribe(context.Background(), ch, r1); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	second := s.publish(t, s.msg("e", 2, ch), "").Seq
	r2.waitSeq(t, ch, second)
	if got := r1.snapshot(); len(got) != 1 || got[0].ev.Seq != first {
		t.Fatalf("after Unsubscribe the receiver got %d deliveries (last Seq %d); want only %d", len(got), got[len(got)-1].ev.Seq, first)
	}
	// Subscribing again resumes delivery.
	s.subscribe(t, ch, r1)
	third := s.publish(t, s.msg("e", 3, ch), "").Seq
	if got := r1.waitSeq(t, ch, third); len(got) != 2 {
		t.Fatalf("after subscribing again the receiver has %d deliveries; want 2", len(got))
	}
}

func testSincePaging(t *testing.T, s *suite) {
	ch, other := s.channel("page"), s.channel("other")
	var want []uint64
	for n := range 10 {
		want = append(want, s.publish(t, s.msg("p", n, ch), "").Seq)
		s.publish(t, s.msg("o", n, other), "")
	}
	var got []uint64
	after, pages := uint64(0), 0
	for {
		h := s.since(t, ch, after, 3)
		pages++
		if h.Truncated {
			t.Fatalf("page after %d is Truncated although nothing was dropped", after)
		}
		if len(h.Events) > 3 {
			t.Fatalf("page of limit 3 has %d events", len(h.Events))
		}
		got = append(got, seqs(h.Events)...)
		if !h.More {
			break
		}
		if len(h.Events) != 3 || pages > 10 {
			t.Fatalf("page %d has More with %d events", pages, len(h.Events))
		}
		after = h.Events[len(h.Events)-1].Seq
	}
	if !slices.Equal(got, want) || pages != 4 {
		t.Fatalf("paged %v in %d pages; want %v in 4", got, pages, want)
	}
	tests := []struct {
		after uint64
		limit int
		want  []uint64
		more  bool
	}{
		{0, 10, want, false},
		{0, 9, want[:9], true},
		{0, 100, want, false},
		{want[4], 100, want[5:], false},
		{want[4] + 1, 100, want[5:], false}, // a position between two of its events
		{want[9], 5, nil, false},
		{want[9] + 1000, 5, nil, false},
	}
	for _, tt := range tests {
		h := s.since(t, ch, tt.after, tt.limit)
		if got := seqs(h.Events); !slices.Equal(got, tt.want) || h.More != tt.more || h.Truncated {
			t.Errorf("Since(%d, %d) = %v More=%v Truncated=%v; want %v More=%v", tt.after, tt.limit, got, h.More, h.Truncated, tt.want, tt.more)
		}
	}
}

func testBefore(t *testing.T, s *suite) {
	ch := s.channel("before")
	var all []uint64
	for n := range 10 {
		all = append(all, s.publish(t, s.msg("b", n, ch), "").Seq)
		s.publish(t, s.msg("o", n, s.channel("other")), "")
	}
	tests := []struct {
		before uint64
		limit  int
		want   []uint64
	}{
		{0, 3, all[7:]},
		{0, 100, all},
		{all[7], 3, all[4:7]},
		{all[7] - 1, 3, all[4:7]}, // a bound between two of its events
		{all[2], 3, all[:2]},
		{all[0], 3, nil},
		{all[9] + 1000, 2, all[8:]},
	}
	for _, tt := range tests {
		if got := seqs(s.before(t, ch, tt.before, tt.limit)); !slices.Equal(got, tt.want) {
			t.Errorf("Before(%d, %d) = %v; want %v", tt.before, tt.limit, got, tt.want)
		}
	}
	if got := s.before(t, s.channel("empty"), 0, 10); len(got) != 0 {
		t.Errorf("Before on a channel without events = %v", seqs(got))
	}
}

// testRetentionBySize publishes far more than the configured size; a
// backbone may keep more than asked (Redis trims approximately), so the
// checks are relative to the oldest event it still has.
// testRetentionPerMessage: a message's own retention (a namespace's) rules
// its channel instead of the backbone's.
func testRetentionPerMessage(t *testing.T, s *suite) {
	ch, other := s.channel("short"), s.channel("long")
	var pub []uint64
	for n := range 60 {
		m := s.msg("s", n, ch)
		m.Retention = rooms.Retention{Size: 5}
		pub = append(pub, s.publish(t, m, "").Seq)
		s.publish(t, s.msg("l", n, other), "")
	}
	h := s.since(t, ch, 0, 1000)
	kept := seqs(h.Events)
	// Approximate trimming may keep a few more, never fewer, and always
	// the newest.
	if len(kept) < 5 || len(kept) >= 60 || !slices.Equal(kept, pub[len(pub)-len(kept):]) || !h.Truncated {
		t.Fatalf("a channel kept to 5 events holds %v (Truncated=%v)", kept, h.Truncated)
	}
	if got := s.since(t, other, 0, 1000); len(got.Events) != 60 || got.Truncated {
		t.Fatalf("a channel under the backbone's retention holds %d of 60 events (Truncated=%v)", len(got.Events), got.Truncated)
	}
}

func testRetentionBySize(t *testing.T, s *suite) {
	ch, other := s.channel("sized"), s.channel("other")
	const total = 250
	var pub, otherSeqs []uint64
	for n := range total {
		pub = append(pub, s.publish(t, s.msg("s", n, ch), "").Seq)
		if n%10 == 0 {
			otherSeqs = append(otherSeqs, s.publish(t, s.msg("o", n, other), "").Seq)
		}
	}
	h := s.since(t, ch, 0, 1000)
	kept := seqs(h.Events)
	if len(kept) < s.cfg.HistorySize {
		t.Fatalf("retains %d events; want at least %d", len(kept), s.cfg.HistorySize)
	}
	if len(kept) == total {
		t.Fatalf("retains all %d events with a history size of %d", total, s.cfg.HistorySize)
	}
	k := slices.Index(pub, kept[0])
	if k < 1 || !slices.Equal(kept, pub[k:]) {
		t.Fatalf("retained events %v are not the newest events", kept)
	}
	if !h.Truncated {
		t.Fatal("Since(0) is not Truncated although events after 0 were dropped")
	}
	if got := s.since(t, ch, 0, 5); !got.Truncated || !got.More || !slices.Equal(seqs(got.Events), pub[k:k+5]) {
		t.Fatalf("Since(0, 5) = %v Truncated=%v More=%v; want the 5 oldest retained, Truncated and More",
			seqs(got.Events), got.Truncated, got.More)
	}
	// Truncated says exactly whether events after the position were dropped.
	if got := s.since(t, ch, pub[k-1], 1000); got.Truncated || !slices.Equal(seqs(got.Events), pub[k:]) {
		t.Fatalf("Since(last dropped %d) Truncated=%v events %v; nothing after it was dropped", pub[k-1], got.Truncated, seqs(got.Events))
	}
	if k >= 2 {
		if got := s.since(t, ch, pub[k-2], 1000); !got.Truncated {
			t.Fatalf("Since(%d) is not Truncated although %d was dropped", pub[k-2], pub[k-1])
		}
	}
	for _, pos := range otherSeqs { // positions that are not Seqs of this channel
		dropped := pos < pub[k-1]
		if got := s.since(t, ch, pos, 1000); got.Truncated != dropped {
			t.Fatalf("Since(%d) Truncated=%v; want %v (oldest retained %d)", pos, got.Truncated, dropped, pub[k])
		}
	}
	if got := s.since(t, ch, pub[total-1], 10); got.Truncated || len(got.Events) != 0 {
		t.Fatalf("Since(head) = %v Truncated=%v", seqs(got.Events), got.Truncated)
	}
	if got := seqs(s.before(t, ch, 0, 1000)); !slices.Equal(got, kept) {
		t.Fatalf("Before(0) = %v; want the retained events %v", got, kept)
	}
	if head := s.head(t, ch); head != pub[total-1] {
		t.Fatalf("Head = %d; want %d", head, pub[total-1])
	}
}

func testRetentionByAge(t *testing.T, s *suite) {
	ch := s.channel("aged")
	start := time.Now()
	p1 := s.publish(t, s.msg("a", 1, ch), "")
	p2 := s.publish(t, s.msg("a", 2, ch), "")
	h := s.since(t, ch, 0, 10)
	if time.Since(start) < s.cfg.HistoryAge/2 {
		// Within the age, everything is kept.
		if h.Truncated || !slices.Equal(seqs(h.Events), []uint64{p1.Seq, p2.Seq}) {
			t.Fatalf("fresh history = %v Truncated=%v", seqs(h.Events), h.Truncated)
		}
	}
	roomstest.Eventually(t, "events older than the history age to be dropped", func() bool {
		return s.since(t, ch, 0, 10).Truncated
	})
	if time.Since(start) < s.cfg.HistoryAge {
		t.Fatalf("events dropped after %v, before the history age %v", time.Since(start), s.cfg.HistoryAge)
	}
	roomstest.Eventually(t, "both events to be dropped", func() bool {
		return len(s.since(t, ch, 0, 10).Events) == 0
	})
	if got := s.since(t, ch, p1.Seq, 10); !got.Truncated {
		t.Fatalf("Since(%d) is not Truncated although %d was dropped", p1.Seq, p2.Seq)
	}
	if got := s.since(t, ch, p2.Seq, 10); got.Truncated || len(got.Events) != 0 {
		t.Fatalf("Since(last event) = %v Truncated=%v; nothing after it was dropped", seqs(got.Events), got.Truncated)
	}
	if head := s.head(t, ch); head != p2.Seq {
		t.Fatalf("Head = %d after retention; want %d", head, p2.Seq)
	}
	p3 := s.publish(t, s.msg("a", 3, ch), "")
	if got := s.since(t, ch, p2.Seq, 10); got.Truncated || !slices.Equal(seqs(got.Events), []uint64{p3.Seq}) {
		t.Fatalf("Since(%d) = %v Truncated=%v; want [%d]", p2.Seq, seqs(got.Events), got.Truncated, p3.Seq)
	}
	if got := s.since(t, ch, 0, 10); !got.Truncated || !slices.Equal(seqs(got.Events), []uint64{p3.Seq}) {
		t.Fatalf("Since(0) = %v Truncated=%v; want [%d] Truncated", seqs(got.Events), got.Truncated, p3.Seq)
	}
}

func testIdempotency(t *testing.T, s *suite) {
	a, b := s.channel("a"), s.channel("b")
	r := newRecorder()
	s.subscribe(t, b, r)
	key := s.channel("key-1")

	first := s.publish(t, s.msg("first", 1, a), key)
	if first.Duplicate {
		t.Fatal("first publish with a key is marked Duplicate")
	}
	headB := s.head(t, b)
	// A retry answers what the first publish did, whatever it carries.
	again := s.publish(t, s.msg("second", 2, b), key)
	want := first
	want.Duplicate = true
	if again.ID != want.ID || again.Seq != want.Seq || again.Event != want.Event || !slices.Equal(again.Channels, want.Channels) || !again.Duplicate {
		t.Fatalf("retry answered %+v; want %+v", again, want)
	}
	if h := s.head(t, b); h != headB {
		t.Fatalf("a duplicate publish moved Head(b) from %d to %d", headB, h)
	}
	if got := s.since(t, a, 0, 10); !slices.Equal(seqs(got.Events), []uint64{first.Seq}) {
		t.Fatalf("history of a = %v; want only %d", seqs(got.Events), first.Seq)
	}
	marker := s.publish(t, s.msg("marker", 3, b), "")
	if got := r.waitSeq(t, b, marker.Seq); len(got) != 1 {
		t.Fatalf("a duplicate publish was delivered live: %d deliveries", len(got))
	}
	// Another key, or none, publishes.
	other := s.publish(t, s.msg("first", 1, a), s.channel("key-2"))
	n1 := s.publish(t, s.msg("first", 1, a), "")
	n2 := s.publish(t, s.msg("first", 1, a), "")
	if other.Duplicate || n1.Duplicate || n2.Duplicate || other.Seq <= first.Seq || n1.Seq <= other.Seq || n2.Seq <= n1.Seq {
		t.Fatalf("publishes without the key were not published anew: %+v %+v %+v", other, n1, n2)
	}
	// Volatile publishes are deduplicated too.
	vkey := s.channel("key-v")
	v1 := s.publish(t, rooms.Message{Channels: []string{b}, Event: "v", Volatile: true}, vkey)
	v2 := s.publish(t, rooms.Message{Channels: []string{b}, Event: "v", Volatile: true}, vkey)
	if v1.Duplicate || !v2.Duplicate || v2.Seq != 0 || v2.ID != "" {
		t.Fatalf("volatile retry answered %+v after %+v", v2, v1)
	}
	marker = s.publish(t, s.msg("marker", 4, b), "")
	got := r.waitSeq(t, b, marker.Seq)
	volatiles := 0
	for _, d := range got {
		if d.ev.Volatile {
			volatiles++
		}
	}
	if volatiles != 1 {
		t.Fatalf("volatile publish with a repeated key delivered %d times", volatiles)
	}
}

func testIdempotencyConcurrent(t *testing.T, s *suite) {
	ch, key := s.channel("a"), s.channel("key")
	const n = 8
	results := make(chan rooms.Published, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.bb.Publish(context.Background(), s.msg("e", i, ch), key)
			if err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			results <- p
		}()
	}
	wg.Wait()
	close(results)
	originals := 0
	var seq uint64
	for p := range results {
		if !p.Duplicate {
			originals++
		}
		if seq != 0 && p.Seq != seq {
			t.Fatalf("concurrent retries answered Seqs %d and %d", seq, p.Seq)
		}
		seq = p.Seq
	}
	if originals != 1 {
		t.Fatalf("%d of %d concurrent publishes with one key were not duplicates; want 1", originals, n)
	}
	if got := s.since(t, ch, 0, 100); len(got.Events) != 1 {
		t.Fatalf("history holds %d events; want 1", len(got.Events))
	}
}

// A resend with a publish's token (what an unknown outcome hands out) is
// answered with the stored event and stores nothing, for a multi-channel
// publish too: one token names the whole publish.
func testPublishToken(t *testing.T, s *suite) {
	a, b := s.channel("a"), s.channel("b")
	r := newRecorder()
	s.subscribe(t, a, r)
	s.subscribe(t, b, r)
	token := rooms.NewPublishToken(time.Now())
	m := s.msg("first", 1, a, b)
	m.Token = token
	first := s.publish(t, m, "")
	if first.Duplicate || first.Seq == 0 {
		t.Fatalf("first publish with a token answered %+v", first)
	}
	again := s.publish(t, m, "")
	if !again.Duplicate || again.ID != first.ID || again.Seq != first.Seq || again.Event != first.Event || !slices.Equal(again.Channels, first.Channels) {
		t.Fatalf("resend answered %+v; want %+v with Duplicate", again, first)
	}
	for _, ch := range []string{a, b} {
		if got := s.since(t, ch, 0, 10); !slices.Equal(seqs(got.Events), []uint64{first.Seq}) {
			t.Fatalf("history of %s = %v after a resend; want only %d", ch, seqs(got.Events), first.Seq)
		}
	}
	marker := s.publish(t, s.msg("marker", 2, a, b), "")
	for _, ch := range []string{a, b} {
		var on []delivery
		for _, d := range r.waitSeq(t, ch, marker.Seq) {
			if d.ev.Channels[d.i] == ch {
				on = append(on, d)
			}
		}
		if got := on; len(got) != 2 {
			t.Fatalf("%s received %d events; want the first once and the marker", ch, len(got))
		}
	}
	// The token answers alongside a caller's key, and another token
	// publishes anew.
	keyed := m
	keyed.Token = rooms.NewPublishToken(time.Now())
	k1 := s.publish(t, keyed, s.channel("key"))
	k2 := s.publish(t, keyed, "")
	k3 := s.publish(t, rooms.Message{Channels: m.Channels, Event: m.Event, Data: m.Data}, s.channel("key"))
	if k1.Duplicate || k1.Seq <= marker.Seq || !k2.Duplicate || k2.Seq != k1.Seq || !k3.Duplicate || k3.Seq != k1.Seq {
		t.Fatalf("token and key answered %+v, %+v, %+v", k1, k2, k3)
	}
	// Volatile publishes are named by their token too.
	v := rooms.Message{Channels: []string{b}, Event: "v", Volatile: true, Token: rooms.NewPublishToken(time.Now())}
	v1 := s.publish(t, v, "")
	v2 := s.publish(t, v, "")
	if v1.Duplicate || !v2.Duplicate || v2.ID != "" || v2.Seq != 0 {
		t.Fatalf("volatile resend answered %+v after %+v", v2, v1)
	}
}

func testPublishTokenConcurrent(t *testing.T, s *suite) {
	ch := s.channel("a")
	m := s.msg("e", 1, ch)
	m.Token = rooms.NewPublishToken(time.Now())
	const n = 8
	results := make(chan rooms.Published, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.bb.Publish(context.Background(), m, "")
			if err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			results <- p
		}()
	}
	wg.Wait()
	close(results)
	originals := 0
	for p := range results {
		if !p.Duplicate {
			originals++
		}
	}
	if originals != 1 {
		t.Fatalf("%d of %d concurrent sends of one token were not duplicates; want 1", originals, n)
	}
	if got := s.since(t, ch, 0, 100); len(got.Events) != 1 {
		t.Fatalf("history holds %d events; want 1", len(got.Events))
	}
}

// A token older than the window may have lost its record: the resend is
// refused rather than risk storing the event twice. So is one from too far
// ahead, and a malformed one never reaches the backbone.
func testPublishTokenExpired(t *testing.T, s *suite) {
	ch := s.channel("a")
	for _, minted := range []time.Time{
		time.Now().Add(-rooms.PublishTokenWindow - time.Minute),
		time.Now().Add(rooms.PublishTokenWindow + time.Minute),
	} {
		m := s.msg("late", 1, ch)
		m.Token = rooms.NewPublishToken(minted)
		if p, err := s.bb.Publish(context.Background(), m, ""); !errors.Is(err, rooms.ErrPublishTokenExpired) {
			t.Fatalf("a token minted at %s answered %+v, %v; want ErrPublishTokenExpired", minted, p, err)
		}
	}
	if got := s.since(t, ch, 0, 10); len(got.Events) != 0 {
		t.Fatalf("refused resends stored %v", seqs(got.Events))
	}
}

func testVolatile(t *testing.T, s *suite) {
	a, b := s.channel("a"), s.channel("b")
	r := newRecorder()
	s.subscribe(t, a, r)
	s.subscribe(t, b, r)
	before := s.publish(t, s.msg("kept", 1, a), "")
	p := s.publish(t, rooms.Message{Channels: []string{a, b}, Event: "typing", Data: json.RawMessage(`true`), Volatile: true}, "")
	if p.Seq != 0 || p.ID != "" || p.Duplicate {
		t.Fatalf("volatile publish answered %+v; want Seq 0 and no id", p)
	}
	got := r.waitFor(t, "the volatile event on both channels", func(got []delivery) bool {
		n := 0
		for _, d := range got {
			if d.ev.Volatile {
				n++
			}
		}
		return n == 2
	})
	var through []string
	for _, d := range got {
		if !d.ev.Volatile {
			continue
		}
		through = append(through, d.ev.Channels[d.i])
		if d.ev.Seq != 0 || d.ev.ID() != "" || d.ev.Event != "typing" {
			t.Fatalf("volatile event delivered with Seq %d id %q event %q", d.ev.Seq, d.ev.ID(), d.ev.Event)
		}
		var env struct {
			ID *string `json:"id"`
		}
		if err := json.Unmarshal(d.ev.Envelope(d.i), &env); err != nil || env.ID != nil {
			t.Fatalf("volatile envelope %s has an id", d.ev.Envelope(d.i))
		}
	}
	slices.Sort(through)
	if !slices.Equal(through, []string{a, b}) {
		t.Fatalf("volatile event delivered through %v", through)
	}
	if h := s.since(t, a, 0, 10); !slices.Equal(seqs(h.Events), []uint64{before.Seq}) {
		t.Fatalf("history of a = %v; volatile events must not be retained", seqs(h.Events))
	}
	if h := s.since(t, b, 0, 10); len(h.Events) != 0 {
		t.Fatalf("history of b = %v; volatile events must not be retained", seqs(h.Events))
	}
	if h := s.head(t, a); h != before.Seq {
		t.Fatalf("a volatile event moved Head(a) to %d", h)
	}
	if got := s.before(t, a, 0, 10); !slices.Equal(seqs(got), []uint64{before.Seq}) {
		t.Fatalf("Before(a) = %v", seqs(got))
	}
	after := s.publish(t, s.msg("kept", 2, a), "")
	if after.Seq <= before.Seq {
		t.Fatalf("Seq went from %d to %d across a volatile event", before.Seq, after.Seq)
	}
	// Nobody listens: publishing volatile is still fine.
	if _, err := s.bb.Publish(context.Background(), rooms.Message{Channels: []string{s.channel("nobody")}, Event: "v", Volatile: true}, ""); err != nil {
		t.Fatalf("volatile publish without subscribers: %v", err)
	}
}

func testSessions(t *testing.T, s *suite) {
	ctx := context.Background()
	id1, id2 := s.channel("sess1"), s.channel("sess2")
	chs := []string{s.channel("a"), s.nsChannel("chat", "b")}
	if err := s.bb.SaveSession(ctx, id1, chs, time.Minute); err != nil {
		t.Fatalf("SaveSession: %v", err)
	}
	chs[0] = "mutated after save"
	load := func(id string) ([]string, bool) {
		t.Helper()
		got, ok, err := s.bb.LoadSession(ctx, id)
		if err != nil {
			t.Fatalf("LoadSession(%s): %v", id, err)
		}
		return got, ok
	}
	if got, ok := load(id1); !ok || !slices.Equal(got, []string{s.channel("a"), s.nsChannel("chat", "b")}) {
		t.Fatalf("LoadSession = %v, %v; want the saved channels", got, ok)
	}
	if got, ok := load(s.channel("never-saved")); ok || len(got) != 0 {
		t.Fatalf("LoadSession of an unknown id = %v, %v", got, ok)
	}
	// Saving again replaces the room set; sessions are independent.
	if err := s.bb.SaveSession(ctx, id1, []string{s.channel("c")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.bb.SaveSession(ctx, id2, []string{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, ok := load(id1); !ok || !slices.Equal(got, []string{s.channel("c")}) {
		t.Fatalf("LoadSession after re-save = %v, %v", got, ok)
	}
	if got, ok := load(id2); !ok || len(got) != 0 {
		t.Fatalf("LoadSession of an empty session = %v, %v; want present and empty", got, ok)
	}
	// Expiry.
	short := s.channel("short")
	start := time.Now()
	if err := s.bb.SaveSession(ctx, short, []string{s.channel("a")}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, ok := load(short); !ok && time.Since(start) < 150*time.Millisecond {
		t.Fatal("session expired before its ttl")
	}
	roomstest.Eventually(t, "the session to expire", func() bool {
		_, ok := load(short)
		return !ok
	})
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("session expired after %v, before its ttl", time.Since(start))
	}
	if _, ok := load(id1); !ok {
		t.Fatal("a longer session expired with the short one")
	}
	// Saving refreshes the ttl.
	refreshed := s.channel("refreshed")
	if err := s.bb.SaveSession(ctx, refreshed, nil, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.bb.SaveSession(ctx, refreshed, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // nothing to await: the session must outlive its first ttl
	if _, ok := load(refreshed); !ok {
		t.Fatal("SaveSession did not extend the session's ttl")
	}
}

// A token is its caller's and names one message: another caller's publish
// with its text is a publish of its own, and its caller's resend with other
// channels, event or body is refused rather than answered for an event
// stored nowhere.
func testPublishTokenBound(t *testing.T, s *suite) {
	a, b := s.channel("a"), s.channel("b")
	token := rooms.NewPublishToken(time.Now())
	bob := s.msg("e", 1, a)
	bob.Token, bob.Caller = token, "user:bob"
	first := s.publish(t, bob, "")
	mallory := bob
	mallory.Caller = "user:mallory"
	if p := s.publish(t, mallory, ""); p.Duplicate || p.Seq == first.Seq {
		t.Fatalf("another caller's publish with the token answered %+v; Bob's was %+v", p, first)
	}
	for name, m := range map[string]rooms.Message{
		"channels": {Channels: []string{b}, Event: "e", Data: bob.Data},
		"event":    {Channels: []string{a}, Event: "f", Data: bob.Data},
		"body":     {Channels: []string{a}, Event: "e", Data: json.RawMessage(`{"n":2}`)},
		"volatile": {Channels: []string{a}, Event: "e", Data: bob.Data, Volatile: true},
	} {
		m.Token, m.Caller = token, bob.Caller
		if p, err := s.bb.Publish(context.Background(), m, ""); !errors.Is(err, rooms.ErrPublishTokenReused) {
			t.Fatalf("the token resent with other %s answered %+v, %v; want ErrPublishTokenReused", name, p, err)
		}
	}
	if got := s.since(t, b, 0, 10); len(got.Events) != 0 {
		t.Fatalf("history of b = %v", seqs(got.Events))
	}
	if p := s.publish(t, bob, ""); !p.Duplicate || p.Seq != first.Seq {
		t.Fatalf("Bob's resend answered %+v; want %+v with Duplicate", p, first)
	}
}

// testClientBindings checks rooms.ClientRegistry, which every backbone of
// this project implements: a client id is bound to its first owner until
// its binding expires, renewed by that owner alone, and counted.
func testClientBindings(t *testing.T, s *suite) {
	reg, ok := rooms.BackboneAs[rooms.ClientRegistry](s.bb)
	if !ok {
		t.Fatal("the backbone does not bind client ids (rooms.ClientRegistry)")
	}
	ctx := context.Background()
	client := s.channel("client")
	bind := func(owner, secret string, ttl time.Duration) (string, error) {
		t.Helper()
		bound, _, err := reg.BindClient(ctx, client, owner, secret, ttl)
		return bound, err
	}
	if got, err := bind("u:bob", "secret-1", time.Minute); err != nil || got != "secret-1" {
		t.Fatalf("first bind = %q, %v; want secret-1", got, err)
	}
	owner, secret, ok, err := reg.ClientBinding(ctx, client)
	if err != nil || !ok || owner != "u:bob" || secret != "secret-1" {
		t.Fatalf("ClientBinding = %q %q %v %v; want u:bob secret-1", owner, secret, ok, err)
	}
	// The owner renews it and keeps the secret it was bound with.
	if got, err := bind("u:bob", "secret-2", time.Minute); err != nil || got != "secret-1" {
		t.Fatalf("renewal = %q, %v; want the bound secret-1", got, err)
	}
	if _, err := bind("u:mallory", "secret-3", time.Minute); !errors.Is(err, rooms.ErrClientInUse) {
		t.Fatalf("bind by another owner: %v, want ErrClientInUse", err)
	}
	if n, err := reg.ClientBindings(ctx); err != nil || n < 1 {
		t.Fatalf("ClientBindings = %d, %v; want at least 1", n, err)
	}
	if _, _, ok, err := reg.ClientBinding(ctx, s.channel("never-bound")); err != nil || ok {
		t.Fatalf("ClientBinding of a free id = %v, %v", ok, err)
	}

	// An expired binding frees the id for anyone.
	short := s.channel("short")
	if _, _, err := reg.BindClient(ctx, short, "a:x", "x", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	roomstest.Eventually(t, "the binding expires", func() bool {
		_, _, ok, err := reg.ClientBinding(ctx, short)
		return err == nil && !ok
	})
	if got, created, err := reg.BindClient(ctx, short, "a:y", "y", time.Minute); err != nil || got != "y" || !created {
		t.Fatalf("bind after expiry = %q, %v, %v; want y, created", got, created, err)
	}
	// Only its owner, with its secret, takes a binding back.
	if _, created, err := reg.BindClient(ctx, short, "a:y", "y", time.Minute); err != nil || created {
		t.Fatalf("renewal: created %v, %v; want a renewal", created, err)
	}
	for _, other := range [][2]string{{"a:x", "y"}, {"a:y", "x"}} {
		if err := reg.UnbindClient(ctx, short, other[0], other[1]); err != nil {
			t.Fatal(err)
		}
	}
	if owner, _, ok, err := reg.ClientBinding(ctx, short); err != nil || !ok || owner != "a:y" {
		t.Fatalf("after others' unbinds: %q %v %v; want a:y's binding kept", owner, ok, err)
	}
	if err := reg.UnbindClient(ctx, short, "a:y", "y"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := reg.ClientBinding(ctx, short); err != nil || ok {
		t.Fatalf("after the owner's unbind: bound %v, %v", ok, err)
	}
}
