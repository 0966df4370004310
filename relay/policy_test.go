package relay_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// access is a request and what the policy answers it: the status and,
// for a refusal, the error code.
type access struct {
	name   string
	req    relaytest.Request
	header http.Header
	status int
	code   string
}

func accessGet(path string) relaytest.Request { return relaytest.Request{Path: path} }

func accessPost(path string) relaytest.Request {
	return relaytest.Request{Method: http.MethodPost, Path: path, Body: []byte(`{"data":1}`)}
}

// checkAccess makes each request as JSON with its case's header, one
// subtest a case, and checks the answer.
func checkAccess(t *testing.T, r *relaytest.Relay, cases []access) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Header = header(tc.header, "Content-Type", "application/json")
			resp := r.Open(t, tc.req)
			if tc.code == "" {
				if resp.Status != tc.status {
					t.Errorf("status %d, want %d: %s", resp.Status, tc.status, resp.Body)
				}
				return
			}
			wantError(t, resp, tc.status, tc.code)
		})
	}
}

// TestRoomClaims: a token's rooms.subscribe and rooms.publish patterns
// limit it to matching rooms; outside them the answer is 403 forbidden,
// distinct from the 401 of a caller without a token.
func TestRoomClaims(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	limited := relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
		"subscribe": []string{"team-*", "admin:*"},
		"publish":   []string{"team-1", "admin:ops-*"},
	}}))
	nothing := relaytest.Bearer(relaytest.Token(t, "zed", time.Hour, relaytest.Claims{"rooms": map[string]any{
		"subscribe": []string{}, "publish": []string{},
	}}))
	get, post := accessGet, accessPost
	cases := []access{
		{"subscribe matching", get("/v1/rooms/team-7/events"), limited, 200, ""},
		{"subscribe matching, other namespace", get("/v1/rooms/admin:x/events"), limited, 200, ""},
		{"subscribe default:team-7 is team-7", get("/v1/rooms/default:team-7/events"), limited, 200, ""},
		{"subscribe outside", get("/v1/rooms/lobby/events"), limited, 403, "forbidden"},
		{"subscribe prefix is not a glob", get("/v1/rooms/team/events"), limited, 403, "forbidden"},
		{"subscribe outside, anonymous", get("/v1/rooms/lobby/events"), nil, 401, "unauthenticated"},
		{"multi stream with one room outside", get("/v1/stream?room=team-1,lobby"), limited, 403, "forbidden"},
		{"poll outside", get("/v1/rooms/lobby/poll?timeout=0"), limited, 403, "forbidden"},
		{"multi poll with one room outside", get("/v1/poll?room=team-1&room=lobby&timeout=0"), limited, 403, "forbidden"},
		{"history outside", get("/v1/rooms/lobby/history"), limited, 403, "forbidden"},
		{"empty subscribe list allows nothing", get("/v1/rooms/team-1/events"), nothing, 403, "forbidden"},
		{"publish matching", post("/v1/rooms/team-1/events"), limited, 202, ""},
		{"publish matching glob", post("/v1/rooms/admin:ops-eu/events"), limited, 202, ""},
		{"publish outside", post("/v1/rooms/team-2/events"), limited, 403, "forbidden"},
		{"publish outside, anonymous", post("/v1/rooms/team-2/events"), nil, 401, "unauthenticated"},
		{"multi publish with one room outside", relaytest.Request{Method: http.MethodPost, Path: "/v1/events", Body: []byte(`{"rooms":["team-1","team-2"]}`)}, limited, 403, "forbidden"},
		{"namespace broadcast needs ns:*", post("/v1/namespaces/admin/events"), limited, 403, "forbidden"},
		{"empty publish list allows nothing", post("/v1/rooms/team-1/events"), nothing, 403, "forbidden"},
	}
	checkAccess(t, r, cases)
}

