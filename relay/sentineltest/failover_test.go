package sentineltest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// room is the room the failover tests publish to.
const room = "failover"

// outcome is how the relay answered one publish.
type outcome struct {
	n      int    // the event's data
	status int    // 0: the request itself failed
	code   string // the error code of a 503
	id     string // of a 202
	key    string // Idempotency-Key of an outcome_unknown
}

// harness is a relay over a Sentinel backbone with publishers and a stream.
type harness struct {
	t      *testing.T
	top    *redistest.Topology
	bb     *redis.Backbone
	r      *relaytest.Relay
	stream *relaytest.Stream

	next     atomic.Int64
	accepted atomic.Int64
	mu       sync.Mutex
	outcomes []outcome
}

func newHarness(t *testing.T, top *redistest.Topology) *harness {
	return newHarnessFrom(t, top, 0)
}

// newHarnessFrom is newHarness for one of several relays on the topology:
// its publishes' data count from base, apart from the others'.
func newHarnessFrom(t *testing.T, top *redistest.Topology, base int64) *harness {
	bb := sentinelBackbone(t, top, redis.Options{HistorySize: 100_000, OpTimeout: 2 * time.Second})
	r := relaytest.Start(t, relaytest.Options{Backbone: bb, Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})}})
	h := &harness{t: t, top: top, bb: bb, r: r}
	h.next.Store(base)
	h.stream = r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.APIKey)})
	h.stream.Connected(t)
	// The stream is live once it receives what is published after it.
	first := h.publishOnce(context.Background(), int(h.next.Add(1)), "")
	if first.status != http.StatusAccepted {
		t.Fatalf("first publish: %+v", first)
	}
	h.stream.UntilEventID(t, first.id) // consumed here: not checked
	return h
}

