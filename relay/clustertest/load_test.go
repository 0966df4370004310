package clustertest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pubResult is the outcome of one publish made by a publisher.
type pubResult struct {
	start, end time.Time
	status     int    // 0 when the request failed
	code       string // error code of a non-202
	retryAfter string
	id         string // event id of a 202
	err        error
}

// publisher publishes to one room through one or more instances, one
// request at a time per instance at a steady pace, and records every
// outcome.
type publisher struct {
	path string

	stop   chan struct{}
	wg     sync.WaitGroup
	notify chan struct{}

	mu      sync.Mutex
	results []pubResult
}

// startPublisher publishes to path on each of nodes every interval until
// halt.
func startPublisher(t testing.TB, nodes []*node, path string, interval time.Duration) *publisher {
	p := &publisher{path: path, stop: make(chan struct{}), notify: make(chan struct{}, 1)}
	for _, n := range nodes {
		p.wg.Go(func() { p.run(n, interval) })
	}
	t.Cleanup(p.halt)
	return p
}

func (p *publisher) run(n *node, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		r := pubResult{start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ans, err := send(ctx, http.MethodPost, n.url+p.path, server(), fmt.Sprintf("event %d via %s", i, n.name))
		cancel()
		r.end, r.err, r.status = time.Now(), err, ans.status
		r.retryAfter = ans.header.Get("Retry-After")
		if ans.status == http.StatusAccepted {
			var pub published
			if json.Unmarshal(ans.body, &pub) == nil && pub.ID != nil {
				r.id = *pub.ID
			}
		} else if err == nil {
			r.code = ans.errorCode()
		}
		p.mu.Lock()
		p.results = append(p.results, r)
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}
}

// halt stops publishing and waits for the request in flight.
func (p *publisher) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// outcomes returns every result so far.
func (p *publisher) outcomes() []pubResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pubResult(nil), p.results...)
}

// accepted returns the ids of the accepted events in the order every
// subscriber must see them: histories (epochs) in the order they were
// first seen, and by position within each.
func (p *publisher) accepted() []string {
	return inOrder(p.outcomes())
}

// epochOf returns the epoch of event id "<epoch>-<seq>".
func epochOf(id string) string {
	epoch, _, _ := strings.Cut(id, "-")
	return epoch
}

func inOrder(rs []pubResult) []string {
	type pos struct {
		era int
		seq uint64
		id  string
	}
	eras := map[string]int{}
	var ps []pos
	slices.SortFunc(rs, func(a, b pubResult) int { return a.end.Compare(b.end) })
	for _, r := range rs {
		if r.status != http.StatusAccepted {
			continue
		}
		epoch, seqText, _ := strings.Cut(r.id, "-")
		seq, _ := strconv.ParseUint(seqText, 10, 64)
		if _, ok := eras[epoch]; !ok {
			eras[epoch] = len(eras)
		}
		ps = append(ps, pos{eras[epoch], seq, r.id})
	}
	slices.SortFunc(ps, func(a, b pos) int { return cmp.Or(cmp.Compare(a.era, b.era), cmp.Compare(a.seq, b.seq)) })
	ids := make([]string, len(ps))
	for i, q := range ps {
		ids[i] = q.id
	}
	return ids
}

// await waits until cond holds of the results, failing after waitFor.
func (p *publisher) await(t testing.TB, what string, cond func([]pubResult) bool) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for !cond(p.outcomes()) {
		select {
		case <-p.notify:
		case <-timer.C:
			t.Fatalf("timed out after %s waiting until %s", waitFor, what)
		}
	}
}

// awaitAccepted waits until n more events than before have been accepted
// and returns how many have been accepted in all.
func (p *publisher) awaitAccepted(t testing.TB, n int) int {
	t.Helper()
	want := len(p.accepted()) + n
	p.await(t, fmt.Sprintf("%d events are accepted", want), func(rs []pubResult) bool { return countStatus(rs, http.StatusAccepted) >= want })
	return want
}

func countStatus(rs []pubResult, status int) int {
	n := 0
	for _, r := range rs {
		if r.status == status {
			n++
		}
	}
	return n
}

// subscriber is one client following a room across reconnects: the
// streams it opened, in order.
type subscriber struct {
	streams []*stream
}

func (s *subscriber) last() *stream { return s.streams[len(s.streams)-1] }

// frames returns every frame of every stream, in order.
func (s *subscriber) frames() []frame {
	var out []frame
	for _, st := range s.streams {
		f, _ := st.snapshot()
		out = append(out, f...)
	}
	return out
}

// eventIDs returns the envelope ids of every application event received.
func (s *subscriber) eventIDs() []string {
	var out []string
	for _, f := range s.frames() {
		if id := f.eventID(); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// hasAll reports whether the subscriber has received every one of ids.
func (s *subscriber) hasAll(ids []string) bool {
	got := map[string]bool{}
	for _, id := range s.eventIDs() {
		got[id] = true
	}
	for _, id := range ids {
		if !got[id] {
			return false
		}
	}
	return true
}

// awaitEvents waits until every subscriber has received as many events as
// want holds, then requires each to have received exactly want, in order.
func awaitEvents(t testing.TB, subs []*subscriber, want []string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for i, s := range subs {
		// Poll with a deadline: a subscriber's events arrive over
		// several streams.
		for len(s.eventIDs()) < len(want) && !s.last().ended() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if err := sameEvents(s.eventIDs(), want); err != nil {
			t.Fatalf("subscriber %d (last on %s): %v", i, s.last().node.name, err)
		}
	}
}

// sameEvents says how got differs from want.
func sameEvents(got, want []string) error {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Errorf("event %d of %d is %s, want %s (received %d)", i, len(want), got[i], want[i], len(got))
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("received %d events, want %d", len(got), len(want))
	}
	return nil
}
