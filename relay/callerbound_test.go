package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

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