// TestNamespaceRules: each namespace decides whether anonymous callers may
// subscribe and who may publish; strict_namespaces makes unlisted ones 404.
func TestNamespaceRules(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := userHeader(t, "alice")
	get, post := accessGet, accessPost
	cases := []access{
		{"anonymous subscribes to public", get("/v1/rooms/public:lobby/events"), nil, 200, ""},
		{"anonymous polls public", get("/v1/rooms/public:lobby/poll?timeout=0"), nil, 200, ""},
		{"anonymous subscribes to default", get("/v1/rooms/lobby/events"), nil, 401, "unauthenticated"},
		{"anonymous subscribes to an unlisted namespace", get("/v1/rooms/misc:lobby/events"), nil, 401, "unauthenticated"},
		{"user subscribes to default", get("/v1/rooms/lobby/events"), alice, 200, ""},
		{"anonymous publishes where anyone may", post("/v1/rooms/public:lobby/events"), nil, 202, ""},
		{"anonymous publishes where a token is needed", post("/v1/rooms/lobby/events"), nil, 401, "unauthenticated"},
		{"user publishes where a token is needed", post("/v1/rooms/lobby/events"), alice, 202, ""},
		{"user publishes where only the server may", post("/v1/rooms/news:today/events"), alice, 403, "forbidden"},
		{"anonymous publishes where only the server may", post("/v1/rooms/news:today/events"), nil, 401, "unauthenticated"},
		{"server publishes where only the server may", post("/v1/rooms/news:today/events"), server(), 202, ""},
		{"user broadcasts where only the server may", post("/v1/namespaces/news/events"), alice, 403, "forbidden"},
		{"server broadcasts", post("/v1/namespaces/news/events"), server(), 202, ""},
		{"anonymous broadcasts where anyone may", post("/v1/namespaces/public/events"), nil, 202, ""},
		{"anonymous subscribes where only the server publishes", get("/v1/rooms/news:today/events"), nil, 200, ""},
		{"bad namespace name", post("/v1/namespaces/Bad!/events"), server(), 400, "invalid_room"},
	}
	checkAccess(t, r, cases)

	t.Run("strict", func(t *testing.T) {
		strict := startSecured(t, func(o *relaytest.Options) { o.Relay.Namespaces.Strict = true })
		for _, req := range []relaytest.Request{
			{Path: "/v1/rooms/misc:lobby/events"},
			{Path: "/v1/rooms/misc:lobby/poll?timeout=0"},
			{Path: "/v1/stream?room=lobby,misc:lobby"},
			{Method: http.MethodPost, Path: "/v1/rooms/misc:lobby/events", Body: []byte(`{}`)},
			{Method: http.MethodPost, Path: "/v1/namespaces/misc/events", Body: []byte(`{}`)},
		} {
			req.Header = header(alice, "Content-Type", "application/json")
			wantError(t, strict.Open(t, req), http.StatusNotFound, "unknown_namespace")
		}
		// The default namespace and listed ones are known.
		publishAs(t, strict, "lobby", alice, `{}`)
		publishAs(t, strict, "public:lobby", alice, `{}`)
	})
}

// TestNamespaceLimits: a namespace's max_payload and publish rate apply to
// its rooms only.
func TestNamespaceLimits(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := userHeader(t, "alice")
	big := `{"data":"` + strings.Repeat("x", 100) + `"}`
	wantError(t, postJSON(t, r, "/v1/rooms/small:room/events", alice, big), http.StatusRequestEntityTooLarge, "payload_too_large")
	publishAs(t, r, "lobby", alice, big)

	// small allows 1/s, burst 2; the failed publish above was refused
	// before its token was taken.
	publishAs(t, r, "small:room", alice, `{}`)
	publishAs(t, r, "small:room", alice, `{}`)
	resp := postJSON(t, r, "/v1/rooms/small:room/events", alice, `{}`)
	wantError(t, resp, http.StatusTooManyRequests, "rate_limited")
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	// Another namespace, another user and the server are not held back.
	publishAs(t, r, "lobby", alice, `{}`)
	publishAs(t, r, "small:room", userHeader(t, "bob"), `{}`)
	for range 5 {
		publishAs(t, r, "small:room", server(), `{}`)
	}
}

