package relay_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	redisbb "github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
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

// metric scrapes /metrics and returns the value of the sample name, and
// whether it was there.
func metric(t *testing.T, r *relaytest.Relay, name string) (float64, bool) {
	t.Helper()
	resp := r.Scrape(t, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.Status)
	}
	sc := bufio.NewScanner(bytes.NewReader(resp.Body))
	for sc.Scan() {
		sample, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || sample != name {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics %s: %v", name, err)
		}
		return v, true
	}
	return 0, false
}

// TestRateBucketsAreBoundedGlobally: the in-memory rate-limit buckets are
// keyed by caller, and callers behind a trusted proxy (or with IPv6
// addresses) are many; one publish from each new address must not grow
// them past ROOMCAST_MAX_RATE_BUCKETS, and a new caller is served again
// once buckets refill (issue 12, item 2).
func TestRateBucketsAreBoundedGlobally(t *testing.T) {
	const maxBuckets = 20
	o := relaytest.Options{Relay: relay.Options{Limits: relay.Limits{
		MaxRateBuckets: maxBuckets,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}}}
	r := startMetered(t, o)
	from := func(i int) http.Header {
		return http.Header{"X-Forwarded-For": {fmt.Sprintf("10.%d.%d.1", i/256, i%256)}}
	}
	publish := func(i int) int {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
			Header: from(i), Body: []byte(`{"event":"e","data":"x"}`)}).Status
	}
	for i := range 200 {
		status := publish(i)
		if status != http.StatusAccepted && status != http.StatusOK && status != http.StatusTooManyRequests {
			t.Fatalf("publish from address %d: status %d", i, status)
		}
		if i%20 == 19 {
			n, ok := metric(t, r, "roomcast_rate_buckets")
			if !ok {
				t.Fatal("no roomcast_rate_buckets gauge")
			}
			if n > maxBuckets {
				t.Fatalf("after %d addresses published, %v rate buckets kept, bound %d", i+1, n, maxBuckets)
			}
		}
	}
	relaytest.Eventually(t, "a new address is served once buckets refill", func() bool {
		s := publish(1000)
		return s == http.StatusAccepted || s == http.StatusOK
	})
}

// TestIPv6CallersAreCountedByNetwork: an anonymous IPv6 client owns its
// whole /64 and can send from any address in it; per-address bounds count
// the /64, so rotating addresses does not make it a new caller, while a
// client in another /64 is one.
func TestIPv6CallersAreCountedByNetwork(t *testing.T) {
	o := relaytest.Options{Relay: relay.Options{Limits: relay.Limits{
		MaxIdempotencyKeysPerCaller: 1,
		TrustedProxies:              []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}}}
	r := startMetered(t, o)
	publish := func(from, key string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
			Header: http.Header{"X-Forwarded-For": {from}, "Idempotency-Key": {key}},
			Body:   []byte(`{"event":"e","data":"x"}`)})
	}
	if resp := publish("2001:db8:1:2::1", "k1"); resp.Status >= 300 {
		t.Fatalf("first key: %d %s", resp.Status, resp.Body)
	}
	resp := publish("2001:db8:1:2:ffff:1234:5678:9abc", "k2")
	if resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "limit_exceeded" {
		t.Fatalf("a second key from another address of the same /64: %d %s, want 429 limit_exceeded", resp.Status, resp.Body)
	}
	if resp := publish("2001:db8:1:3::1", "k3"); resp.Status >= 300 {
		t.Fatalf("a key from another /64: %d %s", resp.Status, resp.Body)
	}
	if resp := publish("192.0.2.7", "k4"); resp.Status >= 300 {
		t.Fatalf("a key from an IPv4 address: %d %s", resp.Status, resp.Body)
	}
}

// stateGauges are the gauges of the state requests create: none of them may
// grow because of a refused request, and each returns to its baseline once
// what created it is abandoned.
var stateGauges = []string{
	`roomcast_connections{transport="poll"}`,
	`roomcast_connections{transport="sse"}`,
	"roomcast_rooms",
	"roomcast_channels",
	"roomcast_backbone_channels",
	"roomcast_poll_sessions",
	"roomcast_poll_presence_leases",
	"roomcast_sessions",
	"roomcast_presence_entries",
	"roomcast_idempotency_keys",
	"roomcast_backbone_idempotency_keys",
	"roomcast_tickets",
	"roomcast_backbone_claims",
	"roomcast_backbone_sessions",
}

// startMetered starts an in-memory relay serving /metrics (relaytest.Start
// assembles it with its metrics, as main does).
func startMetered(t *testing.T, o relaytest.Options) *relaytest.Relay {
	t.Helper()
	return relaytest.Start(t, o)
}

