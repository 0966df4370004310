package clustertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// pollAnswer is the body of a poll.
type pollAnswer struct {
	Events []envelope `json:"events"`
	Cursor string     `json:"cursor"`
	Reset  bool       `json:"reset"`
}

// poll polls path (with its query) on n and requires a 200.
func poll(t testing.TB, n *node, path string) pollAnswer {
	t.Helper()
	ans := do(t, http.MethodGet, n.url+path, server(), "")
	if ans.status != http.StatusOK {
		t.Fatalf("GET %s on %s: %d %s", path, n.name, ans.status, ans.body)
	}
	var p pollAnswer
	if err := json.Unmarshal(ans.body, &p); err != nil {
		t.Fatalf("poll answer %s: %v", ans.body, err)
	}
	return p
}

func envelopeIDs(events []envelope) []string {
	var out []string
	for _, e := range events {
		if e.ID != nil {
			out = append(out, *e.ID)
		}
	}
	return out
}

// A stream resumed on another instance gets exactly what it missed, in
// order, once; a poll continues on another instance from a stream's cursor.
func TestResumeOnAnotherInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	s := open(t, a, roomPath("feed"), server())
	for i := range 3 {
		s.expectEvent(t, publish(t, b, roomPath("feed"), "seen "+string(rune('1'+i))))
	}
	cursor := s.lastID()
	s.close()
	var missed []string
	for i := range 4 {
		missed = append(missed, publish(t, b, roomPath("feed"), "missed "+string(rune('1'+i))))
	}

	t.Run("stream", func(t *testing.T) {
		for _, how := range []struct {
			name   string
			path   string
			header http.Header
		}{
			{"Last-Event-ID", roomPath("feed"), server("Last-Event-ID", cursor)},
			{"lastEventId", roomPath("feed") + "?lastEventId=" + url.QueryEscape(cursor), server()},
		} {
			r := open(t, cc, how.path, how.header)
			for _, id := range missed {
				r.expectEvent(t, id)
			}
			// Nothing is repeated: the next frame is the next live event.
			live := publish(t, a, roomPath("feed"), "live")
			r.expectEvent(t, live)
			r.close()
			missed = append(missed, live)
		}
	})

	t.Run("poll", func(t *testing.T) {
		p := poll(t, b, "/v1/rooms/feed/poll?timeout=0&cursor="+url.QueryEscape(cursor))
		if p.Reset || !slices.Equal(envelopeIDs(p.Events), missed) {
			t.Fatalf("poll on B from A's cursor: reset %v, events %v, want %v", p.Reset, envelopeIDs(p.Events), missed)
		}
		// A poll held on A wakes up for an event published on C.
		held := make(chan answer, 1)
		go func() {
			ans, _ := send(context.Background(), http.MethodGet, a.url+"/v1/rooms/feed/poll?timeout=8&cursor="+url.QueryEscape(p.Cursor), server(), "")
			held <- ans
		}()
		relaytest.Eventually(t, "the poll is held on A", func() bool {
			return strings.Contains(string(do(t, http.MethodGet, a.metrics+"/metrics", nil, "").body), `roomcast_connections{transport="poll"} 1`)
		})
		id := publish(t, cc, roomPath("feed"), "wake up")
		var ans answer
		select {
		case ans = <-held:
		case <-time.After(waitFor):
			t.Fatal("the held poll did not answer")
		}
		var got pollAnswer
		if err := json.Unmarshal(ans.body, &got); err != nil || !slices.Equal(envelopeIDs(got.Events), []string{id}) {
			t.Fatalf("held poll answered %d %s, want event %s", ans.status, ans.body, id)
		}
	})
}

// A multi-room stream resumed on another instance gets back the rooms it
// had, joined ones included, and what it missed in all of them.
func TestSessionResumeOnAnotherInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	token := userToken(t, "dave", nil)

	s := open(t, a, "/v1/stream?room=m1", bearer(token))
	if ans := do(t, http.MethodPut, b.url+"/v1/connections/"+s.conn.Connection+"/rooms/m2", bearer(token), ""); ans.status != http.StatusNoContent {
		t.Fatalf("join on B: %d %s", ans.status, ans.body)
	}
	s.expect(t, "roomcast:joined")
	s.expectEvent(t, publish(t, cc, roomPath("m2"), "seen"))
	cursor := s.lastID()
	s.close()

	missed := []string{
		publish(t, b, roomPath("m1"), "missed in m1"),
		publish(t, cc, roomPath("m2"), "missed in m2"),
		publish(t, a, "/v1/users/dave/events", "missed private"),
		publish(t, b, roomPath("m1"), "missed in m1 again"),
	}
	r := open(t, cc, "/v1/stream?room=m1", bearer(token, "Last-Event-ID", cursor))
	if got := r.conn.Rooms; !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("resumed rooms %v, want [m1 m2]", got)
	}
	for _, id := range missed {
		r.expectEvent(t, id)
	}
	live := publish(t, a, roomPath("m2"), "live")
	r.expectEvent(t, live)
}

// A flushed Redis lost its history: a stream open during the flush and a
// client resuming with a cursor from before it are told so with
// roomcast:reset history_lost, and a poll with reset, never a silent gap.
func TestFlushedHistoryIsReset(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	open1 := open(t, a, roomPath("news"), server())
	gone := open(t, b, roomPath("news"), server())
	before := publish(t, cc, roomPath("news"), "before the flush")
	open1.expectEvent(t, before)
	gone.expectEvent(t, before)
	cursor := gone.lastID()
	gone.close()
	polled := poll(t, b, "/v1/rooms/news/poll?timeout=0&cursor="+url.QueryEscape(cursor))

	if err := c.redis.Client().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	after := publish(t, cc, roomPath("news"), "after the flush")

	// The open stream hears of the loss before the first event of the
	// new history.
	if d := open1.expect(t, "roomcast:reset").system(t); d.Reason != "history_lost" {
		t.Errorf("open stream: reset %+v, want history_lost", d)
	}
	open1.expectEvent(t, after)

	// The resuming stream is reset, then carries on live.
	r := open(t, b, roomPath("news"), server("Last-Event-ID", cursor))
	f := r.expect(t, "roomcast:reset")
	if d := f.system(t); d.Reason != "history_lost" || !f.HasID {
		t.Errorf("resume: reset %+v (id %v), want history_lost with an id", d, f.HasID)
	}
	live := publish(t, a, roomPath("news"), "live")
	r.expectEvent(t, live)

	// A poll from before the flush is answered with reset.
	p := poll(t, cc, "/v1/rooms/news/poll?timeout=0&cursor="+url.QueryEscape(polled.Cursor))
	if !p.Reset {
		t.Errorf("poll across the flush: %+v, want reset", p)
	}
}
