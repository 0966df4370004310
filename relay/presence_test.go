package relay_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/memory"
)

// presenceGrace is the grace period of presence tests: short, yet long
// enough for a reconnect to land within it.
const presenceGrace = 400 * time.Millisecond

type presenceAnswer struct {
	Room        string `json:"room"`
	Users       int    `json:"users"`
	Connections int    `json:"connections"`
	Members     []struct {
		User        string `json:"user"`
		Name        string `json:"name"`
		Connections int    `json:"connections"`
	} `json:"members"`
	Anonymous int `json:"anonymous"`
}

// presenceOf reads a room's presence and checks its shape.
func presenceOf(t *testing.T, r *relaytest.Relay, room string, h http.Header) presenceAnswer {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/presence", Header: h})
	if resp.Status != http.StatusOK {
		t.Fatalf("presence of %s: status %d: %s", room, resp.Status, resp.Body)
	}
	if got := objectKeys(t, resp.Body); !slices.Equal(got, []string{"anonymous", "connections", "members", "room", "users"}) {
		t.Fatalf("presence keys %v: %s", got, resp.Body)
	}
	var raw struct{ Members []json.RawMessage }
	resp.JSON(t, &raw)
	if raw.Members == nil {
		t.Fatalf("members is not a list: %s", resp.Body)
	}
	for _, m := range raw.Members {
		if got := objectKeys(t, m); !slices.Equal(got, []string{"connections", "name", "user"}) {
			t.Fatalf("member keys %v: %s", got, m)
		}
	}
	var p presenceAnswer
	resp.JSON(t, &p)
	return p
}

// summary renders a presence list compactly for comparisons.
func (p presenceAnswer) summary() string {
	s := fmt.Sprintf("users=%d connections=%d anonymous=%d", p.Users, p.Connections, p.Anonymous)
	for _, m := range p.Members {
		s += fmt.Sprintf(" %s(%s)x%d", m.User, m.Name, m.Connections)
	}
	return s
}

// presenceEvent decodes roomcast:join or roomcast:leave and checks it is
// volatile and names user.
func presenceEvent(t *testing.T, ev relaytest.Event, name, user string) {
	t.Helper()
	if ev.Event != name {
		t.Fatalf("got %q %s, want %s of %s", ev.Event, ev.Data, name, user)
	}
	env := ev.Envelope(t)
	var d struct{ User, Name string }
	if err := json.Unmarshal(env.Data, &d); err != nil || d.User != user || d.Name == "" {
		t.Errorf("%s data %s, want user %s with a name", name, env.Data, user)
	}
	if env.ID != nil {
		t.Errorf("%s has id %s: presence events are volatile", name, *env.ID)
	}
}

// probe connects user to room and disconnects it, and waits on watcher
// for that user's join and leave: anything else the watcher hears in
// between is returned. Timers of earlier leaves run out before the
// probe's own.
func probe(t *testing.T, r *relaytest.Relay, watcher *relaytest.Stream, room, user string) []relaytest.Event {
	t.Helper()
	s := r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, user, time.Hour, nil))})
	s.Connected(t)
	other := watcher.Until(t, func(ev relaytest.Event) bool {
		return ev.Event == "roomcast:join" && bytes.Contains([]byte(ev.Data), []byte(`"user":"`+user+`"`))
	})
	other = other[:len(other)-1]
	s.Close()
	evs := watcher.Until(t, func(ev relaytest.Event) bool { return ev.Event == "roomcast:leave" })
	presenceEvent(t, evs[len(evs)-1], "roomcast:leave", user)
	return append(other, evs[:len(evs)-1]...)
}