// startRedisMetered starts a relay over the shared Redis (keys under a
// prefix of the test's own), serving /metrics.
func startRedisMetered(t *testing.T, o relaytest.Options) *relaytest.Relay {
	t.Helper()
	url := redistest.SharedURL(t)
	bb, err := redisbb.New(context.Background(), url, redisbb.Options{Prefix: redistest.Prefix(t), PresenceGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o.Backbone = bb
	return relaytest.Start(t, o)
}

// gauges scrapes /metrics over HTTP and returns the stateGauges.
func gauges(t *testing.T, r *relaytest.Relay) map[string]float64 {
	t.Helper()
	resp := r.Scrape(t, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.Status)
	}
	all := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(resp.Body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		all[name] = v
	}
	out := map[string]float64{}
	for _, name := range stateGauges {
		if v, ok := all[name]; ok {
			out[name] = v
		}
	}
	return out
}

// connectionsIn reads how many connections the presence list of room counts.
func connectionsIn(t *testing.T, r *relaytest.Relay, room string) int {
	t.Helper()
	resp := r.Get(t, "/v1/rooms/"+room+"/presence")
	if resp.Status != http.StatusOK {
		t.Fatalf("presence of %s: status %d: %s", room, resp.Status, resp.Body)
	}
	var p struct{ Connections int }
	resp.JSON(t, &p)
	return p.Connections
}

// firstCursor is the cursor of a first (immediate) poll of path.
func firstCursor(t *testing.T, r *relaytest.Relay, path string) string {
	t.Helper()
	resp := r.Get(t, path)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", path, resp.Status, resp.Body)
	}
	var a struct{ Cursor string }
	resp.JSON(t, &a)
	return a.Cursor
}

func errorCode(t *testing.T, resp *relaytest.Response) string {
	t.Helper()
	var e struct {
		Error struct{ Code string }
	}
	resp.JSON(t, &e)
	return e.Error.Code
}

// refusedCase is a request the relay must refuse without leaving state.
type refusedCase struct {
	name string
	// setup makes what the refusal needs (a parked session, a used key);
	// its state is the baseline.
	setup  func(t *testing.T, r *relaytest.Relay)
	req    func(t *testing.T, r *relaytest.Relay) relaytest.Request
	rooms  []string // rooms whose presence must not change
	status int
	code   string
}

// refusedCases covers every kind of request that creates state: polls,
// streams, joins, publishes and tickets.
func refusedCases(withAuth bool) []refusedCase {
	alice := func(t *testing.T) http.Header { return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, nil)) }
	// A held poll that returns at once (an event follows its cursor) and
	// parks its session for the next poll.
	parkSession := func(t *testing.T, r *relaytest.Relay, room, client string) string {
		first := r.Get(t, "/v1/rooms/"+room+"/poll?client="+client)
		var a struct{ Cursor, Connection string }
		first.JSON(t, &a)
		cur := a.Cursor
		r.PublishJSON(t, room, map[string]string{"event": "e", "data": "x"})
		// The anonymous poller keeps its id with the proof it was given.
		resp := r.Get(t, "/v1/rooms/"+room+"/poll?timeout=30&client="+client+"&proof="+url.QueryEscape(a.Connection)+"&cursor="+url.QueryEscape(cur))
		if resp.Status != http.StatusOK {
			t.Fatalf("held poll: status %d: %s", resp.Status, resp.Body)
		}
		relaytest.Eventually(t, "the session is parked", func() bool { return r.Hub.PollSessions() == 1 })
		return cur
	}
	cases := []refusedCase{
		{name: "room poll with a garbage cursor",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/rooms/p1/poll?cursor=garbage&client=client-1"}
			},
			rooms: []string{"p1"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "room poll with a tampered cursor",
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				cur := relaytest.Tamper(firstCursor(t, r, "/v1/rooms/p2/poll?timeout=0"))
				return relaytest.Request{Path: "/v1/rooms/p2/poll?timeout=1&cursor=" + url.QueryEscape(cur)}
			},
			rooms: []string{"p2"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "multi-room poll with a garbage cursor",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/poll?room=m1&room=m2&cursor=garbage&client=client-2"}
			},
			rooms: []string{"m1", "m2"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "poll with a bad timeout",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/rooms/p3/poll?timeout=NaN"}
			},
			rooms: []string{"p3"}, status: http.StatusBadRequest, code: "invalid_parameter"},
		{name: "poll over the caller's session bound",
			setup: func(t *testing.T, r *relaytest.Relay) { parkSession(t, r, "s1", "client-first") },
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				cur := firstCursor(t, r, "/v1/rooms/s2/poll?timeout=0")
				return relaytest.Request{Path: "/v1/rooms/s2/poll?timeout=30&client=client-second&cursor=" + url.QueryEscape(cur)}
			},
			rooms: []string{"s1", "s2"}, status: http.StatusTooManyRequests, code: "too_many_sessions"},
		{name: "poll over the caller's presence bound",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/poll?room=q1&room=q2&room=q3&timeout=1"}
			},
			rooms: []string{"q1", "q2", "q3"}, status: http.StatusTooManyRequests, code: "limit_exceeded"},
		{name: "multi-room stream of too many rooms",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				q := make([]string, testBoundedMaxRooms+1)
				for i := range q {
					q[i] = "room=t" + strconv.Itoa(i)
				}
				return relaytest.Request{Path: "/v1/stream?" + strings.Join(q, "&")}
			},
			rooms: []string{"t0", "t1"}, status: http.StatusBadRequest, code: "too_many_rooms"},
		{name: "multi-room stream over the caller's session bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				s := r.Subscribe(t, "/v1/stream?room=u1", relaytest.StreamOptions{})
				t.Cleanup(s.Close)
				s.Connected(t)
			},
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/stream?room=u2"}
			},
			rooms: []string{"u1", "u2"}, status: http.StatusTooManyRequests, code: "too_many_sessions"},
		{name: "join of an unknown connection",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/nobody/rooms/j1"}
			},
			rooms: []string{"j1"}, status: http.StatusNotFound, code: "unknown_connection"},
		{name: "join of a single-room stream",
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				s := r.Subscribe(t, "/v1/rooms/j2/events", relaytest.StreamOptions{})
				t.Cleanup(s.Close)
				c := s.Connected(t)
				return relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/j3"}
			},
			rooms: []string{"j3"}, status: http.StatusConflict, code: "single_room_stream"},
		{name: "publish with a bad body and an idempotency key",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/b1/events", Body: []byte("{"),
					Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-bad"}}}
			},
			status: http.StatusBadRequest, code: "invalid_json"},
		{name: "publish over the caller's idempotency key bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				r.Publish(t, "/v1/rooms/b2/events", "application/json", []byte(`{"event":"e","data":1}`), http.Header{"Idempotency-Key": {"k1"}})
			},
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/b3/events", Body: []byte(`{"event":"e","data":2}`),
					Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k2"}}}
			},
			status: http.StatusTooManyRequests, code: "limit_exceeded"},
	}
	if withAuth {
		cases = append(cases, refusedCase{name: "ticket over the user's bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				if resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: alice(t)}); resp.Status != http.StatusCreated {
					t.Fatalf("first ticket: status %d: %s", resp.Status, resp.Body)
				}
			},
			req: func(t *testing.T, _ *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: alice(t)}
			},
			status: http.StatusTooManyRequests, code: "limit_exceeded"})
	}
	return cases
}

