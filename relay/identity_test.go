package relay_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// testNamespaces are the rules of a relay with keys configured: the
// default namespace needs a token to subscribe and to publish, as main.go
// sets it up, and a few namespaces differ.
func testNamespaces() *rooms.Namespaces {
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true, JoinLeaveEvents: true}
	public := base
	public.Anonymous, public.Publish = true, rooms.PublishAnyone
	news := base
	news.Anonymous, news.Publish = true, rooms.PublishServer
	small := base
	small.MaxPayload, small.PublishRate, small.PublishBurst = 64, 1, 2
	quiet := base
	quiet.Presence, quiet.JoinLeaveEvents = false, false
	return &rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{
		"public": public, "news": news, "small": small, "quiet": quiet,
	}}
}

// startSecured starts a relay with the test Authenticator and
// testNamespaces; mod adjusts the options first.
func startSecured(t *testing.T, mod func(*relaytest.Options)) *relaytest.Relay {
	t.Helper()
	opts := relaytest.Options{Relay: relay.Options{
		Auth:       relaytest.NewAuth(t, auth.Config{}),
		Namespaces: testNamespaces(),
	}}
	if mod != nil {
		mod(&opts)
	}
	return relaytest.Start(t, opts)
}

// wantError requires the one JSON error shape with status and code and
// returns its message.
func wantError(t *testing.T, resp *relaytest.Response, status int, code string) string {
	t.Helper()
	if resp.Status != status {
		t.Errorf("status %d, want %d: %s", resp.Status, status, resp.Body)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(resp.Body, &e); err != nil {
		t.Fatalf("answer %q is not a JSON error: %v", resp.Body, err)
	}
	if e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("error %s, want code %q and a message", resp.Body, code)
	}
	return e.Error.Message
}

// refusal is a request that must be answered with status and the error
// code.
type refusal struct {
	name   string
	method string
	path   string
	header http.Header
	status int
	code   string
}

