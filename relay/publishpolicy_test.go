package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// publishPath is one way to publish: to target i (a room, or a user) of
// namespace ns, with data as the event's data.
type publishPath struct {
	name string
	// private: the path sends private messages, which belong to no
	// namespace, so namespace rules do not govern them.
	private bool
	request func(ns string, i int, data string) relaytest.Request
}

// companionRoom is a room anyone may publish to: a multi-room publish
// lists it first, so that a refusal proves the rule was applied to a room
// that was not the first.
const companionRoom = "pub:other"

var publishPaths = []publishPath{
	{name: "room", request: func(ns string, i int, data string) relaytest.Request {
		return jsonPost(fmt.Sprintf("/v1/rooms/%s:r%d/events", ns, i), `{"data":`+data+`}`)
	}},
	{name: "multi-room", request: func(ns string, i int, data string) relaytest.Request {
		return jsonPost("/v1/events", fmt.Sprintf(`{"rooms":[%q,"%s:r%d"],"data":%s}`, companionRoom, ns, i, data))
	}},
	{name: "namespace", request: func(ns string, _ int, data string) relaytest.Request {
		return jsonPost("/v1/namespaces/"+ns+"/events", `{"data":`+data+`}`)
	}},
	{name: "private", private: true, request: func(_ string, i int, data string) relaytest.Request {
		return jsonPost(fmt.Sprintf("/v1/users/u%d/events", i), `{"data":`+data+`}`)
	}},
}

func jsonPost(path, body string) relaytest.Request {
	return relaytest.Request{Method: http.MethodPost, Path: path, Body: []byte(body),
		Header: http.Header{"Content-Type": {"application/json"}}}
}

// policyNamespaces are the namespaces of TestPublishPolicyEveryPath: auth
// (a token needed; the default), pub (anyone), srv (the server only), tiny
// (64-byte bodies), slow (2 publishes, then one per 100 s).
func policyNamespaces() *rooms.Namespaces {
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated}
	pub, srv, tiny, slow := base, base, base, base
	pub.Anonymous, pub.Publish = true, rooms.PublishAnyone
	srv.Publish = rooms.PublishServer
	tiny.MaxPayload = 64
	slow.PublishRate, slow.PublishBurst = 0.01, 2
	return &rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{
		"auth": base, "pub": pub, "srv": srv, "tiny": tiny, "slow": slow,
	}}
}