const testBoundedMaxRooms = 8

// boundedOptions are small bounds, reached by a handful of requests, and
// timers long enough that nothing expires while a case is checked.
func boundedOptions() relaytest.Options {
	o := relaytest.Options{
		Hub: rooms.HubOptions{MaxRooms: testBoundedMaxRooms, PollSessionTTL: time.Minute,
			MaxPollSessionsPerCaller: 1, MaxPollPresencePerCaller: 2, MaxSessionsPerCaller: 1},
		Relay: relay.Options{Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1, MaxTicketsPerUser: 1}},
	}
	return o
}

// TestRefusedRequestLeavesNoState: a request answered with an error leaves
// nothing behind — no presence entry, connection, channel, session, key or
// ticket — whatever kind of request it was (issue 12, item 5).
func TestRefusedRequestLeavesNoState(t *testing.T) {
	for _, backbone := range []string{"memory", "redis"} {
		for _, c := range refusedCases(true) {
			t.Run(backbone+"/"+c.name, func(t *testing.T) {
				o := boundedOptions()
				o.Relay.Auth = relaytest.NewAuth(t, auth.Config{})
				var r *relaytest.Relay
				if backbone == "redis" {
					r = startRedisMetered(t, o)
				} else {
					r = startMetered(t, o)
				}
				if c.setup != nil {
					c.setup(t, r)
				}
				req := c.req(t, r)
				before := gauges(t, r)
				present := map[string]int{}
				for _, room := range c.rooms {
					present[room] = connectionsIn(t, r, room)
				}
				conns := r.Hub.Connections()
				bindings, err := r.Hub.ClientBindings(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				held := r.Hub.ClientIDsHeld()

				resp := r.Do(t, req)
				if resp.Status != c.status || errorCode(t, resp) != c.code {
					t.Fatalf("%s %s: status %d %s, want %d %s", req.Method, req.Path, resp.Status, resp.Body, c.status, c.code)
				}
				if resp.Status == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
					t.Errorf("a 429 without Retry-After")
				}

				if after := gauges(t, r); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("gauges changed by a refused request:\nbefore %v\nafter  %v", before, after)
				}
				for _, room := range c.rooms {
					if got := connectionsIn(t, r, room); got != present[room] {
						t.Errorf("presence of %s: %d connections after the refusal, %d before", room, got, present[room])
					}
				}
				if got := r.Hub.Connections(); got != conns {
					t.Errorf("hub connections: %d after the refusal, %d before", got, conns)
				}
				// Client-id bindings last minutes: a refused request
				// binds none (their gauges are not stateGauges, which
				// soak tests expect back at their baseline at once).
				if got, _ := r.Hub.ClientBindings(t.Context()); got != bindings {
					t.Errorf("client-id bindings: %d after the refusal, %d before", got, bindings)
				}
				if got := r.Hub.ClientIDsHeld(); got != held {
					t.Errorf("client ids counted for callers: %d after the refusal, %d before", got, held)
				}
			})
		}
	}
}

