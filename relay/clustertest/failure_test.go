package clustertest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// An instance killed with SIGKILL while a publisher keeps publishing
// through another: its clients reconnect elsewhere with their last cursor
// and receive every accepted event exactly once, in order.
func TestInstanceKilledUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	// Half single-room streams, half multi-room ones (whose sessions must
	// survive their instance).
	paths := []string{roomPath("load"), "/v1/stream?room=load"}
	var subs []*subscriber
	for i := range 20 {
		subs = append(subs, &subscriber{streams: []*stream{open(t, a, paths[i%2], server())}})
	}
	pub := startPublisher(t, []*node{b}, roomPath("load"), 4*time.Millisecond)
	pub.awaitAccepted(t, 150)
	// Every client holds a cursor before the crash.
	relaytest.Eventually(t, "every subscriber has an event", func() bool {
		for _, s := range subs {
			if s.last().lastID() == "" {
				return false
			}
		}
		return true
	})

	// Every client notices, and all come back at once to B and C with
	// their last cursor, as a reconnect storm would.
	a.kill()
	reopened := make([]*stream, len(subs))
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		s.last().waitEnded(t)
		cursor := s.last().lastID()
		wg.Go(func() {
			reopened[i], errs[i] = reopen([]*node{b, cc}[i%2], paths[i%2], server("Last-Event-ID", cursor))
		})
	}
	wg.Wait()
	for i, s := range subs {
		if errs[i] != nil {
			t.Fatalf("subscriber %d: %v", i, errs[i])
		}
		reopened[i].handshake(t)
		s.streams = append(s.streams, reopened[i])
	}
	pub.awaitAccepted(t, 150)
	pub.halt()
	if n := len(pub.outcomes()) - len(pub.accepted()); n > 0 {
		t.Errorf("%d publishes to B failed while A died", n)
	}
	want := pub.accepted()
	awaitEvents(t, subs, want)
	for i, s := range subs {
		for _, f := range s.frames() {
			if f.Event == "roomcast:reset" {
				t.Errorf("subscriber %d was reset: %s", i, f.Data)
			}
		}
	}
	t.Logf("%d subscribers received all %d events across the crash", len(subs), len(want))
}

