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
	"slices"
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

// ticketFor exchanges token for a ticket.
func ticketFor(t *testing.T, r *relaytest.Relay, token string) (string, int) {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(token)})
	if resp.Status != http.StatusCreated {
		t.Fatalf("POST /v1/tickets: status %d, want 201: %s", resp.Status, resp.Body)
	}
	if got := objectKeys(t, resp.Body); strings.Join(got, ",") != "expires_in,ticket" {
		t.Errorf("ticket answer keys %v, want expires_in and ticket", got)
	}
	var a struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	resp.JSON(t, &a)
	if a.Ticket == "" || a.ExpiresIn < 1 || a.ExpiresIn > 60 {
		t.Fatalf("ticket answer %s: want a ticket valid 1 to 60 s", resp.Body)
	}
	return a.Ticket, a.ExpiresIn
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

// TestTickets walks a browser through tickets: one is issued for a bearer
// token, opens one stream or poll and no more, carries the token's
// identity, and is worth nothing on a state-changing route.
func TestTickets(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	token := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"name": "Alice"})

	ticket, ttl := ticketFor(t, r, token)
	if ttl != 60 {
		t.Errorf("expires_in %d for an hour-long token, want 60", ttl)
	}
	// A ticket never outlives its token.
	if _, ttl := ticketFor(t, r, relaytest.Token(t, "alice", 10*time.Second, nil)); ttl > 10 {
		t.Errorf("expires_in %d for a token expiring in 10 s", ttl)
	}

	// The ticket opens the user's own stream: it carries the identity.
	s := r.Subscribe(t, "/v1/users/me/events?ticket="+ticket, relaytest.StreamOptions{})
	s.Connected(t)
	publishAs(t, r, "x", userHeader(t, "bob"), `{"data":0}`) // unrelated
	postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"for alice"}`)
	if env := s.Expect(t, "message").Envelope(t); string(env.Data) != `"for alice"` {
		t.Errorf("user stream got %s", env.Data)
	}

	// Spent: a second use is refused, wherever it is used.
	for _, path := range []string{"/v1/users/me/events?ticket=", "/v1/rooms/room1/events?ticket=", "/v1/rooms/room1/poll?timeout=0&ticket="} {
		resp := r.Open(t, relaytest.Request{Path: path + ticket})
		if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "already used") {
			t.Errorf("%s: message %q", path, msg)
		}
		if bytes.Contains(resp.Body, []byte(ticket[:20])) {
			t.Errorf("the answer repeats the ticket: %s", resp.Body)
		}
	}

	// A poll takes a ticket too.
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/poll?timeout=0&ticket=" + mustTicket(t, r, token)}); resp.Status != http.StatusOK {
		t.Errorf("poll with a ticket: status %d: %s", resp.Status, resp.Body)
	}

	// State-changing routes ignore ?ticket= and refuse a ticket as bearer;
	// neither spends it.
	unspent := mustTicket(t, r, token)
	wantError(t, postJSON(t, r, "/v1/rooms/room1/events?ticket="+unspent, nil, `{}`), http.StatusUnauthorized, "unauthenticated")
	wantError(t, postJSON(t, r, "/v1/rooms/room1/events", relaytest.Bearer(unspent), `{}`), http.StatusUnauthorized, "invalid_token")
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets?ticket=" + unspent}), http.StatusUnauthorized, "unauthenticated")
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + unspent}); resp.Status != http.StatusOK {
		t.Errorf("the ticket used on POST routes no longer opens a stream: %d %s", resp.Status, resp.Body)
	}

	// Tampered and repeated tickets.
	resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + relaytest.Tamper(mustTicket(t, r, token))})
	if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "ticket") {
		t.Errorf("tampered ticket: message %q", msg)
	}
	one, two := mustTicket(t, r, token), mustTicket(t, r, token)
	wantError(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + one + "&ticket=" + two}), http.StatusUnauthorized, "invalid_token")

	// Only users get tickets: the API key's rights never reach a URL.
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: server()}), http.StatusForbidden, "forbidden")
}

func mustTicket(t *testing.T, r *relaytest.Relay, token string) string {
	t.Helper()
	ticket, _ := ticketFor(t, r, token)
	return ticket
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

// TestCORS: a preflight from an allowed origin is answered with the
// methods and headers the API uses; credentials go to origins listed by
// name only, never with "*"; other origins get no CORS headers at all.
func TestCORS(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	preflight := func(r *relaytest.Relay, origin string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodOptions, Path: "/v1/rooms/room1/events", Header: header(nil,
			"Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type")})
	}
	named := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{app} })
	anyOrigin := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{"*"} })
	both := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{"*", app} })
	none := startSecured(t, nil)
	cases := []struct {
		name        string
		r           *relaytest.Relay
		origin      string
		allowOrigin string // "" for no CORS headers at all
		credentials bool
	}{
		{"listed origin", named, app, app, true},
		{"unlisted origin", named, "https://evil.example", "", false},
		{"lookalike origin", named, app + ".evil.example", "", false},
		{"any origin", anyOrigin, "https://evil.example", "*", false},
		{"listed beside any", both, app, app, true},
		{"unlisted beside any", both, "https://other.example", "*", false},
		{"default: same origin only", none, app, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pre := preflight(tc.r, tc.origin)
			get := tc.r.Do(t, relaytest.Request{Path: "/v1/rooms/public:lobby/history", Header: header(nil, "Origin", tc.origin)})
			for _, resp := range []*relaytest.Response{pre, get} {
				h := resp.Header
				if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
					t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
				}
				if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != tc.credentials {
					t.Errorf("credentials allowed: %v, want %v", got, tc.credentials)
				}
				if h.Get("Access-Control-Allow-Origin") == "*" && h.Get("Access-Control-Allow-Credentials") != "" {
					t.Error(`"*" with credentials`)
				}
				if tc.allowOrigin != "" && !strings.Contains(h.Get("Vary"), "Origin") {
					t.Errorf("Vary %q lacks Origin", h.Get("Vary"))
				}
			}
			if get.Status != http.StatusOK {
				t.Errorf("GET history: status %d: %s", get.Status, get.Body)
			}
			if tc.allowOrigin == "" {
				if pre.Header.Get("Access-Control-Allow-Methods") != "" || pre.Status == http.StatusNoContent {
					t.Errorf("preflight from a refused origin answered %d with methods %q", pre.Status, pre.Header.Get("Access-Control-Allow-Methods"))
				}
				return
			}
			if pre.Status != http.StatusNoContent {
				t.Errorf("preflight: status %d, want 204", pre.Status)
			}
			methods, headers := pre.Header.Get("Access-Control-Allow-Methods"), strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers"))
			for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
				if !strings.Contains(methods, m) {
					t.Errorf("Allow-Methods %q lacks %s", methods, m)
				}
			}
			for _, hd := range []string{"authorization", "content-type", "last-event-id", "idempotency-key"} {
				if !strings.Contains(headers, hd) {
					t.Errorf("Allow-Headers %q lacks %s", headers, hd)
				}
			}
		})
	}
}

// TestCORSVaryOrigin: with allowed origins configured, an answer depends on
// Origin even when it carries no CORS headers. Only answers to allowed
// origins said Vary: Origin, so a cache (the browser's own, or a CDN) that
// stored /roomcast.js or a history page fetched without Origin served it
// again, without Access-Control-Allow-Origin, to the allowed app's page,
// which the browser then refused.
func TestCORSVaryOrigin(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	r := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{app} })
	for _, path := range []string{"/roomcast.js", "/v1/rooms/public:lobby/history"} {
		for _, origin := range []string{"", "https://other.example", app} {
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			resp := r.Do(t, relaytest.Request{Path: path, Header: h})
			if resp.Status != http.StatusOK {
				t.Fatalf("GET %s (Origin %q): %d %s", path, origin, resp.Status, resp.Body)
			}
			if !slices.Contains(resp.Header.Values("Vary"), "Origin") {
				t.Errorf("GET %s with Origin %q: Vary %q lacks Origin", path, origin, resp.Header.Values("Vary"))
			}
		}
	}
}

// TestTokenLifetime: a stream whose token expires within 30 s is warned at
// once; a refresh with a fresh token of the same user keeps it open past
// the old expiry, while an unrefreshed twin is closed at exp with
// token_expired.
func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	short := relaytest.Token(t, "alice", 3*time.Second, nil)
	refreshed := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(short)})
	conn := refreshed.Connected(t).Connection
	twin := r.Subscribe(t, "/v1/rooms/team-1/events", relaytest.StreamOptions{Header: relaytest.BearerMap(short)})
	twin.Connected(t)
	for _, s := range []*relaytest.Stream{refreshed, twin} {
		ev := s.Expect(t, "roomcast:token-expiring")
		var d struct {
			ExpiresAt  int64  `json:"expires_at"`
			Connection string `json:"connection"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.ExpiresAt == 0 || d.Connection == "" {
			t.Errorf("token-expiring data %s", ev.Data)
		}
	}

	// Refreshing needs the same user's token, sent as bearer.
	refresh := func(h http.Header) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: h})
	}
	wantError(t, refresh(userHeader(t, "mallory")), http.StatusForbidden, "forbidden")
	wantError(t, refresh(nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, refresh(server()), http.StatusForbidden, "forbidden")
	wantError(t, refresh(relaytest.Bearer(relaytest.Token(t, "alice", -time.Hour, nil))), http.StatusUnauthorized, "invalid_token")
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/nope/token", Header: userHeader(t, "alice")}), http.StatusNotFound, "unknown_connection")
	if resp := refresh(userHeader(t, "alice")); resp.Status != http.StatusNoContent {
		t.Fatalf("refresh: status %d: %s", resp.Status, resp.Body)
	}

	// The twin is closed at the old exp ...
	closing := twin.Expect(t, "roomcast:closing")
	checkClosingReason(t, closing, rooms.CloseTokenExpired)
	twin.WaitEnded(t)
	// ... and the refreshed stream is still there afterwards.
	id := publishAs(t, r, "team-1", userHeader(t, "bob"), `{"data":"after the old exp"}`)
	if got := refreshed.NextEvent(t); got.Event != "message" || got.EventID(t) != id {
		t.Fatalf("refreshed stream got %q %s, want the event published after the old exp", got.Event, got.Data)
	}
}