// TestIdentityStamped: every event carries the sender the server knows,
// whatever "from" the body claims; only the API key may publish as someone
// or exclude arbitrary clients.
func TestIdentityStamped(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	alice := relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"name": "Alice"}))
	watcher := r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{})
	watcher.Connected(t)
	other := r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{})
	otherClient := other.Connected(t).Client

	impersonation := `{"data":1,"from":{"user":"admin","name":"Admin"}}`
	cases := []struct {
		name   string
		header http.Header
		body   string
		from   string
	}{
		{"user claiming to be admin", alice, impersonation, `{"user":"alice","name":"Alice"}`},
		{"user without a name claim", userHeader(t, "bob"), impersonation, `{"user":"bob","name":"bob"}`},
		{"anonymous claiming to be admin", nil, impersonation, `null`},
		{"server publishing as bob", server(), `{"data":1,"from":{"user":"bob","name":"Bob"}}`, `{"user":"bob","name":"Bob"}`},
		{"server as itself", server(), `{"data":1}`, `null`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := publishAs(t, r, "public:lobby", tc.header, tc.body)
			got := watcher.UntilEventID(t, id)
			if from := got[len(got)-1].Envelope(t).From; string(from) != tc.from {
				t.Errorf("from %s, want %s", from, tc.from)
			}
		})
	}

	// "exclude" is the server's: a client gets 403, the server skips the
	// named client.
	wantError(t, postJSON(t, r, "/v1/rooms/public:lobby/events", alice, `{"exclude":["`+otherClient+`"]}`), http.StatusForbidden, "forbidden")
	wantError(t, postJSON(t, r, "/v1/rooms/public:lobby/events", nil, `{"exclude":["`+otherClient+`"]}`), http.StatusForbidden, "forbidden")
	wantError(t, postJSON(t, r, "/v1/rooms/public:lobby/events", server(), `{"from":{"user":""}}`), http.StatusBadRequest, "invalid_user")
	skipped := publishAs(t, r, "public:lobby", server(), `{"data":"not for other","exclude":["`+otherClient+`"]}`)
	marker := publishAs(t, r, "public:lobby", server(), `{"data":"for all"}`)
	watcher.UntilEventID(t, skipped)
	expectIDs(t, watcher, []string{marker})
	for _, ev := range other.UntilEventID(t, marker) {
		if ev.Event == "message" && ev.EventID(t) == skipped {
			t.Error("the excluded client got the event")
		}
	}
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

