// Package relaytest runs a relay over real HTTP for tests: an
// httptest.Server serving the relay that app assembles (the same wiring as
// main's) over an in-memory backbone or a given one, plus the clients that read it back — r3labs/sse's Client as an
// independent SSE parser (Stream), a raw reader for exact bytes (RawStream)
// and a WHATWG-following parser for whole streams (Parse).
package relaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/app"
	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/relay/metrics"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// Wait bounds every wait of this package's helpers (roomstest.Wait).
const Wait = roomstest.Wait

// Options configure Start. Zero values take the relay's defaults, except
// that the cursor and client keys are fixed test keys, logs are dropped and
// rate and connection limits are lifted. Relay.Auth, Relay.Namespaces,
// Relay.AllowedOrigins and Relay.Limits start a relay with identity and
// policy (see NewAuth and Token); the hub takes Relay.Namespaces unless
// Hub.Namespaces is set.
type Options struct {
	Relay  relay.Options
	Hub    rooms.HubOptions
	Memory memory.Options
	// Backbone, when set, is the relay's backbone instead of a memory one
	// made from Memory (Relay.Backbone is then nil); the relay closes it
	// when the test ends.
	Backbone rooms.Backbone
	// NotReady leaves the server starting: SetReady is not called.
	NotReady bool
	// Wrap, when set, wraps the server's handler (to observe requests).
	Wrap func(http.Handler) http.Handler
	// H2C also serves HTTP/2 without TLS, H2CMaxStreams streams per
	// connection at most (0: net/http's default).
	H2C           bool
	H2CMaxStreams int
	// DevTokens serves POST /v1/dev/token, its tokens signed with
	// JWTSecret, which NewAuth's Authenticator verifies (unless
	// Relay.DevTokenKey is set).
	DevTokens bool
	// MetricsToken is the bearer token /metrics requires.
	MetricsToken string
}

// Relay is a running relay and its parts.
type Relay struct {
	// URL is the base URL, without a trailing slash.
	URL    string
	HTTP   *httptest.Server
	Server *relay.Server
	Hub    *rooms.Hub
	// Backbone is the in-memory backbone, when the relay runs on one.
	Backbone *memory.Backbone
	Codec    *rooms.CursorCodec
	// Metrics are the relay's (nil when off), served at MetricsURL.
	Metrics *metrics.Metrics
	// MetricsURL is the base URL of the listener serving /metrics, as
	// production serves it apart from the relay (ROOMCAST_METRICS_ADDR);
	// empty when the metrics are off.
	MetricsURL string
}

// testKey signs cursors and client tokens of test relays.
var testKey = []byte("relaytest cursor key, 32 bytes!!")

// Start runs a relay until the test ends, assembled as production
// assembles it (app.Assemble): the backbone timed by the metrics, the hub
// observed by them, GET /metrics served on a listener of its own
// (MetricsURL). On cleanup every client
// connection is closed and the server, hub and backbone are stopped.
func Start(t testing.TB, opts Options) *Relay {
	t.Helper()
	var bb app.Backbone
	var mem *memory.Backbone
	if opts.Backbone != nil {
		closer, ok := opts.Backbone.(app.Backbone)
		if !ok {
			t.Fatal("relaytest: Options.Backbone has no Close method")
		}
		bb = closer
	} else {
		mem = memory.New(opts.Memory)
		bb = mem
	}
	if opts.Hub.Namespaces == nil {
		// The hub decides who may subscribe, the server who may publish:
		// both follow the same rules unless a test says otherwise.
		opts.Hub.Namespaces = opts.Relay.Namespaces
	}
	// Tests publish and connect far faster than people do, all from one
	// address: lift the limits a test does not set itself.
	lim := &opts.Relay.Limits
	if lim.PublishRate == 0 && lim.PublishBurst == 0 {
		lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	}
	if lim.PublishCallerRate == 0 && lim.PublishCallerBurst == 0 {
		lim.PublishCallerRate, lim.PublishCallerBurst = 1e6, 1e6
	}
	if lim.RequestRate == 0 && lim.RequestBurst == 0 {
		lim.RequestRate, lim.RequestBurst = 1e6, 1e6
	}
	if lim.MaxConnsPerIP == 0 {
		lim.MaxConnsPerIP = 1e6
	}
	if lim.MaxConnsPerUser == 0 {
		lim.MaxConnsPerUser = 1e6
	}
	if opts.Relay.Logger == nil {
		opts.Relay.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DevTokens && opts.Relay.DevTokenKey == nil {
		// What production signs development tokens with when a JWT
		// secret is configured: that secret, NewAuth's.
		opts.Relay.DevTokenKey = []byte(JWTSecret)
	}
	a, err := app.Assemble(app.Parts{Backbone: bb, CursorKey: testKey, Hub: opts.Hub, Relay: opts.Relay, Metrics: true,
		MetricsToken: opts.MetricsToken})
	if err != nil {
		t.Fatal(err)
	}
	r := serve(t, a, opts)
	r.Backbone = mem
	return r
}

// StartConfig runs, until the test ends, the relay that main runs for the
// command-line args and the ROOMCAST_* variables of env (app.New), with
// its logs dropped: production's configuration, keys and defaults, over
// an httptest.Server rather than its own listener (and /metrics, when
// ROOMCAST_METRICS_ADDR is set, over another: MetricsURL).
func StartConfig(t testing.TB, env map[string]string, args ...string) *Relay {
	t.Helper()
	cfg, err := config.Load(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := serve(t, a, Options{})
	if mem, ok := a.Backbone.(*memory.Backbone); ok {
		r.Backbone = mem
	}
	return r
}

// serve starts a's hub and serves a's server until the test ends.
func serve(t testing.TB, a *app.Relay, opts Options) *Relay {
	t.Helper()
	// Moderation orders reach connections through the control channel.
	if err := a.Hub.Start(context.Background()); err != nil {
		a.Close()
		t.Fatal(err)
	}
	var h http.Handler = a.Server
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	ts := httptest.NewUnstartedServer(h)
	if opts.H2C {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		ts.Config.Protocols = &p
		ts.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: opts.H2CMaxStreams}
	}
	ts.Start()
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		// Hijacked streams are not the test server's to close.
		a.Close()
	})
	r := &Relay{URL: ts.URL, HTTP: ts, Server: a.Server, Hub: a.Hub, Codec: a.Codec, Metrics: a.Metrics}
	if h := a.MetricsHandler(); h != nil {
		ms := httptest.NewServer(h)
		t.Cleanup(ms.Close)
		r.MetricsURL = ms.URL
	}
	if !opts.NotReady {
		a.Server.SetReady()
	}
	return r
}