// TestStateIsBoundedPerCaller: past a caller's bound, another caller is
// still served, and the first one is again once its state is released.
func TestStateIsBoundedPerCaller(t *testing.T) {
	o := boundedOptions()
	o.Relay.Auth = relaytest.NewAuth(t, auth.Config{})
	o.Hub.PollSessionTTL = 300 * time.Millisecond
	r := startMetered(t, o)
	as := func(user string) http.Header {
		return relaytest.Bearer(relaytest.Token(t, user, time.Hour, nil))
	}
	heldPoll := func(user, room, client string) *relaytest.Response {
		cur := firstCursor(t, r, "/v1/rooms/"+room+"/poll?timeout=0")
		r.PublishJSON(t, room, map[string]string{"event": "e", "data": "x"})
		return r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0.2&client=" + client + "&cursor=" + url.QueryEscape(cur), Header: as(user)})
	}
	if resp := heldPoll("alice", "a1", "client-alice-1"); resp.Status != http.StatusOK {
		t.Fatalf("alice's first held poll: %d %s", resp.Status, resp.Body)
	}
	if resp := heldPoll("alice", "a2", "client-alice-2"); resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "too_many_sessions" {
		t.Fatalf("alice's second session: %d %s, want 429 too_many_sessions", resp.Status, resp.Body)
	}
	if resp := heldPoll("bob", "b1", "client-bob-1"); resp.Status != http.StatusOK {
		t.Fatalf("bob's held poll, while alice is at her bound: %d %s", resp.Status, resp.Body)
	}
	relaytest.Eventually(t, "the parked sessions expire", func() bool { return r.Hub.PollSessions() == 0 })
	if resp := heldPoll("alice", "a3", "client-alice-3"); resp.Status != http.StatusOK {
		t.Fatalf("alice's held poll once her session expired: %d %s", resp.Status, resp.Body)
	}
}

// TestAbandonedStateReturnsToBaseline is the soak test of issue 12, item 2:
// real HTTP clients create every kind of state — streams, held polls and
// joins on rooms nobody publishes to, parked poll sessions, presence,
// multi-room sessions, idempotency keys, tickets — and abandon it; every
// gauge returns to its baseline and the heap stays within a coarse bound.
func TestAbandonedStateReturnsToBaseline(t *testing.T) {
	for _, backbone := range []string{"memory", "redis"} {
		t.Run(backbone, func(t *testing.T) { testAbandonedState(t, backbone) })
	}
}

// inProcessOnly are the gauges of state the embedded backbone keeps in the
// process and Redis keeps in Redis.
var inProcessOnly = map[string]bool{
	"roomcast_presence_entries":          true,
	"roomcast_backbone_idempotency_keys": true,
	"roomcast_backbone_claims":           true,
	"roomcast_backbone_sessions":         true,
}