// TestUserStreams: private messages reach every connection of their user
// and nobody else's, stamped with the sender, retained for resume; the
// multi-room stream of a user carries them too.
func TestUserStreams(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	aliceToken := relaytest.Token(t, "alice", time.Hour, nil)
	tab1 := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken)})
	tab1.Connected(t)
	tab2 := r.Subscribe(t, "/v1/users/me/events?ticket="+mustTicket(t, r, aliceToken), relaytest.StreamOptions{})
	tab2.Connected(t)
	multi := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken)})
	multi.Connected(t)
	bobs := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bobs.Connected(t)
	first := poll(t, r, "/v1/users/me/poll?timeout=0&access_token=ignored&ticket="+mustTicket(t, r, aliceToken))

	carol := relaytest.Bearer(relaytest.Token(t, "carol", time.Hour, relaytest.Claims{"name": "Carol"}))
	resp := postJSON(t, r, "/v1/users/alice/events", carol, `{"event":"dm","data":"hi alice","from":{"user":"bob"}}`)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("private message: status %d: %s", resp.Status, resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil || p.Event != "dm" {
		t.Fatalf("answer %s, want an id and event dm", resp.Body)
	}
	for name, s := range map[string]*relaytest.Stream{"tab 1": tab1, "tab 2": tab2, "multi-room stream": multi} {
		ev := s.Expect(t, "dm")
		env := ev.Envelope(t)
		if ev.EventID(t) != *p.ID || string(env.Data) != `"hi alice"` || string(env.From) != `{"user":"carol","name":"Carol"}` {
			t.Errorf("%s got %s", name, ev.Data)
		}
	}
	later := poll(t, r, "/v1/users/me/poll?timeout=5&cursor="+first.Cursor+"&ticket="+mustTicket(t, r, aliceToken))
	if len(later.Events) != 1 || !strings.Contains(string(later.Events[0]), `"hi alice"`) {
		t.Errorf("user poll got %s", later.Events)
	}
	// Bob's stream hears only what is his.
	postJSON(t, r, "/v1/users/bob/events", carol, `{"data":"hi bob"}`)
	if got := bobs.Expect(t, "message").Envelope(t); string(got.Data) != `"hi bob"` {
		t.Errorf("bob got %s first", got.Data)
	}

	// Retained: a resume from before it gets it back.
	last := tab1.LastEventID()
	tab1.Close()
	missed := postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"while away"}`)
	var mp relaytest.Published
	missed.JSON(t, &mp)
	resumed := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken), LastEventID: last})
	resumed.Connected(t)
	expectIDs(t, resumed, []string{*mp.ID})
	hist := r.Do(t, relaytest.Request{Path: "/v1/rooms/team-1/history", Header: relaytest.Bearer(aliceToken)})
	if strings.Contains(string(hist.Body), "while away") {
		t.Error("a private message leaked into a room's history")
	}

	// Anonymous callers cannot send private messages; nobody can use
	// somebody else's user stream through a resume cursor.
	wantError(t, postJSON(t, r, "/v1/users/alice/events", nil, `{}`), http.StatusUnauthorized, "unauthenticated")
	wantError(t, postJSON(t, r, "/v1/users/"+strings.Repeat("u", 300)+"/events", carol, `{}`), http.StatusBadRequest, "invalid_user")
	// A user id that is not UTF-8 names nobody a token can be: tokens
	// are JSON, whose sub would read U+FFFD.
	wantError(t, postJSON(t, r, "/v1/users/al%FFice/events", carol, `{}`), http.StatusBadRequest, "invalid_user")
	spy := r.Subscribe(t, "/v1/stream", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "mallory", time.Hour, nil)), LastEventID: multi.LastEventID()})
	spy.Connected(t)
	postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"secret"}`)
	mine := postJSON(t, r, "/v1/users/mallory/events", server(), `{"data":"for mallory"}`)
	var mm relaytest.Published
	mine.JSON(t, &mm)
	for _, ev := range spy.UntilEventID(t, *mm.ID) {
		if strings.Contains(ev.Data, "secret") {
			t.Errorf("mallory got alice's message through her cursor: %s", ev.Data)
		}
	}
}

