package relay_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// TestModerationNeedsServer: every moderation route is the API key's:
// anonymous callers get 401, users 403.
func TestModerationNeedsServer(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	id := publishAs(t, r, "quiet:lobby", userHeader(t, "alice"), `{}`)
	routes := []struct {
		method, path, body string
	}{
		{http.MethodPost, "/v1/moderation/bans", `{"user":"alice","duration":"1h"}`},
		{http.MethodDelete, "/v1/moderation/bans/alice", ""},
		{http.MethodPost, "/v1/rooms/quiet:lobby/kick", `{"user":"alice"}`},
		{http.MethodDelete, "/v1/rooms/quiet:lobby/events/" + id, ""},
	}
	for _, rt := range routes {
		for _, caller := range []struct {
			name   string
			header http.Header
			status int
			code   string
		}{
			{"anonymous", nil, 401, "unauthenticated"},
			{"user", userHeader(t, "bob"), 403, "forbidden"},
			{"bad token", relaytest.Bearer("nope"), 401, "invalid_token"},
		} {
			t.Run(rt.method+" "+rt.path+" as "+caller.name, func(t *testing.T) {
				req := relaytest.Request{Method: rt.method, Path: rt.path, Header: header(caller.header, "Content-Type", "application/json")}
				if rt.body != "" {
					req.Body = []byte(rt.body)
				}
				wantError(t, r.Do(t, req), caller.status, caller.code)
			})
		}
	}
	// Nothing happened: alice still publishes and her event is still there.
	publishAs(t, r, "quiet:lobby", userHeader(t, "alice"), `{}`)
	if h := r.Do(t, relaytest.Request{Path: "/v1/rooms/quiet:lobby/history", Header: server()}); !strings.Contains(string(h.Body), id) {
		t.Errorf("history lost %s: %s", id, h.Body)
	}
}

// Moderation tests use rooms without join and leave announcements, so that
// streams hear only what the tests publish.

// TestBan: a ban closes the user's streams with reason banned and refuses
// their new streams, polls and publishes, and no one else's; unbanning
// lets them back.
func TestBan(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := relaytest.Token(t, "alice", time.Hour, nil)
	single := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(alice)})
	single.Connected(t)
	multi := r.Subscribe(t, "/v1/stream?room=quiet:team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(alice)})
	multi.Connected(t)
	bob := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bob.Connected(t)

	for _, bad := range []string{`{"user":"alice"}`, `{"user":"alice","duration":"-1m"}`, `{"user":"","duration":"1m"}`, `{"user":"alice","duration":"1m","x":1}`} {
		resp := postJSON(t, r, "/v1/moderation/bans", server(), bad)
		if resp.Status != http.StatusBadRequest {
			t.Errorf("ban %s: status %d, want 400: %s", bad, resp.Status, resp.Body)
		}
	}
	before := time.Now()
	resp := postJSON(t, r, "/v1/moderation/bans", server(), `{"user":"alice","duration":"10m"}`)
	if resp.Status != http.StatusCreated {
		t.Fatalf("ban: status %d: %s", resp.Status, resp.Body)
	}
	var ban struct {
		User  string `json:"user"`
		Until int64  `json:"until"`
	}
	resp.JSON(t, &ban)
	if until := time.UnixMilli(ban.Until); ban.User != "alice" || until.Before(before.Add(10*time.Minute).Truncate(time.Millisecond)) || until.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("ban answer %s", resp.Body)
	}

	for _, s := range []*relaytest.Stream{single, multi} {
		checkClosingReason(t, s.Expect(t, "roomcast:closing"), rooms.CloseBanned)
		s.WaitEnded(t)
	}
	ah := relaytest.Bearer(alice)
	for _, req := range []relaytest.Request{
		{Path: "/v1/rooms/quiet:lobby/events", Header: ah},
		{Path: "/v1/stream?room=quiet:team-1", Header: ah},
		{Path: "/v1/users/me/events", Header: ah},
		{Path: "/v1/rooms/quiet:lobby/poll?timeout=0", Header: ah},
		{Path: "/v1/rooms/quiet:lobby/events?ticket=" + mustTicket(t, r, alice)},
		{Method: http.MethodPost, Path: "/v1/rooms/quiet:lobby/events", Header: header(ah, "Content-Type", "application/json"), Body: []byte(`{}`)},
		{Method: http.MethodPost, Path: "/v1/users/bob/events", Header: header(ah, "Content-Type", "application/json"), Body: []byte(`{}`)},
	} {
		if msg := wantError(t, r.Open(t, req), http.StatusForbidden, "banned"); !strings.Contains(msg, "until") {
			t.Errorf("%s %s: message %q does not say until when", req.Method, req.Path, msg)
		}
	}
	// Bob is untouched.
	expectIDs(t, bob, []string{publishAs(t, r, "quiet:lobby", userHeader(t, "bob"), `{}`)})

	if resp := r.Do(t, relaytest.Request{Method: http.MethodDelete, Path: "/v1/moderation/bans/alice", Header: server()}); resp.Status != http.StatusNoContent {
		t.Fatalf("unban: status %d: %s", resp.Status, resp.Body)
	}
	back := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(alice)})
	back.Connected(t)
	expectIDs(t, back, []string{publishAs(t, r, "quiet:lobby", ah, `{"data":"back"}`)})
}

