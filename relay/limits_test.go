package relay_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// startLimited starts a secured relay with limits; heartbeats are short so
// that a closed stream gives its slot back promptly whichever writer
// serves it.
func startLimited(t *testing.T, l relay.Limits) *relaytest.Relay {
	t.Helper()
	return startSecured(t, func(o *relaytest.Options) {
		o.Relay.Limits = l
		o.Relay.Heartbeat = 50 * time.Millisecond
	})
}

// wantRateLimited requires a 429 with code and a whole-seconds Retry-After
// of at least one second.
func wantRateLimited(t *testing.T, resp *relaytest.Response, code string) {
	t.Helper()
	wantError(t, resp, http.StatusTooManyRequests, code)
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want whole seconds, at least 1", resp.Header.Get("Retry-After"))
	}
}

// TestPublishRateLimit: publishes are limited per user, and per address
// for anonymous callers; the API key is exempt.
func TestPublishRateLimit(t *testing.T) {
	t.Parallel()
	r := startLimited(t, relay.Limits{PublishRate: 0.5, PublishBurst: 3, RequestRate: 1e6, RequestBurst: 1e6})
	alice, bob := userHeader(t, "alice"), userHeader(t, "bob")
	for range 3 {
		publishAs(t, r, "lobby", alice, `{}`)
	}
	resp := postJSON(t, r, "/v1/rooms/lobby/events", alice, `{}`)
	wantRateLimited(t, resp, "rate_limited")
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q at 0.5/s, want 2", got)
	}
	// A fresh token of the same user is the same user.
	wantRateLimited(t, postJSON(t, r, "/v1/rooms/lobby/events", userHeader(t, "alice"), `{}`), "rate_limited")
	publishAs(t, r, "lobby", bob, `{}`)
	for range 10 {
		publishAs(t, r, "lobby", server(), `{}`)
	}
	// Anonymous callers share their address's bucket.
	for range 3 {
		publishAs(t, r, "public:lobby", nil, `{}`)
	}
	wantRateLimited(t, postJSON(t, r, "/v1/rooms/public:lobby/events", nil, `{}`), "rate_limited")
	// A refused publish is not retained.
	h := r.Do(t, relaytest.Request{Path: "/v1/rooms/lobby/history", Header: server()})
	var hist struct{ Events []any }
	h.JSON(t, &hist)
	if len(hist.Events) != 3+1+10 {
		t.Errorf("history holds %d events, want 14", len(hist.Events))
	}
}

// TestRequestRateLimit: tickets, joins and token refreshes are limited too.
func TestRequestRateLimit(t *testing.T) {
	t.Parallel()
	r := startLimited(t, relay.Limits{RequestRate: 0.5, RequestBurst: 2})
	token := relaytest.Token(t, "alice", time.Hour, nil)
	mustTicket(t, r, token)
	mustTicket(t, r, token)
	wantRateLimited(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(token)}), "rate_limited")

	s := r.Subscribe(t, "/v1/stream", relaytest.StreamOptions{Header: relaytest.BearerMap(token)})
	conn := s.Connected(t).Connection
	join := func(h http.Header, room string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + conn + "/rooms/" + room, Header: h})
	}
	for _, room := range []string{"a", "b"} {
		if resp := join(relaytest.Bearer(token), room); resp.Status != http.StatusNoContent {
			t.Fatalf("join %s: %d %s", room, resp.Status, resp.Body)
		}
	}
	wantRateLimited(t, join(relaytest.Bearer(token), "c"), "rate_limited")
	if resp := join(server(), "c"); resp.Status != http.StatusNoContent {
		t.Errorf("the server's join: %d %s", resp.Status, resp.Body)
	}
	refresh := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(token)})
	if refresh.Status != http.StatusNoContent {
		t.Errorf("first refresh: %d %s", refresh.Status, refresh.Body)
	}
	refresh = r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(token)})
	if refresh.Status != http.StatusNoContent {
		t.Errorf("second refresh: %d %s", refresh.Status, refresh.Body)
	}
	wantRateLimited(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(token)}), "rate_limited")
}