// header builds a header from key, value pairs onto base (which may be nil).
func header(base http.Header, kv ...string) http.Header {
	h := base.Clone()
	if h == nil {
		h = http.Header{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// postJSON posts body as JSON.
func postJSON(t *testing.T, r *relaytest.Relay, path string, h http.Header, body string) *relaytest.Response {
	t.Helper()
	return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: path,
		Header: header(h, "Content-Type", "application/json"), Body: []byte(body)})
}

// publishAs publishes body to room with h and requires a 202; it returns
// the event's id.
func publishAs(t *testing.T, r *relaytest.Relay, room string, h http.Header, body string) string {
	t.Helper()
	resp := postJSON(t, r, "/v1/rooms/"+room+"/events", h, body)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("publish to %s: status %d, want 202: %s", room, resp.Status, resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil {
		return ""
	}
	return *p.ID
}

// server is the API key's header.
func server() http.Header { return relaytest.Bearer(relaytest.APIKey) }

// userHeader is a fresh hour-long token of user as a header.
func userHeader(t *testing.T, user string) http.Header {
	return relaytest.Bearer(relaytest.Token(t, user, time.Hour, nil))
}

// logBuffer collects a relay's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// b64 is the unpadded base64url of s.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestHostileTokens sends forged, expired, oversized and otherwise bad
// tokens to a stream, a poll and a publish: each is a 401 invalid_token
// whose message says what was wrong, and neither the answer nor the logs
// ever repeat the token.
func TestHostileTokens(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	r := startSecured(t, func(o *relaytest.Options) {
		o.Relay.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	now := time.Now()
	claims := func(kv ...any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	hs := func(c jwt.MapClaims) string {
		return relaytest.Sign(t, jwt.SigningMethodHS256, []byte(relaytest.JWTSecret), c)
	}
	valid := hs(claims())
	// Tampered: the payload claims another user, under alice's signature.
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64(`{"sub":"admin","exp":`+strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`) + "." + parts[2]
	cases := []struct {
		name, token, want string
	}{
		{"alg none", relaytest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims()), "algorithm not allowed"},
		{"alg none, unsigned header", b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".", "algorithm not allowed"},
		{"HS512", relaytest.Sign(t, jwt.SigningMethodHS512, []byte(relaytest.JWTSecret), claims()), "algorithm not allowed"},
		{"expired", hs(claims("exp", now.Add(-time.Hour).Unix())), "token expired"},
		{"no exp", hs(claims("exp", nil)), "token has no exp"},
		{"not valid yet", hs(claims("nbf", now.Add(time.Hour).Unix())), "token not valid yet"},
		{"no sub", hs(claims("sub", nil)), "token has no sub"},
		{"wrong key", relaytest.Sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!!"), claims()), "bad signature"},
		{"tampered payload", tampered, "bad signature"},
		{"tampered signature", parts[0] + "." + parts[1] + "." + b64(strings.Repeat("x", 32)), "bad signature"},
		{"oversized", hs(claims("pad", strings.Repeat("p", 9<<10))), "token too large"},
		{"garbage", "not-a-token", "malformed token"},
		{"critical header", b64(`{"alg":"HS256","crit":["exp"]}`) + "." + parts[1] + "." + parts[2], "unsupported critical header"},
	}
	routes := []struct {
		name, method, path string
	}{
		{"stream", http.MethodGet, "/v1/rooms/room1/events"},
		{"multi stream", http.MethodGet, "/v1/stream?room=room1"},
		{"user stream", http.MethodGet, "/v1/users/me/events"},
		{"poll", http.MethodGet, "/v1/rooms/room1/poll?timeout=0"},
		{"publish", http.MethodPost, "/v1/rooms/room1/events"},
		{"private message", http.MethodPost, "/v1/users/bob/events"},
		{"ticket", http.MethodPost, "/v1/tickets"},
	}
	for _, tc := range cases {
		for _, rt := range routes {
			t.Run(tc.name+"/"+rt.name, func(t *testing.T) {
				req := relaytest.Request{Method: rt.method, Path: rt.path, Header: relaytest.Bearer(tc.token)}
				if rt.method == http.MethodPost {
					req.Header.Set("Content-Type", "application/json")
					req.Body = []byte(`{"data":1}`)
				}
				resp := r.Open(t, req)
				msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token")
				if !strings.Contains(msg, tc.want) {
					t.Errorf("message %q does not say %q", msg, tc.want)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("a 401 without WWW-Authenticate")
				}
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) > 8 && bytes.Contains(resp.Body, []byte(part)) {
						t.Errorf("the answer repeats part of the token: %s", resp.Body)
					}
				}
			})
		}
	}
	// Nothing was published by any of them.
	if resp := r.Get(t, "/v1/rooms/room1/history"); resp.Status != http.StatusUnauthorized {
		t.Errorf("anonymous history: status %d, want 401", resp.Status)
	}
	h := r.Do(t, relaytest.Request{Path: "/v1/rooms/room1/history", Header: relaytest.Bearer(valid)})
	var hist struct{ Events []json.RawMessage }
	h.JSON(t, &hist)
	if len(hist.Events) != 0 {
		t.Errorf("history holds %d events published with bad tokens", len(hist.Events))
	}
	for _, tc := range cases {
		for _, part := range strings.Split(tc.token, ".") {
			if len(part) > 8 && strings.Contains(logs.String(), part) {
				t.Errorf("%s: the logs repeat part of the token", tc.name)
			}
		}
	}

	// exp is checked with the configured leeway (5 s by default).
	// Minted now, not at the test's start: the cases above took more
	// than the leeway's margin on a loaded machine.
	recent := hs(claims("exp", time.Now().Add(-time.Second).Unix()))
	publishAs(t, r, "room1", relaytest.Bearer(recent), `{}`)
	strict := startSecured(t, func(o *relaytest.Options) { o.Relay.Auth = relaytest.NewAuth(t, auth.Config{Leeway: -1}) })
	if msg := wantError(t, postJSON(t, strict, "/v1/rooms/room1/events", relaytest.Bearer(recent), `{}`), http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "token expired") {
		t.Errorf("no leeway: message %q", msg)
	}

	// A well-formed token still works, and an Authorization scheme other
	// than Bearer is refused, not ignored.
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events", Header: relaytest.Bearer(valid)}); resp.Status != http.StatusOK {
		t.Errorf("valid token: status %d: %s", resp.Status, resp.Body)
	}
	resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events", Header: header(nil, "Authorization", "Basic "+b64("alice:pw"))})
	if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "not Bearer") {
		t.Errorf("Basic auth: message %q", msg)
	}
}

// TestHostileTokensPublicKey configures an RS256 public key alone: an
// HS256 token signed with the public key as the HMAC secret (the HS/RS
// confusion) is refused, and so are an RS256 token of another key and
// wrong issuers and audiences; a correct RS256 token works.
func TestHostileTokensPublicKey(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	r := startSecured(t, func(o *relaytest.Options) {
		o.Relay.Auth = relaytest.NewAuth(t, auth.Config{JWTSecret: []byte("-"), JWTPublicKeyPEM: pub,
			Issuer: "https://issuer.example", Audience: "roomcast"})
	})
	claims := func(kv ...string) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iss": "https://issuer.example", "aud": "roomcast"}
		for i := 0; i+1 < len(kv); i += 2 {
			c[kv[i]] = kv[i+1]
		}
		return c
	}
	cases := []struct {
		name, token, want string // want "" for a token that works
	}{
		{"RS256", relaytest.Sign(t, jwt.SigningMethodRS256, key, claims()), ""},
		{"HS256 keyed with the public key", relaytest.Sign(t, jwt.SigningMethodHS256, pub, claims()), "algorithm not allowed"},
		{"HS256 keyed with the key's DER", relaytest.Sign(t, jwt.SigningMethodHS256, der, claims()), "algorithm not allowed"},
		{"RS256 of another key", relaytest.Sign(t, jwt.SigningMethodRS256, other, claims()), "bad signature"},
		{"wrong issuer", relaytest.Sign(t, jwt.SigningMethodRS256, key, claims("iss", "https://evil.example")), "wrong issuer"},
		{"wrong audience", relaytest.Sign(t, jwt.SigningMethodRS256, key, claims("aud", "someone-else")), "wrong audience"},
		{"alg none", relaytest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims()), "algorithm not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, req := range []relaytest.Request{
				{Path: "/v1/rooms/room1/events", Header: relaytest.Bearer(tc.token)},
				{Method: http.MethodPost, Path: "/v1/rooms/room1/events", Header: header(relaytest.Bearer(tc.token), "Content-Type", "application/json"), Body: []byte(`{}`)},
			} {
				resp := r.Open(t, req)
				if tc.want == "" {
					if resp.Status != http.StatusOK && resp.Status != http.StatusAccepted {
						t.Errorf("%s: status %d: %s", req.Method, resp.Status, resp.Body)
					}
					continue
				}
				if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, tc.want) {
					t.Errorf("%s: message %q does not say %q", req.Method, msg, tc.want)
				}
			}
		})
	}
}

// TestMissingToken: without credentials, what needs a token is a 401
// unauthenticated, distinct from invalid_token.
func TestMissingToken(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	for _, req := range []relaytest.Request{
		{Path: "/v1/rooms/room1/events"},
		{Path: "/v1/stream?room=room1"},
		{Path: "/v1/rooms/room1/poll?timeout=0"},
		{Path: "/v1/rooms/room1/history"},
		{Path: "/v1/rooms/room1/presence"},
		{Path: "/v1/users/me/events"},
		{Path: "/v1/users/me/poll?timeout=0"},
		{Method: http.MethodPost, Path: "/v1/rooms/room1/events", Body: []byte(`{}`)},
		{Method: http.MethodPost, Path: "/v1/users/bob/events", Body: []byte(`{}`)},
		{Method: http.MethodPost, Path: "/v1/namespaces/default/events", Body: []byte(`{}`)},
		{Method: http.MethodPost, Path: "/v1/tickets"},
		{Method: http.MethodPost, Path: "/v1/connections/abc/token"},
		// Empty credentials count as none.
		{Path: "/v1/rooms/room1/events?ticket=&access_token="},
	} {
		t.Run(req.Method+" "+req.Path, func(t *testing.T) {
			if req.Body != nil {
				req.Header = header(nil, "Content-Type", "application/json")
			}
			wantError(t, r.Open(t, req), http.StatusUnauthorized, "unauthenticated")
		})
	}
}

// TestCookieAndCrossSite: the roomcast_token cookie opens streams and
// polls, but a POST, PUT or DELETE carrying only the cookie acts as
// nobody, and one from a foreign Origin is refused whatever it carries.
func TestCookieAndCrossSite(t *testing.T) {
	t.Parallel()
	const app, evil = "https://app.example", "https://evil.example"
	r := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{app} })
	token := relaytest.Token(t, "alice", time.Hour, nil)
	cookie := header(nil, "Cookie", "roomcast_token="+token)

	// GET streams and polls honour the cookie.
	s := r.Subscribe(t, "/v1/stream?room=room1", relaytest.StreamOptions{Header: map[string]string{"Cookie": "roomcast_token=" + token}})
	conn := s.Connected(t).Connection
	if resp := r.Open(t, relaytest.Request{Path: "/v1/users/me/poll?timeout=0", Header: cookie}); resp.Status != http.StatusOK {
		t.Errorf("poll with the cookie: status %d: %s", resp.Status, resp.Body)
	}

	// A bad cookie is a bad credential, not an anonymous caller; a bearer
	// token, which comes first, is used instead of any cookie.
	badCookie := header(nil, "Cookie", "roomcast_token="+relaytest.Tamper(token))
	wantError(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events", Header: badCookie}), http.StatusUnauthorized, "invalid_token")
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events", Header: header(badCookie, "Authorization", "Bearer "+token)}); resp.Status != http.StatusOK {
		t.Errorf("bearer beside a bad cookie: status %d: %s", resp.Status, resp.Body)
	}

	cases := []refusal{
		{"publish, cookie only", http.MethodPost, "/v1/rooms/room1/events", cookie, 401, "unauthenticated"},
		{"publish, cookie from a foreign page", http.MethodPost, "/v1/rooms/room1/events", header(cookie, "Origin", evil), 403, "forbidden"},
		{"publish, bearer from a foreign page", http.MethodPost, "/v1/rooms/room1/events", header(relaytest.Bearer(token), "Origin", evil), 403, "forbidden"},
		{"private message, cookie only", http.MethodPost, "/v1/users/bob/events", cookie, 401, "unauthenticated"},
		{"ticket, cookie only", http.MethodPost, "/v1/tickets", cookie, 401, "unauthenticated"},
		{"ticket, bearer from a foreign page", http.MethodPost, "/v1/tickets", header(relaytest.Bearer(token), "Origin", evil), 403, "forbidden"},
		{"join, cookie only", http.MethodPut, "/v1/connections/" + conn + "/rooms/room2", cookie, 401, "unauthenticated"},
		{"join, bearer from a foreign page", http.MethodPut, "/v1/connections/" + conn + "/rooms/room2", header(relaytest.Bearer(token), "Origin", evil), 403, "forbidden"},
		{"leave, cookie only", http.MethodDelete, "/v1/connections/" + conn + "/rooms/room1", cookie, 401, "unauthenticated"},
		{"refresh, cookie only", http.MethodPost, "/v1/connections/" + conn + "/token", cookie, 401, "unauthenticated"},
		{"ban, API key from a foreign page", http.MethodPost, "/v1/moderation/bans", header(server(), "Origin", evil), 403, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := header(tc.header, "Content-Type", "application/json")
			body := []byte(`{"data":"forged"}`)
			if strings.HasSuffix(tc.path, "/bans") {
				body = []byte(`{"user":"alice","duration":"1h"}`)
			}
			wantError(t, r.Do(t, relaytest.Request{Method: tc.method, Path: tc.path, Header: h, Body: body}), tc.status, tc.code)
		})
	}

	// Nothing of the above reached the stream: the next thing it sees is
	// what its owner does from an allowed page and from the relay's own.
	publishAs(t, r, "room1", header(relaytest.Bearer(token), "Origin", app), `{"data":"allowed origin"}`)
	publishAs(t, r, "room1", header(relaytest.Bearer(token), "Origin", r.URL), `{"data":"same origin"}`)
	for _, want := range []string{`"allowed origin"`, `"same origin"`} {
		if got := s.Expect(t, "message").Envelope(t); string(got.Data) != want {
			t.Fatalf("stream got %s, want %s", got.Data, want)
		}
	}
}

// TestQueryTokens: ?access_token= is ignored unless AllowQueryTokens is
// set, and even then only on streams and polls.
func TestQueryTokens(t *testing.T) {
	t.Parallel()
	token := relaytest.Token(t, "alice", time.Hour, nil)
	off := startSecured(t, nil)
	wantError(t, off.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?access_token=" + token}), http.StatusUnauthorized, "unauthenticated")
	wantError(t, off.Open(t, relaytest.Request{Path: "/v1/users/me/poll?timeout=0&access_token=" + token}), http.StatusUnauthorized, "unauthenticated")

	on := startSecured(t, func(o *relaytest.Options) {
		o.Relay.Auth = relaytest.NewAuth(t, auth.Config{AllowQueryTokens: true})
	})
	if resp := on.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?access_token=" + token}); resp.Status != http.StatusOK {
		t.Errorf("stream with ?access_token=: status %d: %s", resp.Status, resp.Body)
	}
	if resp := on.Open(t, relaytest.Request{Path: "/v1/users/me/poll?timeout=0&access_token=" + token}); resp.Status != http.StatusOK {
		t.Errorf("poll with ?access_token=: status %d: %s", resp.Status, resp.Body)
	}
	wantError(t, postJSON(t, on, "/v1/rooms/room1/events?access_token="+token, nil, `{}`), http.StatusUnauthorized, "unauthenticated")
	resp := on.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?access_token=" + relaytest.Tamper(token)})
	wantError(t, resp, http.StatusUnauthorized, "invalid_token")
	if bytes.Contains(resp.Body, []byte(token[len(token)-20:])) {
		t.Errorf("the answer repeats the token: %s", resp.Body)
	}
}

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