// TestPresence follows a room's presence through tabs, reconnects, a
// killed client and a poller: users and connections are counted apart,
// roomcast:join comes with a user's first connection (to the others, not
// the joiner) and roomcast:leave after their last one leaves and the grace
// period ends.
func TestPresence(t *testing.T) {
	t.Parallel()
	r := startSecured(t, func(o *relaytest.Options) {
		o.Memory = memory.Options{PresenceGrace: presenceGrace}
		// A stream written by the shared writer learns that its client
		// left when a write fails: heartbeats bound that.
		o.Relay.Heartbeat = 50 * time.Millisecond
	})
	const room = "public:lobby"
	token := func(user, name string) map[string]string {
		return relaytest.BearerMap(relaytest.Token(t, user, time.Hour, map[string]any{"name": name}))
	}
	watcher := r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: token("bob", "Bob")})
	watcher.Connected(t)
	aliceToken := token("alice", "Alice")

	tab1 := r.Subscribe(t, "/v1/stream?room="+room, relaytest.StreamOptions{Header: aliceToken})
	tab1.Connected(t)
	presenceEvent(t, watcher.NextEvent(t), "roomcast:join", "alice")
	tab2 := r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: aliceToken})
	tab2.Connected(t)
	anon := r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{})
	anon.Connected(t)

	if got, want := presenceOf(t, r, room, nil).summary(), "users=2 connections=4 anonymous=1 alice(Alice)x2 bob(Bob)x1"; got != want {
		t.Errorf("presence %s, want %s", got, want)
	}
	// The joiner does not hear its own join, and a second tab is no join.
	marker := publishAs(t, r, room, nil, `{"data":"marker"}`)
	expectIDs(t, tab1, []string{marker})
	expectIDs(t, tab2, []string{marker})
	expectIDs(t, watcher, []string{marker})

	// Closing one of two tabs is no leave.
	tab2.Close()
	relaytest.Eventually(t, "alice has one connection", func() bool {
		return presenceOf(t, r, room, nil).summary() == "users=2 connections=3 anonymous=1 alice(Alice)x1 bob(Bob)x1"
	})
	if evs := probe(t, r, watcher, room, "carol"); len(evs) != 0 {
		t.Errorf("closing one of two tabs announced %q %s", evs[0].Event, evs[0].Data)
	}

	// A reconnect within the grace period is neither a leave nor a join.
	tab1.Close()
	tab1 = r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{Header: aliceToken})
	tab1.Connected(t)
	relaytest.Eventually(t, "alice is back with one connection", func() bool {
		return presenceOf(t, r, room, nil).summary() == "users=2 connections=3 anonymous=1 alice(Alice)x1 bob(Bob)x1"
	})
	if evs := probe(t, r, watcher, room, "dave"); len(evs) != 0 {
		t.Errorf("a reconnect within the grace period announced %q %s", evs[0].Event, evs[0].Data)
	}

	// The last tab leaving is a leave, once the grace period is over.
	closed := time.Now()
	tab1.Close()
	presenceEvent(t, watcher.NextEvent(t), "roomcast:leave", "alice")
	if waited := time.Since(closed); waited < presenceGrace/2 {
		t.Errorf("leave announced %s after the close, before the grace period of %s", waited, presenceGrace)
	}
	if got, want := presenceOf(t, r, room, nil).summary(), "users=1 connections=2 anonymous=1 bob(Bob)x1"; got != want {
		t.Errorf("presence %s, want %s", got, want)
	}

	// A client killed without a goodbye disappears too.
	kill := killedClient(t, r, "/v1/rooms/"+room+"/events", aliceToken["Authorization"])
	presenceEvent(t, watcher.NextEvent(t), "roomcast:join", "alice")
	kill()
	relaytest.Eventually(t, "the killed client is gone", func() bool {
		return presenceOf(t, r, room, nil).summary() == "users=1 connections=2 anonymous=1 bob(Bob)x1"
	})
	presenceEvent(t, watcher.NextEvent(t), "roomcast:leave", "alice")

	// A poller is present while its lease, twice its timeout, lasts.
	p := r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0.3", Header: http.Header{"Authorization": {token("erin", "Erin")["Authorization"]}}})
	if p.Status != http.StatusOK {
		t.Fatalf("poll: %d %s", p.Status, p.Body)
	}
	if got, want := presenceOf(t, r, room, nil).summary(), "users=2 connections=3 anonymous=1 bob(Bob)x1 erin(Erin)x1"; got != want {
		t.Errorf("presence with a poller %s, want %s", got, want)
	}
	presenceEvent(t, watcher.NextEvent(t), "roomcast:join", "erin")
	relaytest.Eventually(t, "the poller's lease ran out", func() bool {
		return presenceOf(t, r, room, nil).summary() == "users=1 connections=2 anonymous=1 bob(Bob)x1"
	})
	presenceEvent(t, watcher.NextEvent(t), "roomcast:leave", "erin")
}

