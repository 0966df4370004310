package relay_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// changeRoom sends PUT or DELETE /v1/connections/{id}/rooms/{room} and
// requires an empty 204.
func changeRoom(t *testing.T, r *relaytest.Relay, method, connection, room string) {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Method: method, Path: "/v1/connections/" + connection + "/rooms/" + room})
	if resp.Status != http.StatusNoContent || len(resp.Body) != 0 {
		t.Fatalf("%s %s: status %d, body %q, want an empty 204", method, room, resp.Status, resp.Body)
	}
}

// TestJoinLeave checks that a joined room's events reach the connection
// from the 204 on and not before, that leaving stops them, and that both
// are confirmed in-band.
func TestJoinLeave(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.Subscribe(t, "/v1/stream?room=home", relaytest.StreamOptions{})
	c := s.Connected(t)

	r.PublishJSON(t, "ns:other", map[string]any{"data": "before the join"})
	changeRoom(t, r, http.MethodPut, c.Connection, "ns:other")
	after := []string{r.PublishJSON(t, "ns:other", map[string]any{"data": 1}), r.PublishJSON(t, "ns:other", map[string]any{"data": 2})}
	joined := s.Expect(t, "roomcast:joined")
	if joined.Data != `{"room":"ns:other"}` || joined.ID == "" {
		t.Errorf("joined %+v, want room ns:other with an id", joined)
	}
	expectIDs(t, s, after)

	// Joining again changes nothing and says nothing.
	changeRoom(t, r, http.MethodPut, c.Connection, "ns:other")
	// default:x is x.
	changeRoom(t, r, http.MethodPut, c.Connection, "default:third")
	if got := s.Expect(t, "roomcast:joined"); got.Data != `{"room":"third"}` {
		t.Errorf("joined %s, want room third", got.Data)
	}

	changeRoom(t, r, http.MethodDelete, c.Connection, "ns:other")
	if left := s.Expect(t, "roomcast:left"); left.Data != `{"room":"ns:other"}` {
		t.Errorf("left %s, want room ns:other", left.Data)
	}
	r.PublishJSON(t, "ns:other", map[string]any{"data": "after the leave"})
	expectIDs(t, s, []string{r.PublishJSON(t, "third", map[string]any{}), r.PublishJSON(t, "home", map[string]any{})})
	// Leaving a room the connection is not in is a no-op.
	changeRoom(t, r, http.MethodDelete, c.Connection, "ns:other")
}

// TestJoinWhilePublishing joins while another goroutine publishes to the
// room: every event published after the 204 arrives, in order, and none
// answered before the PUT was sent does.
func TestJoinWhilePublishing(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.Subscribe(t, "/v1/stream", relaytest.StreamOptions{})
	c := s.Connected(t)
	if len(c.Rooms) != 0 {
		t.Fatalf("rooms %v, want none", c.Rooms)
	}
	var joinSent, joinDone atomic.Bool
	var mu sync.Mutex
	var must, mustNot []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			after := joinDone.Load()
			resp, err := r.Client().Post(r.URL+"/v1/rooms/busy/events", "text/plain", strings.NewReader(strconv.Itoa(n)))
			if err != nil {
				return
			}
			var p relaytest.Published
			err = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if err != nil || p.ID == nil {
				return
			}
			before := !joinSent.Load()
			mu.Lock()
			switch {
			case after:
				must = append(must, *p.ID)
			case before:
				mustNot = append(mustNot, *p.ID)
			}
			mu.Unlock()
		}
	}()
	relaytest.Eventually(t, "some events are published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(mustNot) >= 5
	})
	joinSent.Store(true)
	changeRoom(t, r, http.MethodPut, c.Connection, "busy")
	joinDone.Store(true)
	relaytest.Eventually(t, "events follow the join", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(must) >= 5
	})
	close(stop)
	wg.Wait()
	marker := r.PublishJSON(t, "busy", map[string]any{"event": "marker"})

	s.Expect(t, "roomcast:joined")
	var got []string
	for _, ev := range s.UntilEventID(t, marker) {
		got = append(got, ev.EventID(t))
	}
	for _, id := range mustNot {
		if slices.Contains(got, id) {
			t.Errorf("%s, answered before the join, reached the connection", id)
		}
	}
	var seen []string
	for _, id := range got {
		if slices.Contains(must, id) {
			seen = append(seen, id)
		}
	}
	if !slices.Equal(seen, must) {
		t.Errorf("of the events published after the join, got %v, want %v", seen, must)
	}
}
