package clustertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// Redis restarted without persistence loses every client-id binding and
// directory entry, but the streams that made them live on: each instance
// writes them again at its streams' next heartbeat (-heartbeat 1s), not a
// quarter of their TTL later. Until then a live stream's proof and id were
// refused (unknown_connection) on every other instance, and its client id
// was free for anyone to claim: another user streaming with it got a 200,
// and the owner's renewal, refused, was ignored. The same for a
// long-poller's binding, renewed by its next poll.
func TestRedisRestartKeepsLiveClaims(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	bobH := bearer(userToken(t, "bob", map[string]any{"name": "Bob"}))
	malloryH := bearer(userToken(t, "mallory", map[string]any{"name": "Mallory"}))

	const phone = "bob-phone-restart"
	bob := open(t, a, roomPath("desk")+"?client="+phone, bobH)
	hello := bob.conn
	const poller = "bob-poller-restart"
	pollPath := "/v1/rooms/desk/poll?client=" + poller
	var first struct{ Cursor, Connection string }
	if ans := do(t, http.MethodGet, a.url+pollPath+"&timeout=0.1", bobH, ""); ans.status != http.StatusOK || json.Unmarshal(ans.body, &first) != nil {
		t.Fatalf("bob's poll on A: %d %s", ans.status, ans.body)
	}

	c.redis.Restart()
	// Streams go on through the restart: wait for two heartbeats after it.
	bob.waitPings(t, bob.pingCount()+2)

	// The poller's next poll continues its session.
	next := pollPath + "&timeout=0.1&cursor=" + url.QueryEscape(first.Cursor) + "&proof=" + url.QueryEscape(first.Connection)
	if ans := do(t, http.MethodGet, a.url+next, bobH, ""); ans.status != http.StatusOK {
		t.Fatalf("bob's next poll on A: %d %s", ans.status, ans.body)
	}

	for name, sender := range map[string]string{"proof": hello.Proof, "connection id": hello.Connection, "poll's proof": first.Connection} {
		relaytest.Eventually(t, "bob's "+name+" is accepted on B after the restart", func() bool {
			ans := do(t, http.MethodPost, b.url+roomPath("desk"), bearer(userToken(t, "bob", nil), "Roomcast-Connection", sender),
				`{"data":"from bob","exclude_self":true}`)
			return ans.status == http.StatusAccepted
		})
	}
	if s, status, body := tryOpen(b, roomPath("desk")+"?client="+phone, malloryH); status != http.StatusConflict {
		if s != nil {
			s.close()
		}
		t.Errorf("mallory streaming on B with bob's live client id after the restart: %d %s, want 409", status, body)
	}
	if bob.ended() {
		t.Errorf("bob's stream ended: %v", bob.err)
	}
}

// A multi-room stream open while Redis restarts empty keeps its session:
// resumed on another instance after its own died, it gets back both its
// rooms and what it missed in each.
func TestRedisRestartKeepsLiveSessions(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	token := userToken(t, "dave", nil)

	s := open(t, a, "/v1/stream?room=m1", bearer(token))
	if ans := do(t, http.MethodPut, b.url+"/v1/connections/"+s.conn.Connection+"/rooms/m2", bearer(token), ""); ans.status != http.StatusNoContent {
		t.Fatalf("join on B: %d %s", ans.status, ans.body)
	}
	s.expect(t, "roomcast:joined")

	c.redis.Restart()
	s.waitPings(t, s.pingCount()+2)
	after := publish(t, b, roomPath("m2"), "after the restart")
	s.expect(t, "roomcast:reset")
	s.expectEvent(t, after)
	cursor := s.lastID()
	a.kill()

	missed := []string{
		publish(t, b, roomPath("m1"), "missed in m1"),
		publish(t, cc, roomPath("m2"), "missed in m2"),
	}
	r := open(t, cc, "/v1/stream?room=m1", bearer(token, "Last-Event-ID", cursor))
	if got := r.conn.Rooms; !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("resumed rooms %v, want [m1 m2]", got)
	}
	for _, id := range missed {
		r.expectEvent(t, id)
	}
}

// Presence through a Redis restart without persistence: the list is lost
// with everything else, and the live streams' members are listed (and
// announced) again at their next heartbeat.
func TestRedisRestartPresence(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	watcher := open(t, b, roomPath("porch"), bearer(userToken(t, "dave", nil)))
	bob := open(t, a, roomPath("porch"), bearer(userToken(t, "bob", map[string]any{"name": "Bob"})))
	if u := announced(t, watcher.expect(t, "roomcast:join")); u.User != "bob" {
		t.Fatalf("join of %s, want bob", u.User)
	}
	c.redis.Restart()
	bob.waitPings(t, bob.pingCount()+2)
	watcher.waitPings(t, watcher.pingCount()+2)
	relaytest.Eventually(t, "bob and dave are listed again", func() bool {
		return presenceOn(t, b, "porch").summary() == "bob:1 dave:1"
	})
	mark := publish(t, b, roomPath("porch"), "marker")
	// The watcher hears that history was lost (so it loads the list
	// again), and bob's join.
	var frames []string
	joined := false
	for {
		f := watcher.next(t)
		frames = append(frames, f.Event)
		if f.Event == "roomcast:join" && announced(t, f).User == "bob" {
			joined = true
		}
		if f.eventID() == mark {
			break
		}
	}
	if len(frames) == 0 || frames[0] != "roomcast:reset" || !joined {
		t.Errorf("watcher after the restart: %v, want roomcast:reset first and bob's roomcast:join", frames)
	}
}