// connectedID finds the connection id in the roomcast:connected data.
var connectedID = regexp.MustCompile(`"connection":"([^"]+)"`)

// killedClient opens a stream on a raw TCP connection and returns a
// function that kills it the way a crashed device or a pulled cable
// would look to the server: a reset, without a clean close.
func killedClient(t *testing.T, r *relaytest.Relay, path, authorization string) (kill func()) {
	t.Helper()
	addr := r.HTTP.Listener.Addr().String()
	c, err := net.DialTimeout("tcp", addr, relaytest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(relaytest.Wait)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr, authorization)
	var got []byte
	buf := make([]byte, 4096)
	for !connectedID.Match(got) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reading the stream: %v (got %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
		t.Fatalf("answer %q", got)
	}
	return func() {
		if err := c.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// TestPresenceVisibility: presence is shown only to identities allowed to
// subscribe to the room, and only where the namespace keeps it.
func TestPresenceVisibility(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	limited := relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{"subscribe": []string{"team-*"}}}))
	cases := []struct {
		name   string
		room   string
		header http.Header
		status int
		code   string
	}{
		{"anonymous where a token is needed", "lobby", nil, 401, "unauthenticated"},
		{"bad token", "lobby", relaytest.Bearer("x.y.z"), 401, "invalid_token"},
		{"token that may not subscribe", "lobby", limited, 403, "forbidden"},
		{"token that may subscribe", "team-1", limited, 200, ""},
		{"user", "lobby", userHeader(t, "bob"), 200, ""},
		{"server", "lobby", server(), 200, ""},
		{"anonymous where anonymous may subscribe", "public:lobby", nil, 200, ""},
		{"namespace without presence", "quiet:room", server(), 404, "presence_off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == "" {
				if p := presenceOf(t, r, tc.room, tc.header); p.Room != tc.room || p.Users != 0 {
					t.Errorf("presence %+v", p)
				}
				return
			}
			wantError(t, r.Do(t, relaytest.Request{Path: "/v1/rooms/" + tc.room + "/presence", Header: tc.header}), tc.status, tc.code)
		})
	}
}

// TestPresenceListFollowsEvents: a user is listed from their roomcast:join
// until their roomcast:leave. During the grace period after their last
// connection they are still listed (with no connection), so a client that
// loaded the list then and applies the events it gets afterwards shows them
// when they come back within it, without a join.
func TestPresenceListFollowsEvents(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	r := startSecured(t, func(o *relaytest.Options) {
		o.Memory = memory.Options{PresenceGrace: grace}
		o.Relay.Heartbeat = 50 * time.Millisecond
	})
	const room = "public:listed"
	events := "/v1/rooms/" + room + "/events"
	watcher := r.Subscribe(t, events, relaytest.StreamOptions{})
	watcher.Connected(t)
	bobToken := relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, map[string]any{"name": "Bob"}))

	bob := r.Subscribe(t, events, relaytest.StreamOptions{Header: bobToken})
	bob.Connected(t)
	presenceEvent(t, watcher.NextEvent(t), "roomcast:join", "bob")
	if got, want := presenceOf(t, r, room, nil).summary(), "users=1 connections=2 anonymous=1 bob(Bob)x1"; got != want {
		t.Errorf("after the join: presence %s, want %s", got, want)
	}

	bob.Close()
	relaytest.Eventually(t, "bob's connection is gone and he is still listed", func() bool {
		return presenceOf(t, r, room, nil).summary() == "users=1 connections=1 anonymous=1 bob(Bob)x0"
	})
	bob = r.Subscribe(t, events, relaytest.StreamOptions{Header: bobToken})
	bob.Connected(t)
	if got, want := presenceOf(t, r, room, nil).summary(), "users=1 connections=2 anonymous=1 bob(Bob)x1"; got != want {
		t.Errorf("back within the grace period: presence %s, want %s", got, want)
	}
	bob.Close()
	leave := watcher.NextEvent(t)
	presenceEvent(t, leave, "roomcast:leave", "bob")
	// The list changed with the event, not after it.
	if got, want := presenceOf(t, r, room, nil).summary(), "users=0 connections=1 anonymous=1"; got != want {
		t.Errorf("after the leave: presence %s, want %s", got, want)
	}
}