// TestPublishPolicyEveryPath runs every publish rule through every publish
// path over HTTP: one policy decides them all. Private messages go to no
// namespace: the namespace rules (who may publish, strict namespaces, a
// namespace's payload and rate) do not apply to them, the rest does — the
// token's publish patterns included ("#user:<recipient>").
func TestPublishPolicyEveryPath(t *testing.T) {
	t.Parallel()
	alice := func(t *testing.T) http.Header { return userHeader(t, "alice") }
	anonymous := func(*testing.T) http.Header { return nil }
	small := `"x"`
	big := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	type outcome struct {
		status int
		code   string
	}
	accepted := outcome{http.StatusAccepted, ""}
	rules := []struct {
		name   string
		mod    func(*relaytest.Options)
		setup  func(t *testing.T, r *relaytest.Relay)
		caller func(*testing.T) http.Header
		// warm publishes go first, each to warmNS(i) target i; then the
		// checked one goes to ns.
		warm   int
		warmNS func(i int) string
		ns     string
		data   string
		want   outcome
		// private is the outcome for private messages when it differs.
		private *outcome
	}{
		{name: "allowed", caller: alice, ns: "auth", data: small, want: accepted},
		{name: "authorisation: only the server publishes", caller: alice, ns: "srv", data: small,
			want: outcome{403, "forbidden"}, private: &accepted},
		{name: "authorisation: the server may", caller: func(*testing.T) http.Header { return server() }, ns: "srv", data: small, want: accepted},
		{name: "anonymous where a token is needed", caller: anonymous, ns: "auth", data: small,
			want: outcome{401, "unauthenticated"}},
		{name: "anonymous where anyone may", caller: anonymous, ns: "pub", data: small,
			want: accepted, private: &outcome{401, "unauthenticated"}},
		{name: "publish patterns", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{"pub:*", "auth:allowed"}}}))
		}, ns: "auth", data: small, want: outcome{403, "forbidden"}},
		{name: "publish patterns that allow every path", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{"pub:*", "auth:*", "#user:*"}}}))
		}, ns: "auth", data: small, want: accepted},
		{name: "publish patterns: none", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{}}}))
		}, ns: "pub", data: small, want: outcome{403, "forbidden"}},
		{name: "bans", caller: alice, ns: "pub", data: small, want: outcome{403, "banned"},
			setup: func(t *testing.T, r *relaytest.Relay) {
				if resp := postJSON(t, r, "/v1/moderation/bans", server(), `{"user":"alice","duration":"10m"}`); resp.Status != http.StatusCreated {
					t.Fatalf("ban: status %d: %s", resp.Status, resp.Body)
				}
			}},
		{name: "namespace max_payload", caller: alice, ns: "tiny", data: big(100),
			want: outcome{413, "payload_too_large"}, private: &accepted},
		{name: "global max_payload", caller: alice, ns: "auth", data: big(2000),
			want: outcome{413, "payload_too_large"}},
		{name: "namespace publish_rate", caller: alice, warm: 2, warmNS: func(int) string { return "slow" }, ns: "slow", data: small,
			want: outcome{429, "rate_limited"}, private: &accepted},
		{name: "global publish rate", caller: alice, warm: 2, warmNS: func(int) string { return "auth" }, ns: "auth", data: small,
			mod:  func(o *relaytest.Options) { o.Relay.Limits.PublishRate, o.Relay.Limits.PublishBurst = 0.01, 2 },
			want: outcome{429, "rate_limited"}},
		{name: "per-caller total", caller: alice, warm: 3, warmNS: func(i int) string { return fmt.Sprintf("c%d", i) }, ns: "c9", data: small,
			mod: func(o *relaytest.Options) {
				o.Relay.Limits.PublishCallerRate, o.Relay.Limits.PublishCallerBurst = 0.01, 3
			},
			want: outcome{429, "rate_limited"}},
		{name: "per-caller total: the server is exempt", caller: func(*testing.T) http.Header { return server() },
			warm: 5, warmNS: func(i int) string { return fmt.Sprintf("c%d", i) }, ns: "c9", data: small,
			mod: func(o *relaytest.Options) {
				o.Relay.Limits.PublishCallerRate, o.Relay.Limits.PublishCallerBurst = 0.01, 3
			},
			want: accepted},
		{name: "strict namespaces", caller: alice, ns: "nope", data: small,
			mod:  func(o *relaytest.Options) { o.Relay.Namespaces.Strict = true },
			want: outcome{404, "unknown_namespace"}, private: &accepted},
	}
	for _, rule := range rules {
		for _, path := range publishPaths {
			t.Run(rule.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				opts := relaytest.Options{Relay: relay.Options{
					Auth:       relaytest.NewAuth(t, auth.Config{}),
					Namespaces: policyNamespaces(),
					MaxPayload: 1024,
				}}
				if rule.mod != nil {
					rule.mod(&opts)
				}
				r := relaytest.Start(t, opts)
				if rule.setup != nil {
					rule.setup(t, r)
				}
				caller := rule.caller(t)
				send := func(ns string, i int) *relaytest.Response {
					req := path.request(ns, i, rule.data)
					for k, v := range caller {
						req.Header[k] = v
					}
					return r.Do(t, req)
				}
				for i := range rule.warm {
					if resp := send(rule.warmNS(i), i); resp.Status != http.StatusAccepted {
						t.Fatalf("publish %d before the checked one: status %d: %s", i, resp.Status, resp.Body)
					}
				}
				want := rule.want
				if path.private && rule.private != nil {
					want = *rule.private
				}
				resp := send(rule.ns, rule.warm)
				if want.code == "" {
					if resp.Status != want.status {
						t.Fatalf("status %d, want %d: %s", resp.Status, want.status, resp.Body)
					}
					return
				}
				wantError(t, resp, want.status, want.code)
				if want.status == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
					t.Error("a 429 without Retry-After")
				}
				// A refused publish is not retained.
				var hist struct{ Events []json.RawMessage }
				r.Do(t, relaytest.Request{Path: "/v1/rooms/" + companionRoom + "/history", Header: server()}).JSON(t, &hist)
				if path.name == "multi-room" && len(hist.Events) != rule.warm {
					t.Errorf("%s holds %d events, want the %d accepted before", companionRoom, len(hist.Events), rule.warm)
				}
			})
		}
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

// startOnRedis runs an open relay on a Redis backbone under prefix and
// returns its base URL; relays started with the same prefix are instances
// of one deployment.
func startOnRedis(t *testing.T, url, prefix string, limits relay.Limits) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bb, err := redis.New(ctx, url, redis.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := rooms.NewCursorCodec([]byte("publish policy test cursor key!!"))
	if err != nil {
		t.Fatal(err)
	}
	hub := rooms.NewHub(bb, codec, rooms.HubOptions{})
	if err := hub.Start(ctx); err != nil {
		_ = bb.Close()
		t.Fatal(err)
	}
	srv := relay.New(hub, relay.Options{Limits: limits,
		Logger: slog.New(slog.DiscardHandler)})
	srv.SetReady()
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		srv.Close()
		_ = bb.Close()
	})
	return ts.URL
}