// checkClosingReason requires roomcast:closing data with reason and a
// reconnect delay.
func checkClosingReason(t *testing.T, ev relaytest.Event, reason string) {
	t.Helper()
	var d struct {
		Reason      string `json:"reason"`
		Message     string `json:"message"`
		ReconnectMS *int   `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("closing data %q: %v", ev.Data, err)
	}
	if d.Reason != reason || d.Message == "" || d.ReconnectMS == nil {
		t.Errorf("closing %s, want reason %q with a message and reconnect_ms", ev.Data, reason)
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

// TestTokenExpiryResume: an unrefreshed stream is closed at exp with
// token_expired and, re-authenticated with a fresh ticket, resumes without
// losing what was published meanwhile.
func TestTokenExpiryResume(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	short := relaytest.Token(t, "alice", 3*time.Second, nil)
	s := r.Subscribe(t, "/v1/rooms/team-1/events?ticket="+mustTicket(t, r, short), relaytest.StreamOptions{})
	s.Connected(t)
	s.Expect(t, "roomcast:token-expiring")
	bob := userHeader(t, "bob")
	seen := publishAs(t, r, "team-1", bob, `{"data":"seen"}`)
	expectIDs(t, s, []string{seen})
	checkClosingReason(t, s.Expect(t, "roomcast:closing"), rooms.CloseTokenExpired)
	s.WaitEnded(t)
	last := s.LastEventID()

	missed := []string{publishAs(t, r, "team-1", bob, `{"data":"missed 1"}`), publishAs(t, r, "team-1", bob, `{"data":"missed 2"}`)}
	// The expired token no longer gets a ticket; a fresh one does.
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(short)}), http.StatusUnauthorized, "invalid_token")
	resumed := r.Subscribe(t, "/v1/rooms/team-1/events?ticket="+mustTicket(t, r, relaytest.Token(t, "alice", time.Hour, nil)),
		relaytest.StreamOptions{LastEventID: last})
	resumed.Connected(t)
	expectIDs(t, resumed, missed)
}