// TestNamespaceBroadcast: an event to a namespace reaches every connection
// in at least one of its rooms exactly once, nobody outside it, and is
// covered by resume.
func TestNamespaceBroadcast(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	aliceToken := relaytest.Token(t, "alice", time.Hour, nil)
	alice := relaytest.BearerMap(aliceToken)
	both := r.Subscribe(t, "/v1/stream?room=team-1,team-2", relaytest.StreamOptions{Header: alice})
	both.Connected(t)
	single := r.Subscribe(t, "/v1/rooms/team-3/events", relaytest.StreamOptions{Header: alice})
	single.Connected(t)
	outside := r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{})
	outside.Connected(t)
	userOnly := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: alice})
	userOnly.Connected(t)

	resp := postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce","data":"to default"}`)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("broadcast: status %d: %s", resp.Status, resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil || p.Event != "announce" {
		t.Fatalf("answer %s", resp.Body)
	}
	count := func(s *relaytest.Stream, marker string) int {
		n := 0
		for _, ev := range s.UntilEventID(t, marker) {
			if ev.Event == "announce" {
				n++
			}
		}
		return n
	}
	bob := userHeader(t, "bob")
	if n := count(both, publishAs(t, r, "team-1", bob, `{}`)); n != 1 {
		t.Errorf("a connection in two rooms of the namespace got the broadcast %d times", n)
	}
	if n := count(single, publishAs(t, r, "team-3", bob, `{}`)); n != 1 {
		t.Errorf("a single-room stream got the broadcast %d times", n)
	}
	if n := count(outside, publishAs(t, r, "public:lobby", bob, `{}`)); n != 0 {
		t.Errorf("a stream of another namespace got the broadcast %d times", n)
	}
	pm := postJSON(t, r, "/v1/users/alice/events", server(), `{}`)
	var pp relaytest.Published
	pm.JSON(t, &pp)
	if n := count(userOnly, *pp.ID); n != 0 {
		t.Errorf("a stream in no room got the broadcast %d times", n)
	}

	// Resume covers it, for single- and multi-room streams.
	lastBoth, lastSingle := both.LastEventID(), single.LastEventID()
	both.Close()
	single.Close()
	missed := postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce","data":"missed"}`)
	missed.JSON(t, &p)
	for name, path := range map[string]string{lastBoth: "/v1/stream", lastSingle: "/v1/rooms/team-3/events"} {
		s := r.Subscribe(t, path, relaytest.StreamOptions{Header: alice, LastEventID: name})
		s.Connected(t)
		// What the client had not received before it left comes back
		// (such as the private message above), then the broadcast, once.
		if n := count(s, *p.ID); n != 1 {
			t.Errorf("%s resumed with the missed broadcast %d times", path, n)
		}
	}
	// Leaving the namespace's last room stops broadcasts.
	s := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: alice})
	conn := s.Connected(t).Connection
	if resp := r.Do(t, relaytest.Request{Method: http.MethodDelete, Path: "/v1/connections/" + conn + "/rooms/team-1", Header: relaytest.Bearer(aliceToken)}); resp.Status != http.StatusNoContent {
		t.Fatalf("leave: %d %s", resp.Status, resp.Body)
	}
	s.Expect(t, "roomcast:left")
	postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce"}`)
	pm = postJSON(t, r, "/v1/users/alice/events", server(), `{}`)
	pm.JSON(t, &pp)
	if n := count(s, *pp.ID); n != 0 {
		t.Errorf("a stream that left the namespace got %d broadcasts", n)
	}
}

// A namespace's history_size rules its rooms' history.
func TestNamespaceRetention(t *testing.T) {
	t.Parallel()
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone},
		Named:   map[string]rooms.NamespaceOptions{"brief": {Anonymous: true, Publish: rooms.PublishAnyone, HistorySize: 3}},
	}
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Namespaces: ns}, Hub: rooms.HubOptions{Namespaces: ns}})
	var ids []string
	for range 10 {
		ids = append(ids, r.PublishJSON(t, "brief:x", map[string]any{"data": 1}))
		r.PublishJSON(t, "x", map[string]any{"data": 1})
	}
	for room, want := range map[string][]string{"brief:x": ids[7:], "x": nil} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodGet, Path: "/v1/rooms/" + room + "/history?limit=100"})
		var h struct{ Events []struct{ ID string } }
		resp.JSON(t, &h)
		if want == nil {
			if len(h.Events) != 10 {
				t.Errorf("%s keeps %d of 10 events", room, len(h.Events))
			}
			continue
		}
		var got []string
		for _, e := range h.Events {
			got = append(got, e.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s keeps %v, want the newest 3 %v", room, got, want)
		}
	}
}