func testAbandonedState(t *testing.T, backbone string) {
	const rounds, roomsPerRound = 20, testBoundedMaxRooms - 1
	o := relaytest.Options{
		Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{TicketTTL: time.Second, SpentTicketKept: time.Second}),
			Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1000}, IdempotencyTTL: time.Second},
		Hub:    rooms.HubOptions{MaxRooms: testBoundedMaxRooms, PollSessionTTL: 200 * time.Millisecond, SessionTTL: time.Second},
		Memory: memory.Options{HistoryAge: time.Second, PresenceGrace: 100 * time.Millisecond},
	}
	var r *relaytest.Relay
	if backbone == "redis" {
		r = startRedisMetered(t, o)
	} else {
		r = startMetered(t, o)
	}
	base := gauges(t, r)
	for _, name := range stateGauges {
		if _, ok := base[name]; !ok && (backbone == "memory" || !inProcessOnly[name]) {
			t.Fatalf("no gauge %s in /metrics", name)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBase := ms.HeapAlloc

	token := relaytest.Token(t, "soaker", time.Hour, nil)
	for round := range rounds {
		names := make([]string, roomsPerRound)
		query := make([]string, roomsPerRound)
		for i := range names {
			names[i] = fmt.Sprintf("soak-%d-%d", round, i)
			query[i] = "room=" + names[i]
		}
		rooms := strings.Join(query, "&")
		// A multi-room stream of new rooms, one more joined, then dropped.
		s := r.Subscribe(t, "/v1/stream?"+rooms, relaytest.StreamOptions{})
		c := s.Connected(t)
		if resp := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/soak-join-" + strconv.Itoa(round)}); resp.Status != http.StatusNoContent {
			t.Fatalf("join: %d %s", resp.Status, resp.Body)
		}
		s.Close()
		// A held poll of new rooms that times out, its session parked and
		// abandoned, its presence leases left to expire.
		cur := firstCursor(t, r, "/v1/poll?"+rooms+"&timeout=0.05")
		client := "soak-client-" + strconv.Itoa(round)
		if resp := r.Get(t, "/v1/poll?"+rooms+"&timeout=0.05&client="+client+"&cursor="+url.QueryEscape(cur)); resp.Status != http.StatusOK {
			t.Fatalf("held poll: %d %s", resp.Status, resp.Body)
		}
		// A publish with an idempotency key, and a ticket.
		r.Publish(t, "/v1/rooms/"+names[0]+"/events", "application/json", []byte(`{"event":"e","data":1}`),
			http.Header{"Idempotency-Key": {"soak-" + strconv.Itoa(round)}})
		ticket := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(token)})
		if ticket.Status != http.StatusCreated {
			t.Fatalf("ticket: %d %s", ticket.Status, ticket.Body)
		}
		var tk struct{ Ticket string }
		ticket.JSON(t, &tk)
		// Redeemed by a stream, which is dropped.
		ts := r.Subscribe(t, "/v1/rooms/"+names[1]+"/events?ticket="+url.QueryEscape(tk.Ticket), relaytest.StreamOptions{})
		ts.Connected(t)
		ts.Close()
	}
	grown := gauges(t, r)
	grew := []string{"roomcast_idempotency_keys", "roomcast_tickets"}
	if backbone == "memory" {
		grew = append(grew, "roomcast_backbone_channels")
	}
	for _, name := range grew {
		if grown[name] <= base[name] {
			t.Errorf("%s did not grow (%v → %v): the soak did not create what it abandons", name, base[name], grown[name])
		}
	}

	// Polled: expiry has no event to await.
	relaytest.EventuallyOK(t, "the gauges return to their baseline", func() error {
		if last := gauges(t, r); fmt.Sprint(last) != fmt.Sprint(base) {
			return fmt.Errorf("\nbaseline %v\nnow      %v", base, last)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > heapBase+64<<20 {
		t.Errorf("heap %d MB after the soak, %d MB before", ms.HeapAlloc>>20, heapBase>>20)
	}
}

// TestSubscribedOnlyChannelsAreFreed: polling, streaming or joining rooms
// nobody publishes to leaves no channel behind in the memory backbone
// (it kept every one of them for ever).
func TestSubscribedOnlyChannelsAreFreed(t *testing.T) {
	r := startMetered(t, relaytest.Options{Hub: rooms.HubOptions{PollSessionTTL: 100 * time.Millisecond}})
	base := r.Backbone.Channels()
	for i := range 50 {
		room := "fresh-" + strconv.Itoa(i)
		cur := firstCursor(t, r, "/v1/poll?room="+room)
		if resp := r.Get(t, "/v1/poll?room="+room+"&timeout=0.01&client=client-"+strconv.Itoa(i)+"&cursor="+url.QueryEscape(cur)); resp.Status != http.StatusOK {
			t.Fatalf("held poll: %d %s", resp.Status, resp.Body)
		}
	}
	relaytest.Eventually(t, "the sessions expire and their channels are freed", func() bool {
		return r.Hub.PollSessions() == 0 && r.Backbone.Channels() == base
	})
}

// TestRefusedPublishSpendsNoAllowance: a publish refused for what it is
// (exclude_self without a connection, "exclude" from a client) does not use
// up the caller's publish rate.
func TestRefusedPublishSpendsNoAllowance(t *testing.T) {
	r := startMetered(t, relaytest.Options{Relay: relay.Options{Limits: relay.Limits{PublishRate: 0.001, PublishBurst: 1}}})
	for _, body := range []string{`{"event":"e","data":1,"exclude_self":true}`, `{"event":"e","data":1,"exclude":["someone"]}`} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/rate/events", Body: []byte(body),
			Header: http.Header{"Content-Type": {"application/json"}}})
		if resp.Status/100 != 4 || resp.Status == http.StatusTooManyRequests {
			t.Fatalf("%s: status %d %s, want a refusal for the body", body, resp.Status, resp.Body)
		}
	}
	r.Publish(t, "/v1/rooms/rate/events", "application/json", []byte(`{"event":"e","data":1}`), nil)
}

