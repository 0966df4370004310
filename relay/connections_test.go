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

	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
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

// TestTokenRefreshNarrowsRooms: a fresh token that no longer allows a room
// takes the stream out of it with roomcast:left reason forbidden.
func TestTokenRefreshNarrowsRooms(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	s := r.Subscribe(t, "/v1/stream?room=team-1,team-2", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "alice", time.Hour, nil))})
	conn := s.Connected(t).Connection
	narrow := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{"subscribe": []string{"team-1"}}})
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(narrow)})
	if resp.Status != http.StatusNoContent {
		t.Fatalf("refresh: status %d: %s", resp.Status, resp.Body)
	}
	if left := s.Expect(t, "roomcast:left"); left.Data != `{"room":"team-2","reason":"forbidden"}` {
		t.Errorf("left %s, want team-2 with reason forbidden", left.Data)
	}
	publishAs(t, r, "team-2", userHeader(t, "bob"), `{"data":"not for alice any more"}`)
	id := publishAs(t, r, "team-1", userHeader(t, "bob"), `{"data":"still hers"}`)
	expectIDs(t, s, []string{id})
	// Joining it back is now refused: joins follow the current token.
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + conn + "/rooms/team-2", Header: relaytest.Bearer(narrow)}), http.StatusForbidden, "forbidden")
}

// TestConnectionOwnership: another user cannot join, leave or refresh a
// user's connection, and every join is authorised against the token of
// the connection, whoever asks for it.
func TestConnectionOwnership(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	aliceToken := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{"subscribe": []string{"team-*"}}})
	alice := relaytest.Bearer(aliceToken)
	s := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken)})
	conn := s.Connected(t).Connection
	path := "/v1/connections/" + conn
	bob := userHeader(t, "bob")
	cases := []refusal{
		{"another user joins", http.MethodPut, path + "/rooms/team-2", bob, 403, "forbidden"},
		{"another user leaves", http.MethodDelete, path + "/rooms/team-1", bob, 403, "forbidden"},
		{"another user refreshes", http.MethodPost, path + "/token", bob, 403, "forbidden"},
		{"anonymous joins", http.MethodPut, path + "/rooms/team-2", nil, 401, "unauthenticated"},
		{"anonymous leaves", http.MethodDelete, path + "/rooms/team-1", nil, 401, "unauthenticated"},
		{"the owner joins a room the token refuses", http.MethodPut, path + "/rooms/lobby", alice, 403, "forbidden"},
		{"the server joins a room the token refuses", http.MethodPut, path + "/rooms/lobby", server(), 403, "forbidden"},
		{"unknown connection", http.MethodPut, "/v1/connections/nope/rooms/team-2", alice, 404, "unknown_connection"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, r.Do(t, relaytest.Request{Method: tc.method, Path: tc.path, Header: tc.header}), tc.status, tc.code)
		})
	}
	// None of it touched the stream: the owner's own join is the next thing
	// it hears, and it is still in team-1.
	if resp := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: path + "/rooms/team-2", Header: alice}); resp.Status != http.StatusNoContent {
		t.Fatalf("owner joins: status %d: %s", resp.Status, resp.Body)
	}
	if ev := s.Expect(t, "roomcast:joined"); ev.Data != `{"room":"team-2"}` {
		t.Errorf("joined %s, want team-2", ev.Data)
	}
	expectIDs(t, s, []string{publishAs(t, r, "team-1", bob, `{}`)})
	// The server may manage a user's connection within the token's rooms.
	if resp := r.Do(t, relaytest.Request{Method: http.MethodDelete, Path: path + "/rooms/team-2", Header: server()}); resp.Status != http.StatusNoContent {
		t.Fatalf("server leaves: status %d: %s", resp.Status, resp.Body)
	}
	if ev := s.Expect(t, "roomcast:left"); ev.Data != `{"room":"team-2"}` {
		t.Errorf("left %s, want team-2", ev.Data)
	}
}

// TestTokenRefreshToShorterExpiry: a stream whose close is an hour away is
// refreshed with a token expiring in seconds: both writers (hijacked and
// net/http) warn at once and close at the new expiry, not the old one.
func TestTokenRefreshToShorterExpiry(t *testing.T) {
	t.Parallel()
	for _, hijack := range []bool{true, false} {
		name := map[bool]string{true: "hijacked", false: "net/http"}[hijack]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := startSecured(t, func(o *relaytest.Options) { o.Relay.DisableHijack = !hijack })
			s := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "alice", time.Hour, nil))})
			conn := s.Connected(t).Connection
			short := relaytest.Token(t, "alice", 3*time.Second, nil)
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(short)})
			if resp.Status != http.StatusNoContent {
				t.Fatalf("refresh: status %d: %s", resp.Status, resp.Body)
			}
			s.Expect(t, "roomcast:token-expiring")
			checkClosingReason(t, s.Expect(t, "roomcast:closing"), rooms.CloseTokenExpired)
			s.WaitEnded(t)
		})
	}
}