// Redis stopped under load for about two seconds and started again, empty
// (the private server has no persistence): publishes during the outage are
// refused with 503 and Retry-After, never accepted — backbone_unavailable,
// or outcome_unknown when the call timed out and the relay cannot tell
// whether Redis took it (a publish in flight at the crash);
// open streams stay open with their heartbeats; after the restart they are
// told that history was lost and receive every event accepted since.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b := c.nodes[0], c.nodes[1]
	var subs []*subscriber
	for i := range 10 {
		subs = append(subs, &subscriber{streams: []*stream{open(t, []*node{a, b}[i%2], roomPath("storm"), server())}})
	}
	pub := startPublisher(t, c.nodes, roomPath("storm"), 5*time.Millisecond)
	pub.awaitAccepted(t, 50)

	c.redis.Stop()
	stopped := time.Now()
	// The outage lasts until every stream has had three more heartbeats
	// (-heartbeat 1s): two seconds at least, and proof that they go on.
	pings := make([]int, len(subs))
	for i, s := range subs {
		pings[i] = s.last().pingCount()
	}
	pub.await(t, "publishes fail", func(rs []pubResult) bool { return countStatus(rs, http.StatusServiceUnavailable) >= 3 })
	for i, s := range subs {
		s.last().waitPings(t, pings[i]+3)
	}
	ready := do(t, http.MethodGet, a.url+"/readyz", nil, "")
	if ready.status != http.StatusOK || !strings.Contains(string(ready.body), `"backbone":"down"`) {
		t.Errorf("/readyz during the outage: %d %s, want 200 with the backbone down", ready.status, ready.body)
	}
	restarting := time.Now()
	c.redis.Start()
	pub.awaitAccepted(t, 50)
	pub.halt()

	// Nothing was accepted while Redis was down, and every refusal says
	// to come back later.
	refused := 0
	for _, r := range pub.outcomes() {
		switch {
		case r.status == http.StatusAccepted:
			if r.start.After(stopped) && r.end.Before(restarting) {
				t.Errorf("a publish was accepted while Redis was down: %s", r.id)
			}
		case r.status != http.StatusServiceUnavailable || (r.code != "backbone_unavailable" && r.code != "outcome_unknown") || r.retryAfter == "":
			t.Errorf("publish answered %d %q, Retry-After %q (%v), want 503 backbone_unavailable or outcome_unknown with Retry-After",
				r.status, r.code, r.retryAfter, r.err)
		case r.start.After(stopped) && r.end.Before(restarting):
			refused++
		}
	}
	if refused == 0 {
		t.Error("no publish was refused during the outage")
	}
	// The restarted Redis is empty: events after it belong to a new epoch.
	var before, after []string
	accepted := pub.accepted()
	for _, id := range accepted {
		if epochOf(id) == epochOf(accepted[0]) {
			before = append(before, id)
		} else {
			after = append(after, id)
		}
	}
	if len(after) == 0 || epochOf(after[0]) != epochOf(after[len(after)-1]) {
		t.Fatalf("accepted %v: want one epoch before the outage and one after", accepted)
	}

	// Each stream: everything accepted before, the reset, everything after.
	for i, s := range subs {
		if s.last().ended() {
			t.Fatalf("subscriber %d: the stream on %s ended during the outage", i, s.last().node.name)
		}
	}
	// Poll with a deadline, then say what is missing.
	deadline := time.Now().Add(waitFor)
	for _, s := range subs {
		for !s.hasAll(after) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Redis died without persistence, so an event accepted just before
	// (one per publisher, at most) may never have been sent live, and is
	// gone from history: the reset that follows tells the client.
	lost := 0
	for i, s := range subs {
		var got, gotAfter []string
		resets := 0
		for _, f := range s.frames() {
			switch {
			case f.Event == "roomcast:reset":
				resets++
				if d := f.system(t); d.Reason != "history_lost" {
					t.Errorf("subscriber %d: reset %+v, want history_lost", i, d)
				}
			case f.eventID() != "" && resets == 0:
				got = append(got, f.eventID())
			case f.eventID() != "":
				gotAfter = append(gotAfter, f.eventID())
			}
		}
		if resets != 1 {
			t.Errorf("subscriber %d: %d resets, want 1", i, resets)
		}
		if len(got) < len(before)-len(c.nodes) || len(got) > len(before) {
			t.Errorf("subscriber %d on %s: %d of the %d events accepted before the outage arrived before the reset", i, s.last().node.name, len(got), len(before))
		} else if err := sameEvents(got, before[:len(got)]); err != nil {
			t.Errorf("subscriber %d on %s, before the outage: %v", i, s.last().node.name, err)
		}
		lost = max(lost, len(before)-len(got))
		if err := sameEvents(gotAfter, after); err != nil {
			t.Errorf("subscriber %d on %s, after the restart: %v", i, s.last().node.name, err)
		}
	}
	if lost > 0 {
		t.Logf("%d events accepted just before Redis died were never delivered; the reset said so", lost)
	}
	t.Logf("%d accepted before the outage, %d refused during it, %d accepted after", len(before), refused, len(after))
}

// When Redis drops the instances' pub/sub connections but keeps its data,
// no accepted event is lost: the instances resubscribe and catch up from
// history, in order, without a reset.
func TestPubSubConnectionsKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	var subs []*subscriber
	for i := range 12 {
		subs = append(subs, &subscriber{streams: []*stream{open(t, c.nodes[i%3], roomPath("wire"), server())}})
	}
	pub := startPublisher(t, c.nodes, roomPath("wire"), 2*time.Millisecond)
	rdb := c.redis.Client()
	killed := int64(0)
	for range 3 {
		pub.awaitAccepted(t, 50)
		n, err := rdb.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Int64()
		if err != nil {
			t.Fatal(err)
		}
		killed += n
	}
	pub.awaitAccepted(t, 50)
	pub.halt()
	if killed < 3 {
		t.Errorf("CLIENT KILL TYPE pubsub killed %d connections, want at least one per round", killed)
	}
	if n := len(pub.outcomes()) - len(pub.accepted()); n > 0 {
		t.Errorf("%d publishes failed", n)
	}
	awaitEvents(t, subs, pub.accepted())
	for i, s := range subs {
		for _, f := range s.frames() {
			if f.Event == "roomcast:reset" {
				t.Errorf("subscriber %d was reset: %s", i, f.Data)
			}
		}
	}

	// Commands still reach their owners over the renewed connections.
	m := open(t, c.nodes[0], "/v1/stream?room=wire", server())
	if ans := do(t, http.MethodPut, c.nodes[1].url+"/v1/connections/"+m.conn.Connection+"/rooms/other", server(), ""); ans.status != http.StatusNoContent {
		t.Errorf("join forwarded after the kills: %d %s", ans.status, ans.body)
	}
	var d struct{ Room string }
	if err := json.Unmarshal([]byte(m.expect(t, "roomcast:joined").Data), &d); err != nil || d.Room != "other" {
		t.Errorf("joined %+v (%v)", d, err)
	}
	t.Logf("%d events, %d pub/sub connections killed", len(pub.accepted()), killed)
}