// TestChannelsAreBoundedGlobally: the embedded backbone keeps at most
// MaxChannels channels; what would need one more is refused with 429
// limit_exceeded and leaves nothing, and the room is there again once
// channels are freed.
func TestChannelsAreBoundedGlobally(t *testing.T) {
	r := startMetered(t, relaytest.Options{Memory: memory.Options{MaxChannels: 3}})
	// The control channel is one; a stream of a room holds the room and
	// its namespace channel.
	s := r.Subscribe(t, "/v1/rooms/first/events", relaytest.StreamOptions{})
	s.Connected(t)
	before := gauges(t, r)
	for _, req := range []relaytest.Request{
		{Path: "/v1/stream?room=a&room=b"},
		{Method: http.MethodPost, Path: "/v1/rooms/other:x/events", Body: []byte(`{"event":"e","data":1}`), Header: http.Header{"Content-Type": {"application/json"}}},
	} {
		resp := r.Open(t, req)
		if resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "limit_exceeded" {
			t.Fatalf("%s %s: status %d %s, want 429 limit_exceeded", req.Method, req.Path, resp.Status, resp.Body)
		}
		if after := gauges(t, r); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("gauges changed by a refused request:\nbefore %v\nafter  %v", before, after)
		}
	}
	s.Close()
	relaytest.Eventually(t, "the stream's channels are freed", func() bool { return r.Backbone.Channels() == 1 })
	r.PublishJSON(t, "other:x", map[string]any{"event": "e", "data": 1})
}

// countAccepted sends n publishes, publish i built by req(i), and returns
// how many were accepted; anything but 202 or 429 fails the test.
func countAccepted(t *testing.T, n int, do func(i int) *relaytest.Response) int {
	t.Helper()
	accepted := 0
	for i := range n {
		switch resp := do(i); resp.Status {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("publish %d: status %d: %s", i, resp.Status, resp.Body)
		}
	}
	return accepted
}

// proxied is a request that a trusted proxy forwarded for client address.
func proxied(req relaytest.Request, addr string) relaytest.Request {
	req.Header.Set("X-Forwarded-For", addr)
	return req
}

// loopbackProxy trusts the test client (on loopback) as a proxy.
var loopbackProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// TestCallerTotalIPv6Prefix: an anonymous IPv6 caller is its /64, the
// block one subscriber gets: a host that picks a new address of its /64
// for every publish is still one caller, for the publish total, the
// namespace rates and the connection limit.
func TestCallerTotalIPv6Prefix(t *testing.T) {
	t.Parallel()
	limits := relay.Limits{PublishCallerRate: 0.01, PublishCallerBurst: 3, PublishRate: 0.01, PublishBurst: 2,
		MaxConnsPerIP: 1, TrustedProxies: loopbackProxy}
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Limits: limits}})
	publish := func(ns string, i int, addr string) *relaytest.Response {
		return r.Do(t, proxied(jsonPost(fmt.Sprintf("/v1/rooms/%s:r%d/events", ns, i), `{"data":1}`), addr))
	}
	if got := countAccepted(t, 10, func(i int) *relaytest.Response {
		return publish(fmt.Sprintf("ns%d", i), i, fmt.Sprintf("2001:db8:1:2::%x", i+1))
	}); got != 3 {
		t.Errorf("%d of 10 publishes from one /64 over 10 namespaces accepted, want the caller's total of 3", got)
	}
	if got := countAccepted(t, 5, func(i int) *relaytest.Response {
		return publish("one", i, fmt.Sprintf("2001:db8:1:9:%x::1", i+1))
	}); got != 2 {
		// A fresh /64 has its own total, but one namespace's rate.
		t.Errorf("%d of 5 publishes from one /64 to one namespace accepted, want the namespace's burst of 2", got)
	}
	// An IPv4-mapped address is the IPv4 caller.
	if got := countAccepted(t, 5, func(i int) *relaytest.Response {
		addr := "192.0.2.7"
		if i%2 == 1 {
			addr = "::ffff:192.0.2.7"
		}
		return publish(fmt.Sprintf("v4n%d", i), i, addr)
	}); got != 3 {
		t.Errorf("%d of 5 publishes from one IPv4 address (plain and mapped) accepted, want 3", got)
	}

	// The connection limit (1 per address) counts the /64 too.
	r.OpenRaw(t, "/v1/rooms/lobby/events", http.Header{"X-Forwarded-For": {"2001:db8:5:6::1"}})
	second := r.Open(t, proxied(relaytest.Request{Path: "/v1/rooms/lobby/events", Header: http.Header{}}, "2001:db8:5:6::2"))
	wantError(t, second, http.StatusTooManyRequests, "too_many_connections")
}

// TestCallerTotalIPv6PrefixAcrossInstances is TestCallerTotalIPv6Prefix's
// publish total on two instances sharing a real Redis.
func TestCallerTotalIPv6PrefixAcrossInstances(t *testing.T) {
	t.Parallel()
	url, prefix := redistest.SharedURL(t), redistest.Prefix(t)
	limits := relay.Limits{PublishRate: 1e6, PublishBurst: 1e6, PublishCallerRate: 0.01, PublishCallerBurst: 5,
		TrustedProxies: loopbackProxy}
	bases := []string{startOnRedis(t, url, prefix, limits), startOnRedis(t, url, prefix, limits)}
	got := countAccepted(t, 20, func(i int) *relaytest.Response {
		req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/v1/rooms/ns%d:r1/events", bases[i%2], i), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("2001:db8:7:8:%x::%x", i, i+1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return &relaytest.Response{Status: resp.StatusCode}
	})
	if got != 5 {
		t.Errorf("%d of 20 publishes from one /64 over two instances accepted, want the caller's total of 5", got)
	}
}