// A long-poller switching between instances through a Redis restart
// without persistence, while events are published: one reset, and after
// it every event accepted after the restart, once, in order.
func TestRedisRestartLongPoller(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	pub := startPublisher(t, c.nodes, roomPath("pq"), 5*time.Millisecond)
	pub.awaitAccepted(t, 20)

	const client = "poller-restart-1"
	type got struct {
		ids   []string
		reset bool
	}
	var answers []got
	cursor := ""
	pollOnce := func(i int) {
		path := "/v1/rooms/pq/poll?timeout=0.2&client=" + client
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		a, err := send(context.Background(), http.MethodGet, c.nodes[i%2].url+path, server(), "")
		if err != nil || a.status != http.StatusOK {
			return // Redis down: the client backs off and polls again
		}
		var p pollAnswer
		if err := json.Unmarshal(a.body, &p); err != nil {
			t.Fatalf("poll answer %s: %v", a.body, err)
		}
		answers = append(answers, got{envelopeIDs(p.Events), p.Reset})
		cursor = p.Cursor
	}
	for i := range 6 {
		pollOnce(i)
	}
	c.redis.Restart()
	pub.awaitAccepted(t, 40)
	pub.halt()
	accepted := pub.accepted()
	var after []string
	for _, id := range accepted {
		if epochOf(id) == epochOf(accepted[len(accepted)-1]) {
			after = append(after, id)
		}
	}
	deadline := time.Now().Add(waitFor)
	for i := 6; ; i++ {
		pollOnce(i)
		var since []string
		resets := 0
		for _, a := range answers {
			if a.reset {
				resets++
				since = nil
			}
			since = append(since, a.ids...)
		}
		if slices.Equal(since, after) && resets == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d resets; after the last reset %d events, want the %d accepted after the restart: %v\nvs %v", resets, len(since), len(after), since, after)
		}
	}
}

// A publish answered 503 outcome_unknown (Redis stalled past the call
// timeout) and resent through another instance with the answer's
// Idempotency-Key, as roomcast.js and pub do, is stored once.
func TestOutcomeUnknownResentOnAnotherInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	watcher := open(t, b, roomPath("ou"), server())

	c.redis.Pause()
	first := do(t, http.MethodPost, a.url+roomPath("ou"), server("Content-Type", "application/json"), `{"event":"chat","data":"once"}`)
	c.redis.Resume()
	key := first.header.Get("Idempotency-Key")
	if first.status != http.StatusServiceUnavailable || first.errorCode() != "outcome_unknown" || key == "" {
		t.Fatalf("publish while Redis is paused: %d %s, key %q; want 503 outcome_unknown with a key", first.status, first.body, key)
	}
	var ids []string
	relaytest.Eventually(t, "the resend on B is taken", func() bool {
		ans := do(t, http.MethodPost, b.url+roomPath("ou"), server("Idempotency-Key", key, "Content-Type", "application/json"), `{"event":"chat","data":"once"}`)
		var p published
		if ans.status == http.StatusAccepted && json.Unmarshal(ans.body, &p) == nil && p.ID != nil {
			ids = append(ids, *p.ID)
			return true
		}
		return false
	})
	mark := publish(t, b, roomPath("ou"), "marker")
	copies := 0
	for {
		f := watcher.next(t)
		if f.eventID() != "" && f.env(t).Event == "chat" {
			copies++
			if f.eventID() != ids[0] {
				t.Errorf("delivered %s, the resend answered %s", f.eventID(), ids[0])
			}
		}
		if f.eventID() == mark {
			break
		}
	}
	if copies != 1 {
		t.Errorf("%d copies of the event delivered, want 1", copies)
	}
}

// A client id claimed by another user in the moment between a Redis
// restart without persistence and its stream's next heartbeat is theirs:
// the stream that held it is closed (client_in_use), so that its client
// comes back under a fresh id instead of living on under an id someone
// else now speaks for (and may exclude from what they publish).
func TestRedisRestartIDClaimedMeanwhile(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a := c.start(t, "slow", "-heartbeat", "5s")
	b := c.nodes[1]
	const phone = "bob-phone-claimed"
	bob := open(t, a, roomPath("desk")+"?client="+phone, bearer(userToken(t, "bob", nil)))

	c.redis.Restart()
	m, status, body := tryOpen(b, roomPath("desk")+"?client="+phone, bearer(userToken(t, "mallory", nil)))
	if m == nil {
		// Bob's instance bound it again first: nothing to see.
		t.Logf("mallory's claim after the restart: %d %s", status, body)
		return
	}
	m.handshake(t)
	var d struct{ Reason string }
	f := bob.next(t)
	for f.Event != "roomcast:closing" {
		f = bob.next(t) // the reset, mallory's join
	}
	if err := json.Unmarshal([]byte(f.Data), &d); err != nil || d.Reason != "client_in_use" {
		t.Errorf("bob's stream closing %+v (%v), want client_in_use", d, err)
	}
}