// TestKick: a kick takes every connection of the user out of the room
// (roomcast:left reason kicked; a single-room stream ends with
// roomcast:closing reason kicked), and leaves their other rooms and other
// users alone.
func TestKick(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := relaytest.BearerMap(relaytest.Token(t, "alice", time.Hour, nil))
	multi := r.Subscribe(t, "/v1/stream?room=quiet:lobby,quiet:team-1", relaytest.StreamOptions{Header: alice})
	multi.Connected(t)
	single := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: alice})
	single.Connected(t)
	bob := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bob.Connected(t)

	wantError(t, postJSON(t, r, "/v1/rooms/quiet:lobby/kick", server(), `{}`), http.StatusBadRequest, "invalid_user")
	if resp := postJSON(t, r, "/v1/rooms/quiet:lobby/kick", server(), `{"user":"alice"}`); resp.Status != http.StatusNoContent {
		t.Fatalf("kick: status %d: %s", resp.Status, resp.Body)
	}
	if left := multi.Expect(t, "roomcast:left"); left.Data != `{"room":"quiet:lobby","reason":"kicked"}` {
		t.Errorf("left %s, want quiet:lobby with reason kicked", left.Data)
	}
	// A single-room stream has nothing left to carry: it ends.
	if closing := single.Expect(t, "roomcast:closing"); !strings.Contains(closing.Data, `"reason":"kicked"`) {
		t.Errorf("closing %s, want reason kicked", closing.Data)
	}
	pub := userHeader(t, "carol")
	publishAs(t, r, "quiet:lobby", pub, `{"data":"after the kick"}`)
	inTeam := publishAs(t, r, "quiet:team-1", pub, `{"data":"team"}`)
	expectIDs(t, multi, []string{inTeam})
	// Bob still hears the quiet:lobby.
	bob.Until(t, func(ev relaytest.Event) bool {
		return ev.Event == "message" && strings.Contains(ev.Data, "after the kick")
	})
}

// TestDeleteEvent: a deleted event is gone from history and from resume;
// deleting it again, or an event that never was, is 404.
func TestDeleteEvent(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := userHeader(t, "alice")
	s := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	s.Connected(t)
	first := publishAs(t, r, "quiet:lobby", alice, `{"data":1}`)
	expectIDs(t, s, []string{first})
	from := s.LastEventID()
	s.Close()
	ids := []string{publishAs(t, r, "quiet:lobby", alice, `{"data":2}`), publishAs(t, r, "quiet:lobby", alice, `{"data":"spam"}`), publishAs(t, r, "quiet:lobby", alice, `{"data":4}`)}

	del := func(room, id string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodDelete, Path: "/v1/rooms/" + room + "/events/" + id, Header: server()})
	}
	if resp := del("quiet:lobby", ids[1]); resp.Status != http.StatusNoContent {
		t.Fatalf("delete: status %d: %s", resp.Status, resp.Body)
	}
	wantError(t, del("quiet:lobby", ids[1]), http.StatusNotFound, "not_found")
	wantError(t, del("other", ids[0]), http.StatusNotFound, "not_found")
	wantError(t, del("quiet:lobby", "not-an-id"), http.StatusNotFound, "not_found")
	wantError(t, del("quiet:lobby", "ffffffff-1"), http.StatusNotFound, "not_found")

	hist := r.Do(t, relaytest.Request{Path: "/v1/rooms/quiet:lobby/history", Header: alice})
	var h struct{ Events []json.RawMessage }
	hist.JSON(t, &h)
	var got []string
	for _, ev := range h.Events {
		var env struct{ ID string }
		_ = json.Unmarshal(ev, &env)
		got = append(got, env.ID)
	}
	if want := []string{first, ids[0], ids[2]}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("history %v, want %v", got, want)
	}
	resumed := r.Subscribe(t, "/v1/rooms/quiet:lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil)), LastEventID: from})
	resumed.Connected(t)
	expectIDs(t, resumed, []string{ids[0], ids[2]})
	pr := r.Do(t, relaytest.Request{Path: "/v1/rooms/quiet:lobby/poll?timeout=0&cursor=" + from, Header: alice})
	var p pollAnswer
	pr.JSON(t, &p)
	if len(p.Events) != 2 || strings.Contains(string(p.Events[0])+string(p.Events[1]), "spam") {
		t.Errorf("poll from before the deleted event got %s", pr.Body)
	}
}