// TestConnectionLimits: open streams and polls count per user and per
// address; over either the answer is 429 too_many_connections, and a
// closed stream frees its slot.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	r := startLimited(t, relay.Limits{MaxConnsPerUser: 2, MaxConnsPerIP: 3})
	alice := relaytest.Token(t, "alice", time.Hour, nil)
	first := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(alice)})
	first.Connected(t)
	second := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(alice)})
	second.Connected(t)
	for _, req := range []relaytest.Request{
		{Path: "/v1/stream?room=lobby", Header: relaytest.Bearer(alice)},
		{Path: "/v1/rooms/lobby/poll?timeout=0", Header: relaytest.Bearer(alice)},
		{Path: "/v1/rooms/lobby/events?ticket=" + mustTicket(t, r, alice)},
	} {
		wantRateLimited(t, r.Open(t, req), "too_many_connections")
	}
	bob := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bob.Connected(t)
	// The address now holds three: nobody else gets in from it ...
	wantRateLimited(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events"}), "too_many_connections")
	wantRateLimited(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/lobby/events", Header: userHeader(t, "carol")}), "too_many_connections")
	// ... except the server, which no limit holds back.
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/lobby/events", Header: server()}); resp.Status != http.StatusOK {
		t.Errorf("the server's stream: %d %s", resp.Status, resp.Body)
	}

	first.Close()
	relaytest.Eventually(t, "alice's closed stream frees its slot", func() bool {
		return r.Open(t, relaytest.Request{Path: "/v1/rooms/lobby/events", Header: relaytest.Bearer(alice)}).Status == http.StatusOK
	})
}

// TestTrustedProxies: a forwarding header names the client only when the
// peer is a trusted proxy; otherwise the peer is the client.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	limits := func(proxy string) relay.Limits {
		return relay.Limits{MaxConnsPerIP: 1, PublishRate: 0.1, PublishBurst: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix(proxy)}}
	}
	stream := func(r *relaytest.Relay, kv ...string) *relaytest.Response {
		return r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events", Header: header(nil, kv...)})
	}
	hold := func(r *relaytest.Relay, kv ...string) {
		t.Helper()
		h := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{Header: h}).Connected(t)
	}

	t.Run("trusted, Fly-Client-IP", func(t *testing.T) {
		l := limits("127.0.0.1/32")
		l.ClientIPHeader = relay.HeaderFlyClientIP
		r := startLimited(t, l)
		hold(r, "Fly-Client-IP", "203.0.113.1")
		hold(r, "Fly-Client-IP", "203.0.113.2")
		wantRateLimited(t, stream(r, "Fly-Client-IP", "203.0.113.1"), "too_many_connections")
		// Anonymous publishes are limited per forwarded address too.
		publishAs(t, r, "public:lobby", header(nil, "Fly-Client-IP", "203.0.113.1"), `{}`)
		wantRateLimited(t, postJSON(t, r, "/v1/rooms/public:lobby/events", header(nil, "Fly-Client-IP", "203.0.113.1"), `{}`), "rate_limited")
		publishAs(t, r, "public:lobby", header(nil, "Fly-Client-IP", "203.0.113.2"), `{}`)
	})
	t.Run("trusted, X-Forwarded-For", func(t *testing.T) {
		r := startLimited(t, limits("127.0.0.1/32"))
		hold(r, "X-Forwarded-For", "198.51.100.7, 127.0.0.1")
		hold(r, "X-Forwarded-For", "198.51.100.8")
		wantRateLimited(t, stream(r, "X-Forwarded-For", "198.51.100.7"), "too_many_connections")
		publishAs(t, r, "public:lobby", header(nil, "X-Forwarded-For", "198.51.100.7"), `{}`)
		wantRateLimited(t, postJSON(t, r, "/v1/rooms/public:lobby/events", header(nil, "X-Forwarded-For", "198.51.100.7"), `{}`), "rate_limited")
		publishAs(t, r, "public:lobby", header(nil, "X-Forwarded-For", "198.51.100.8"), `{}`)
	})
	t.Run("untrusted", func(t *testing.T) {
		r := startLimited(t, limits("10.0.0.0/8"))
		hold(r, "Fly-Client-IP", "203.0.113.1")
		wantRateLimited(t, stream(r, "Fly-Client-IP", "203.0.113.2"), "too_many_connections")
		wantRateLimited(t, stream(r, "X-Forwarded-For", "198.51.100.7"), "too_many_connections")
		publishAs(t, r, "public:lobby", header(nil, "Fly-Client-IP", "203.0.113.1"), `{}`)
		wantRateLimited(t, postJSON(t, r, "/v1/rooms/public:lobby/events", header(nil, "Fly-Client-IP", "203.0.113.2"), `{}`), "rate_limited")
	})
}
