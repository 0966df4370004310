package clustertest

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// An event published on one instance reaches streams on the others: a
// room's, a user's private channel, and a namespace broadcast.
func TestCrossInstanceDelivery(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	t.Run("room", func(t *testing.T) {
		onA := open(t, a, roomPath("lobby"), server())
		onC := open(t, cc, roomPath("lobby"), server())
		id := publish(t, b, roomPath("lobby"), "hello from B")
		for _, s := range []*stream{onA, onC} {
			f := s.expectEvent(t, id)
			if env := f.env(t); env.Room != "lobby" || f.Event != "message" || f.text(t) != "hello from B" {
				t.Errorf("on %s: %+v %s", s.node.name, env, f.Data)
			}
		}
		// And back the other way, in publish order.
		id2 := publish(t, a, roomPath("lobby"), "from A")
		id3 := publish(t, cc, roomPath("lobby"), "from C")
		for _, s := range []*stream{onA, onC} {
			s.expectEvent(t, id2)
			s.expectEvent(t, id3)
		}
	})

	t.Run("user channel", func(t *testing.T) {
		alice := open(t, a, "/v1/users/me/events", bearer(userToken(t, "alice", nil)))
		bob := open(t, b, "/v1/users/me/events", bearer(userToken(t, "bob", nil)))
		id := publish(t, cc, "/v1/users/alice/events", "for alice only")
		if f := alice.expectEvent(t, id); f.text(t) != "for alice only" {
			t.Errorf("alice got %s", f.Data)
		}
		// Bob's next event is his own, not alice's.
		idBob := publish(t, cc, "/v1/users/bob/events", "for bob")
		bob.expectEvent(t, idBob)
	})

	t.Run("namespace broadcast", func(t *testing.T) {
		inGame := open(t, a, roomPath("game:table-1"), server())
		inGame2 := open(t, cc, "/v1/stream?room=game:table-2", server())
		elsewhere := open(t, cc, roomPath("chat:general"), server())
		id := publish(t, b, "/v1/namespaces/game/events", "server restarting")
		for _, s := range []*stream{inGame, inGame2} {
			if f := s.expectEvent(t, id); f.text(t) != "server restarting" {
				t.Errorf("on %s: %s", s.node.name, f.Data)
			}
		}
		mark := publish(t, b, roomPath("chat:general"), "marker")
		elsewhere.expectEvent(t, mark)
	})
}