// publishOnce sends one publish of n (with key, when resending) and reads
// the answer; it never fails the test, as publishers run in goroutines.
func (h *harness) publishOnce(ctx context.Context, n int, key string) outcome {
	o := outcome{n: n}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.r.URL+"/v1/rooms/"+room+"/events",
		strings.NewReader(`{"event":"n","data":`+strconv.Itoa(n)+`}`))
	if err != nil {
		return o
	}
	req.Header = relaytest.Bearer(relaytest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := h.r.Client().Do(req)
	if err != nil {
		return o
	}
	defer resp.Body.Close()
	var body struct {
		ID    string `json:"id"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	_ = json.Unmarshal(buf.Bytes(), &body)
	o.status, o.id, o.code, o.key = resp.StatusCode, body.ID, body.Error.Code, resp.Header.Get("Idempotency-Key")
	return o
}

func (h *harness) record(o outcome) {
	h.mu.Lock()
	h.outcomes = append(h.outcomes, o)
	h.mu.Unlock()
	if o.status == http.StatusAccepted {
		h.accepted.Add(1)
	}
}

// publishers publishes from several goroutines until stop is called.
func (h *harness) publishers(n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				o := h.publishOnce(ctx, int(h.next.Add(1)), "")
				if ctx.Err() != nil && o.status == 0 {
					return // cut short by stop: not an answer
				}
				h.record(o)
				if o.status != http.StatusAccepted {
					time.Sleep(20 * time.Millisecond) // as a client backs off
				}
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// awaitAccepted waits until n more publishes were accepted.
func (h *harness) awaitAccepted(n int64) {
	h.t.Helper()
	target := h.accepted.Load() + n
	deadline := time.Now().Add(redistest.TopologyWait)
	for h.accepted.Load() < target {
		if time.Now().After(deadline) {
			h.t.Fatalf("fewer than %d publishes accepted within %s", n, redistest.TopologyWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// check resends every publish answered outcome_unknown, then checks every
// answer against what the stream delivered and what history holds: no
// accepted event lost without a roomcast:reset after it, none delivered
// twice, none refused that was stored, and every answer's id the stored
// event's. It returns the number of resets the stream got and of accepted
// publishes the final history lacks.
func (h *harness) check() (resets, lost int) {
	t := h.t
	t.Helper()
	h.mu.Lock()
	outcomes := append([]outcome(nil), h.outcomes...)
	h.mu.Unlock()
	// What the relay answered, by n.
	acceptedID := map[int]string{}
	failed := map[int]bool{}
	unknown := 0
	for _, o := range outcomes {
		switch {
		case o.status == http.StatusAccepted:
			acceptedID[o.n] = o.id
		case o.status == http.StatusServiceUnavailable && o.code == "outcome_unknown":
			unknown++
			if o.key == "" {
				t.Fatalf("publish %d: outcome_unknown without an Idempotency-Key", o.n)
			}
			re := h.publishOnce(context.Background(), o.n, o.key)
			if re.status != http.StatusAccepted {
				t.Fatalf("resend of %d with its Idempotency-Key: %+v", o.n, re)
			}
			acceptedID[o.n] = re.id
		case o.status == http.StatusServiceUnavailable && o.code == "backbone_unavailable":
			failed[o.n] = true
		case o.status == 0:
			t.Fatalf("publish %d: no answer", o.n)
		default:
			t.Fatalf("publish %d: unexpected answer %+v", o.n, o)
		}
	}
	// The last event closes what the stream must have received.
	last := h.publishOnce(context.Background(), int(h.next.Add(1)), "")
	if last.status != http.StatusAccepted {
		t.Fatalf("closing publish: %+v", last)
	}
	acceptedID[last.n] = last.id
	finalEpoch, _, err := rooms.ParseEventID(last.id)
	if err != nil {
		t.Fatal(err)
	}
	events := h.stream.UntilEventID(t, last.id)

	// History of the final primary, by n.
	stored := map[int]string{}
	hist, err := h.bb.Since(context.Background(), room, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range hist.Events {
		n, err := strconv.Atoi(string(ev.Message.Data))
		if err != nil {
			t.Fatalf("history entry %s: %q", ev.ID(), ev.Message.Data)
		}
		if prev, dup := stored[n]; dup {
			t.Errorf("history holds %d twice: %s and %s", n, prev, ev.ID())
		}
		stored[n] = ev.ID()
	}

	// An event may come twice only across a reset, its first copy in a
	// history since lost: a publish whose reply was lost with the old
	// primary is sent again to the new one (the same token, which the
	// new primary never got), and the copy the old primary had delivered
	// is gone with its history.
	lastReset := -1
	for i, ev := range events {
		if ev.Event == "roomcast:reset" {
			if !strings.Contains(ev.Data, `"history_lost"`) {
				t.Errorf("reset %s, want history_lost", ev.Data)
			}
			resets++
			lastReset = i
		}
	}
	delivered := map[int]string{} // the last copy
	resetSince := map[int]bool{}  // a reset came after the last copy
	for i, ev := range events {
		if ev.Event == "roomcast:reset" {
			for n := range resetSince {
				resetSince[n] = true
			}
			continue
		}
		if ev.Event != "n" {
			continue
		}
		env := ev.Envelope(t)
		n, err := strconv.Atoi(string(env.Data))
		if err != nil || env.ID == nil {
			t.Fatalf("event %q", ev.Data)
		}
		id := *env.ID
		if prev, dup := delivered[n]; dup {
			prevEpoch, _, _ := rooms.ParseEventID(prev)
			if !resetSince[n] || prevEpoch == finalEpoch || stored[n] == prev {
				t.Errorf("event %d delivered twice: %s and %s", n, prev, id)
			}
		}
		delivered[n], resetSince[n] = id, false
		epoch, _, _ := rooms.ParseEventID(id)
		if epoch != finalEpoch && i > lastReset && resets > 0 {
			// No reset after it would tell of its loss.
			t.Errorf("event %s of an old epoch delivered after the last reset, into %s", id, finalEpoch)
		}
		if epoch == finalEpoch && i < lastReset {
			t.Errorf("event %s of the final epoch delivered before the last reset", id)
		}
	}
	for n, id := range acceptedID {
		epoch, _, _ := rooms.ParseEventID(id)
		got, ok := delivered[n]
		switch {
		case ok && got != id:
			t.Errorf("publish %d answered %s, delivered as %s", n, id, got)
		case stored[n] != "" && stored[n] != id:
			t.Errorf("publish %d answered %s, stored as %s", n, id, stored[n])
		case epoch == finalEpoch && !ok:
			t.Errorf("publish %d (%s) accepted in the final epoch, never delivered", n, id)
		case epoch != finalEpoch && !ok && resets == 0:
			t.Errorf("publish %d (%s) lost without a reset", n, id)
		}
		if stored[n] == "" {
			lost++
			if epoch == finalEpoch {
				t.Errorf("publish %d (%s) accepted in the final epoch, not in history", n, id)
			}
		}
	}
	for n := range failed {
		if stored[n] != "" || delivered[n] != "" {
			t.Errorf("publish %d answered backbone_unavailable, yet stored (%s) or delivered (%s)", n, stored[n], delivered[n])
		}
	}
	t.Logf("%d publishes: %d accepted, %d outcome_unknown (resent), %d refused; %d accepted and lost; %d resets",
		len(outcomes), len(acceptedID), unknown, len(failed), lost, resets)
	return resets, lost
}

// A cursor from before the failover resumes with roomcast:reset
// history_lost, never with the events after it in the new history.
func (h *harness) checkOldCursor(cursor string) {
	h.t.Helper()
	s := h.r.Subscribe(h.t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{
		Header: relaytest.BearerMap(relaytest.APIKey), LastEventID: cursor})
	defer s.Close()
	for {
		ev := s.NextEvent(h.t)
		switch ev.Event {
		case "roomcast:connected":
			continue
		case "roomcast:reset":
			if !strings.Contains(ev.Data, `"history_lost"`) {
				h.t.Fatalf("resume from before the failover: reset %s, want history_lost", ev.Data)
			}
			return
		default:
			h.t.Fatalf("resume from before the failover: %s %s before any reset", ev.Event, ev.Data)
		}
	}
}

// The primary dies while publishes go on; the replica had missed the last
// acknowledged ones (it was stopped), and Sentinel promotes it. Every
// client hears of the loss, nothing is delivered twice, every answer was
// true.
func TestFailoverPrimaryKilled(t *testing.T) {
	top := redistest.NewTopology(t, redistest.TopologyOptions{})
	h := newHarness(t, top)
	stop := h.publishers(4)
	h.awaitAccepted(50)
	cursor := h.stream.LastEventID()
	// Writes acknowledged by the primary that the replica never gets: the
	// replica, stopped, cannot reconnect after the primary drops it.
	top.Replica.Signal(syscall.SIGSTOP)
	if err := top.Primary.Client().ClientKillByFilter(context.Background(), "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	// Four publishers: of eight answers after the link dropped, four at
	// least were stored after it.
	h.awaitAccepted(8)
	top.Primary.Kill()
	top.Replica.Signal(syscall.SIGCONT)
	top.AwaitPrimary(top.Replica)
	h.awaitAccepted(50)
	stop()
	resets, lost := h.check()
	if resets == 0 {
		t.Error("no roomcast:reset after a promotion that lost acknowledged writes")
	}
	if lost < 4 {
		t.Errorf("%d accepted publishes lost, want at least the 4 the replica never got", lost)
	}
	h.checkOldCursor(cursor)
}

// Two relays on one topology, both publishing, when the primary dies with
// writes its replica missed: each relay's stream hears of the loss, and
// every answer either gave was true.
func TestFailoverTwoRelays(t *testing.T) {
	top := redistest.NewTopology(t, redistest.TopologyOptions{})
	hs := []*harness{newHarnessFrom(t, top, 0), newHarnessFrom(t, top, 1_000_000)}
	var stops []func()
	for _, h := range hs {
		stops = append(stops, h.publishers(2))
	}
	for _, h := range hs {
		h.awaitAccepted(30)
	}
	top.Replica.Signal(syscall.SIGSTOP)
	if err := top.Primary.Client().ClientKillByFilter(context.Background(), "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		h.awaitAccepted(4)
	}
	top.Primary.Kill()
	top.Replica.Signal(syscall.SIGCONT)
	top.AwaitPrimary(top.Replica)
	for _, h := range hs {
		h.awaitAccepted(30)
	}
	for _, stop := range stops {
		stop()
	}
	for i, h := range hs {
		if resets, _ := h.check(); resets == 0 {
			t.Errorf("relay %d: no roomcast:reset after a promotion that lost acknowledged writes", i)
		}
	}
}

// SENTINEL FAILOVER while publishing: the old primary is demoted to a
// replica of the promoted one (and loses what it accepted meanwhile).
func TestFailoverSentinelCommand(t *testing.T) {
	top := redistest.NewTopology(t, redistest.TopologyOptions{})
	h := newHarness(t, top)
	stop := h.publishers(4)
	h.awaitAccepted(50)
	cursor := h.stream.LastEventID()
	if err := top.SentinelClient(0).Failover(context.Background(), redistest.SentinelMaster).Err(); err != nil {
		t.Fatal(err)
	}
	top.AwaitPrimary(top.Replica)
	h.awaitAccepted(50)
	stop()
	if resets, _ := h.check(); resets == 0 {
		t.Error("no roomcast:reset after a promotion")
	}
	h.checkOldCursor(cursor)
}

// A primary restarted from its own intact persistence lost nothing: no
// client is reset, every event is delivered once, and a cursor from before
// the restart resumes without a reset. With a replica attached, the
// restarted primary's master_replid2 is its old replid, as a promoted
// replica's would be.
func TestPrimaryRestartKeepsEpoch(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []string
		stop func(*redistest.Node)
	}{
		{"rdb", nil, (*redistest.Node).Shutdown},
		{"aof", []string{"--appendonly", "yes", "--appendfsync", "always"}, (*redistest.Node).Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The sentinels wait longer than the restart: no failover.
			top := redistest.NewTopology(t, redistest.TopologyOptions{DownAfter: time.Minute, Data: tc.data})
			h := newHarness(t, top)
			for range 20 {
				h.mustPublish()
			}
			cursor := h.stream.LastEventID()
			before, err := h.bb.Epoch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			tc.stop(top.Primary)
			top.Primary.Restart()
			// Publishes are answered again once the relay reconnected.
			deadline := time.Now().Add(redistest.TopologyWait)
			for {
				o := h.publishOnce(context.Background(), int(h.next.Add(1)), "")
				if o.status == http.StatusServiceUnavailable && o.code == "outcome_unknown" {
					o = h.publishOnce(context.Background(), o.n, o.key)
				}
				if o.status == http.StatusAccepted {
					h.record(o)
					break
				}
				if o.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
					t.Fatalf("publish after the restart: %+v", o)
				}
				time.Sleep(50 * time.Millisecond)
			}
			info, err := top.Primary.Client().Info(context.Background(), "replication").Result()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("restarted primary: %s", replids(info))
			for range 20 {
				h.mustPublish()
			}
			if resets, _ := h.check(); resets != 0 {
				t.Errorf("%d resets after a restart from intact persistence", resets)
			}
			if after, _ := h.bb.Epoch(context.Background()); after != before {
				t.Errorf("epoch %s became %s", before, after)
			}
			s := h.r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{
				Header: relaytest.BearerMap(relaytest.APIKey), LastEventID: cursor})
			defer s.Close()
			ev := s.NextEvent(t)
			for ev.Event == "roomcast:connected" {
				ev = s.NextEvent(t)
			}
			if ev.Event != "n" {
				t.Errorf("resume from before the restart began with %s %s", ev.Event, ev.Data)
			}
		})
	}
}

func (h *harness) mustPublish() {
	h.t.Helper()
	o := h.publishOnce(context.Background(), int(h.next.Add(1)), "")
	if o.status != http.StatusAccepted {
		h.t.Fatalf("publish: %+v", o)
	}
	h.record(o)
}

// replids picks the replication ids out of INFO replication.
func replids(info string) string {
	var out []string
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "master_replid") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, " ")
}

// A primary restarted from a stale snapshot keeps its epoch but lost the
// last acknowledged writes; an instance that was given a position above
// what Redis now holds starts a new epoch as soon as it reconnects, before
// anything is published, and its streams are reset by the next event
// instead of silently skipping the events that reuse the lost positions.
func TestStaleSnapshotStartsNewEpoch(t *testing.T) {
	n := redistest.StartNode(t, t.TempDir(), "--save", "", "--appendonly", "no")
	ctx := context.Background()
	bb, err := redis.New(ctx, "redis://"+n.Addr(), redis.Options{OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bb.Close() })
	r := relaytest.Start(t, relaytest.Options{Backbone: bb, Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})}})
	h := &harness{t: t, bb: bb, r: r}
	h.stream = r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.APIKey)})
	h.stream.Connected(t)
	for range 5 {
		h.mustPublish()
	}
	if err := n.Client().Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		h.mustPublish() // acknowledged, and lost with the restart
	}
	before, err := bb.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.Kill()
	n.Restart()
	deadline := time.Now().Add(redistest.TopologyWait)
	for {
		e, err := bb.Epoch(ctx)
		if err == nil && e != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("epoch still %s (%v) after a restart that lost acknowledged writes", e, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 5 {
		h.mustPublish()
	}
	resets, lost := h.check()
	if resets != 1 || lost != 5 {
		t.Errorf("%d resets, %d accepted publishes lost; want 1 reset for the 5 lost", resets, lost)
	}
}

// sentinelBackbone opens a backbone through top's sentinels, closed when
// the test ends.
func sentinelBackbone(t testing.TB, top *redistest.Topology, o redis.Options) *redis.Backbone {
	t.Helper()
	o.SentinelMaster = redistest.SentinelMaster
	if o.OpTimeout == 0 {
		o.OpTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), redistest.TopologyWait)
	defer cancel()
	b, err := redis.New(ctx, top.URL(), o)
	if err != nil {
		t.Fatalf("redis.New through sentinels: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