// TestCallerTotalDevTokens: development tokens are handed to anyone who
// asks, so the identity they carry is no better than the address that
// asked for it: a caller minting tokens (20 at once are allowed) and
// publishing with each in turn is one caller.
func TestCallerTotalDevTokens(t *testing.T) {
	t.Parallel()
	a := relaytest.NewAuth(t, auth.Config{})
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: a, DevTokenKey: []byte(relaytest.JWTSecret),
		Limits: relay.Limits{PublishCallerRate: 0.01, PublishCallerBurst: 3}}})
	tokens := make([]string, 8)
	for i := range tokens {
		var tok devTokenAnswer
		resp := postDevToken(t, r, `{"name":"mallory"}`, nil)
		if resp.Status != http.StatusOK {
			t.Fatalf("dev token %d: status %d: %s", i, resp.Status, resp.Body)
		}
		resp.JSON(t, &tok)
		tokens[i] = tok.Token
	}
	if got := countAccepted(t, len(tokens), func(i int) *relaytest.Response {
		req := jsonPost(fmt.Sprintf("/v1/rooms/ns%d:r/events", i), `{"data":1}`)
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		return r.Do(t, req)
	}); got != 3 {
		t.Errorf("%d of %d publishes with fresh development tokens accepted, want the address's total of 3", got, len(tokens))
	}
	// A real user's token is its own caller, whatever the address.
	if got := countAccepted(t, 1, func(int) *relaytest.Response {
		req := jsonPost("/v1/rooms/other:r/events", `{"data":1}`)
		for k, v := range userHeader(t, "dev-lookalike") {
			req.Header[k] = v
		}
		return r.Do(t, req)
	}); got != 1 {
		t.Error("a backend's token of user dev-lookalike was charged to the address's development tokens")
	}
}

// TestPublishLimitHoldsWhileRedisStalls: a rate check that Redis does not
// answer in time refuses the publish (503) instead of asking the
// instance's own, full, buckets: the publish goes to the same Redis, so
// when Redis answered again in time for it, each instance let a fresh
// burst through past the shared limit.
func TestPublishLimitHoldsWhileRedisStalls(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	prefix := redistest.Prefix(t)
	limits := relay.Limits{PublishCallerRate: 0.001, PublishCallerBurst: 3}
	bases := []string{startOnRedis(t, srv.URL(), prefix, limits), startOnRedis(t, srv.URL(), prefix, limits)}
	publish := func(base string, i int) int {
		resp, err := http.Post(fmt.Sprintf("%s/v1/rooms/ns%d:r/events", base, i), "application/json", strings.NewReader(`{"data":1}`))
		if err != nil {
			t.Error(err)
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if status := publish(bases[i%2], i); status != http.StatusAccepted {
			t.Fatalf("publish %d within the total: status %d", i, status)
		}
	}
	// Every script waits out the pause: longer than a call's 2 s
	// timeout, shorter than two.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Client().Do(ctx, "CLIENT", "PAUSE", "2500", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	statuses := make([]int, 6)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = publish(bases[i%2], 10+i)
		}()
	}
	wg.Wait()
	for i, status := range statuses {
		if status == http.StatusAccepted {
			t.Errorf("publish %d over the total, while Redis stalled: accepted (statuses %v)", i, statuses)
			break
		}
	}
	// Once Redis answers, the total still holds.
	if status := publish(bases[0], 99); status != http.StatusTooManyRequests {
		t.Errorf("publish over the total after the stall: status %d, want 429", status)
	}
}