// A multi-room stream's rooms are changed, and its token refreshed,
// through instances that do not hold it: the command is carried to the
// owner and answered after it took effect.
func TestCommandsForwardedToOwner(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	token := userToken(t, "carol", nil)
	s := open(t, a, "/v1/stream?room=r1", bearer(token))
	conn := s.conn.Connection
	if conn == "" || len(s.conn.Rooms) != 1 || s.conn.Rooms[0] != "r1" {
		t.Fatalf("roomcast:connected %+v", s.conn)
	}
	path := "/v1/connections/" + conn + "/rooms/r2"

	// Join through B: once the 204 is in, a publish anywhere reaches it.
	if ans := do(t, http.MethodPut, b.url+path, bearer(token), ""); ans.status != http.StatusNoContent {
		t.Fatalf("PUT on B: %d %s", ans.status, ans.body)
	}
	if d := s.expect(t, "roomcast:joined").system(t); d.Room != "r2" {
		t.Errorf("joined %+v", d)
	}
	for _, n := range []*node{cc, b, a} {
		id := publish(t, n, roomPath("r2"), "to r2 via "+n.name)
		s.expectEvent(t, id)
	}

	// Leave through C: nothing of r2 follows.
	if ans := do(t, http.MethodDelete, cc.url+path, server(), ""); ans.status != http.StatusNoContent {
		t.Fatalf("DELETE on C: %d %s", ans.status, ans.body)
	}
	if d := s.expect(t, "roomcast:left").system(t); d.Room != "r2" {
		t.Errorf("left %+v", d)
	}
	publish(t, b, roomPath("r2"), "not for carol")
	mark := publish(t, b, roomPath("r1"), "marker")
	s.expectEvent(t, mark)

	// A token refresh through B replaces the identity on A: the new token
	// no longer allows r1, so the owner takes the stream out of it.
	limited := userToken(t, "carol", map[string]any{"rooms": map[string]any{"subscribe": []string{"r3"}}})
	refresh := "/v1/connections/" + conn + "/token"
	if ans := do(t, http.MethodPost, b.url+refresh, bearer(limited), ""); ans.status != http.StatusNoContent {
		t.Fatalf("token refresh on B: %d %s", ans.status, ans.body)
	}
	if d := s.expect(t, "roomcast:left").system(t); d.Room != "r1" || d.Reason != "forbidden" {
		t.Errorf("after the refresh: left %+v, want r1 with reason forbidden", d)
	}
	// Another user's token cannot refresh it, from any instance.
	if ans := do(t, http.MethodPost, cc.url+refresh, bearer(userToken(t, "mallory", nil)), ""); ans.status != http.StatusForbidden {
		t.Errorf("refresh with another user's token: %d %s, want 403", ans.status, ans.body)
	}

	single := open(t, a, roomPath("r1"), server())
	tests := []struct {
		name, method, path string
		header             http.Header
		status             int
		code               string
	}{
		{"join unknown", http.MethodPut, "/v1/connections/AAAAAAAAAAAAAAAAAAAAAA/rooms/r2", server(), 404, "unknown_connection"},
		{"leave unknown", http.MethodDelete, "/v1/connections/AAAAAAAAAAAAAAAAAAAAAA/rooms/r2", server(), 404, "unknown_connection"},
		{"refresh unknown", http.MethodPost, "/v1/connections/AAAAAAAAAAAAAAAAAAAAAA/token", bearer(token), 404, "unknown_connection"},
		{"join single-room stream", http.MethodPut, "/v1/connections/" + single.conn.Connection + "/rooms/r2", server(), 409, "single_room_stream"},
	}
	for _, tt := range tests {
		for _, n := range []*node{b, cc} {
			ans := do(t, tt.method, n.url+tt.path, tt.header, "")
			if ans.status != tt.status || ans.errorCode() != tt.code {
				t.Errorf("%s on %s: %d %s, want %d %s", tt.name, n.name, ans.status, ans.body, tt.status, tt.code)
			}
		}
	}

	// A closed connection is unknown everywhere.
	s.close()
	relaytest.Eventually(t, "the closed connection is unknown on B", func() bool {
		return do(t, http.MethodPut, b.url+path, bearer(token), "").errorCode() == "unknown_connection"
	})
}

// The same Idempotency-Key sent to two instances publishes once: both
// answers name the same event, and subscribers get it once.
func TestIdempotencyAcrossInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	s := open(t, cc, roomPath("orders"), server())

	first := do(t, http.MethodPost, a.url+roomPath("orders"), server("Idempotency-Key", "order-42"), "placed")
	second := do(t, http.MethodPost, b.url+roomPath("orders"), server("Idempotency-Key", "order-42"), "placed again")
	if first.status != http.StatusAccepted || second.status != http.StatusAccepted {
		t.Fatalf("answers %d %s and %d %s, want two 202s", first.status, first.body, second.status, second.body)
	}
	if string(first.body) != string(second.body) || second.header.Get("Idempotent-Replayed") != "true" ||
		first.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first %s (replayed %q), second %s (replayed %q)", first.body, first.header.Get("Idempotent-Replayed"),
			second.body, second.header.Get("Idempotent-Replayed"))
	}
	var p published
	if err := json.Unmarshal(first.body, &p); err != nil || p.ID == nil {
		t.Fatalf("answer %s", first.body)
	}
	if f := s.expectEvent(t, *p.ID); f.text(t) != "placed" {
		t.Errorf("delivered %s", f.Data)
	}

	// Racing: the same new key sent to all three at once.
	var wg sync.WaitGroup
	answers := make([]answer, 3)
	for i, n := range c.nodes {
		wg.Go(func() {
			answers[i], _ = send(t.Context(), http.MethodPost, n.url+roomPath("orders"), server("Idempotency-Key", "order-43"), "race from "+n.name)
		})
	}
	wg.Wait()
	replayed := 0
	for i, ans := range answers {
		if ans.status != http.StatusAccepted || string(ans.body) != string(answers[0].body) {
			t.Errorf("answer %d: %d %s, want 202 %s", i, ans.status, ans.body, answers[0].body)
		}
		if ans.header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	if replayed != 2 {
		t.Errorf("%d answers were replays, want 2", replayed)
	}
	if err := json.Unmarshal(answers[0].body, &p); err != nil || p.ID == nil {
		t.Fatalf("answer %s", answers[0].body)
	}
	s.expectEvent(t, *p.ID)
	mark := publish(t, a, roomPath("orders"), "marker")
	s.expectEvent(t, mark)
}