// Client returns the HTTP client for this relay; its connections are
// closed with the server.
func (r *Relay) Client() *http.Client { return r.HTTP.Client() }

// Response is a fully read answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test when it is not JSON.
func (resp *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(resp.Body, v); err != nil {
		t.Fatalf("answer is not JSON (%v): %q", err, resp.Body)
	}
}

// Object decodes the body as a JSON object keeping each value raw.
func (resp *Response) Object(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	resp.JSON(t, &m)
	return m
}

// Request describes a request for Do.
type Request struct {
	Method string
	// Path is relative to the relay's URL, with its query.
	Path   string
	Header http.Header
	Body   []byte
	// Chunked sends Body without a Content-Length.
	Chunked bool
}

// Do sends req and reads the whole answer.
func (r *Relay) Do(t testing.TB, req Request) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
		if req.Chunked {
			body = io.MultiReader(body) // hides the length from net/http
		}
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	hr, err := http.NewRequestWithContext(ctx, method, r.URL+req.Path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	if req.Chunked {
		hr.ContentLength = -1
	}
	resp, err := r.Client().Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, req.Path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Open sends req and returns its status and headers, with the body read
// only when the answer is not an event stream: a stream that opens is
// closed at once.
func (r *Relay) Open(t testing.TB, req Request) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, r.URL+req.Path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	resp, err := r.Client().Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.Path, err)
	}
	defer resp.Body.Close()
	out := &Response{Status: resp.StatusCode, Header: resp.Header}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		if out.Body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("%s %s: reading the answer: %v", method, req.Path, err)
		}
	}
	return out
}

// Get is Do of a GET.
func (r *Relay) Get(t testing.TB, path string) *Response {
	t.Helper()
	return r.Do(t, Request{Path: path})
}

// Scrape sends GET /metrics with header to the metrics listener and reads
// the whole answer.
func (r *Relay) Scrape(t testing.TB, header http.Header) *Response {
	t.Helper()
	if r.MetricsURL == "" {
		t.Fatal("relaytest: Scrape of a relay without Options.Relay.Metrics")
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.MetricsURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: reading the answer: %v", err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Published is the 202 answer of a publish.
type Published struct {
	ID    *string  `json:"id"`
	Room  string   `json:"room"`
	Rooms []string `json:"rooms"`
	Event string   `json:"event"`
}

// Publish posts body as contentType to path and requires a 202.
func (r *Relay) Publish(t testing.TB, path, contentType string, body []byte, header http.Header) Published {
	t.Helper()
	h := http.Header{}
	for k, vs := range header {
		h[k] = vs
	}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	resp := r.Do(t, Request{Method: http.MethodPost, Path: path, Header: h, Body: body})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("POST %s: status %d, want 202: %s", path, resp.Status, resp.Body)
	}
	var p Published
	resp.JSON(t, &p)
	return p
}

// PublishJSON publishes the JSON encoding of v to room and returns the
// event's id (empty for a volatile event).
func (r *Relay) PublishJSON(t testing.TB, room string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Publish(t, "/v1/rooms/"+room+"/events", "application/json", b, nil)
	if p.ID == nil {
		return ""
	}
	return *p.ID
}

// Eventually is roomstest.Eventually: it polls cond until it holds,
// failing the test after Wait.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	roomstest.Eventually(t, what, cond)
}

// EventuallyOK is roomstest.EventuallyOK: it polls check until it returns
// nil, failing the test after Wait with check's last error.
func EventuallyOK(t testing.TB, what string, check func() error) {
	t.Helper()
	roomstest.EventuallyOK(t, what, check)
}

// Tamper returns s with one character changed, keeping it base64url.
func Tamper(s string) string {
	if s == "" {
		return "A"
	}
	i := len(s) / 2
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// RedisBackbone opens a Redis backbone at url for a relay of Start
// (Options.Backbone), which closes it.
func RedisBackbone(t testing.TB, url string, o redis.Options) rooms.Backbone {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	bb, err := redis.New(ctx, url, o)
	if err != nil {
		t.Fatal(err)
	}
	return bb
}