// TestPublishBodyBoundedByWhatTheCallerMayPublish: a namespace may take
// large bodies (here 1 MiB, from the server or users only); nobody else
// gets the relay to read, buffer and parse a body that large. A caller
// that may not publish to the room named in the URL is refused before its
// body is read, and POST /v1/events reads no more than the largest limit
// of the namespaces the caller may publish in. Each request sends 4 KiB
// that are not JSON: a body that was read and parsed answers invalid_json.
func TestPublishBodyBoundedByWhatTheCallerMayPublish(t *testing.T) {
	t.Parallel()
	base := rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone}
	files := base
	files.Publish, files.MaxPayload = rooms.PublishServer, 1<<20
	members := base
	members.Publish, members.MaxPayload = rooms.PublishAuthenticated, 1<<20
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth:       relaytest.NewAuth(t, auth.Config{}),
		MaxPayload: 1024,
		Namespaces: &rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{"files": files, "members": members}},
	}})
	alice := userHeader(t, "alice")
	cases := []struct {
		name, path string
		caller     http.Header
		status     int
		code       string
	}{
		{"room the caller may not publish to", "/v1/rooms/files:x/events", nil, http.StatusUnauthorized, "unauthenticated"},
		{"room of a namespace for users only", "/v1/rooms/members:x/events", nil, http.StatusUnauthorized, "unauthenticated"},
		{"broadcast the caller may not send", "/v1/namespaces/files/events", nil, http.StatusUnauthorized, "unauthenticated"},
		{"broadcast a user may not send", "/v1/namespaces/files/events", alice, http.StatusForbidden, "forbidden"},
		{"several rooms, anonymous", "/v1/events", nil, http.StatusRequestEntityTooLarge, "payload_too_large"},
		// alice may publish in members (1 MiB): her body is read.
		{"several rooms, a user", "/v1/events", alice, http.StatusBadRequest, "invalid_json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			req := jsonPost(c.path, `{"rooms":["pub"],"data":"`+strings.Repeat("x", 4<<10))
			for k, v := range c.caller {
				req.Header[k] = v
			}
			wantError(t, r.Do(t, req), c.status, c.code)
		})
	}
}

// TestKeptStateBoundedPerCaller: the per-caller bounds on kept state count
// the same caller as the rate limits: idempotency keys of an IPv6 /64,
// and the idempotency keys and tickets of development users minted for
// one address, are one caller's. (The keys still answer only for their
// exact sender.)
func TestKeptStateBoundedPerCaller(t *testing.T) {
	t.Parallel()
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth: relaytest.NewAuth(t, auth.Config{}), DevTokenKey: []byte(relaytest.JWTSecret),
		Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 2, MaxTicketsPerUser: 2, TrustedProxies: loopbackProxy}}})
	keyed := func(i int, h http.Header) *relaytest.Response {
		req := jsonPost(fmt.Sprintf("/v1/rooms/k%d/events", i), `{"data":1}`)
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Idempotency-Key", fmt.Sprintf("key-%d", i))
		return r.Do(t, req)
	}
	for i := range 3 {
		resp := keyed(i, http.Header{"X-Forwarded-For": {fmt.Sprintf("2001:db8:3:4::%x", i+1)}})
		if i < 2 && resp.Status != http.StatusAccepted {
			t.Fatalf("keyed publish %d: status %d: %s", i, resp.Status, resp.Body)
		}
		if i == 2 {
			wantError(t, resp, http.StatusTooManyRequests, "limit_exceeded")
		}
	}

	dev := func() http.Header {
		var tok devTokenAnswer
		resp := postDevToken(t, r, `{"name":"mallory"}`, http.Header{"X-Forwarded-For": {"192.0.2.9"}})
		if resp.Status != http.StatusOK {
			t.Fatalf("dev token: status %d: %s", resp.Status, resp.Body)
		}
		resp.JSON(t, &tok)
		return http.Header{"Authorization": {"Bearer " + tok.Token}, "X-Forwarded-For": {"192.0.2.9"}}
	}
	for i := range 3 {
		resp := keyed(10+i, dev())
		if i < 2 && resp.Status != http.StatusAccepted {
			t.Fatalf("keyed publish %d with a development token: status %d: %s", i, resp.Status, resp.Body)
		}
		if i == 2 {
			wantError(t, resp, http.StatusTooManyRequests, "limit_exceeded")
		}
	}
	for i := range 3 {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: dev()})
		if i < 2 && resp.Status != http.StatusCreated {
			t.Fatalf("ticket %d with a development token: status %d: %s", i, resp.Status, resp.Body)
		}
		if i == 2 {
			wantError(t, resp, http.StatusTooManyRequests, "limit_exceeded")
		}
	}
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

// TestCallerTotalAcrossInstances: the per-caller total holds for an
// anonymous caller spreading publishes over namespaces and over two
// instances sharing a real Redis (the ns0:r1 … ns199:r1).
func TestCallerTotalAcrossInstances(t *testing.T) {
	t.Parallel()
	url, prefix := redistest.SharedURL(t), redistest.Prefix(t)
	limits := relay.Limits{PublishRate: 1e6, PublishBurst: 1e6, PublishCallerRate: 0.01, PublishCallerBurst: 5}
	a, b := startOnRedis(t, url, prefix, limits), startOnRedis(t, url, prefix, limits)
	accepted := 0
	for i := range 20 {
		base := a
		if i%2 == 1 {
			base = b
		}
		resp, err := http.Post(fmt.Sprintf("%s/v1/rooms/ns%d:r1/events", base, i), "application/json", strings.NewReader(`{"data":1}`))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			accepted++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("publish %d: status %d", i, resp.StatusCode)
		}
	}
	if accepted != 5 {
		t.Errorf("%d of 20 publishes accepted, want the caller's total of 5", accepted)
	}
}
