package relay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// requestLog collects a relay's JSON log lines.
type requestLog struct{ relaytest.Output }

// logger returns a JSON logger at level writing to l.
func (l *requestLog) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: level}))
}

// lines parses every line, failing the test on one that is not JSON.
func (l *requestLog) lines(t *testing.T) []relaytest.LogLine {
	t.Helper()
	return relaytest.ParseLog(t, l.String())
}

// requests returns the request lines.
func (l *requestLog) requests(t *testing.T) []relaytest.LogLine {
	t.Helper()
	var out []relaytest.LogLine
	for _, line := range l.lines(t) {
		if line.Msg == "request" {
			out = append(out, line)
		}
	}
	return out
}

// sameURI reports whether the URIs have the same path and query
// parameters: the log writes the parameters in its own order.
func sameURI(a, b string) bool {
	pa, qa, _ := strings.Cut(a, "?")
	pb, qb, _ := strings.Cut(b, "?")
	va, erra := url.ParseQuery(qa)
	vb, errb := url.ParseQuery(qb)
	return pa == pb && erra == nil && errb == nil && reflect.DeepEqual(va, vb)
}

// await waits for the request line of method and uri.
func (l *requestLog) await(t *testing.T, method, uri string) relaytest.LogLine {
	t.Helper()
	var found relaytest.LogLine
	relaytest.Eventually(t, "the log has "+method+" "+uri, func() bool {
		for _, line := range l.requests(t) {
			if line.Method == method && sameURI(line.URI, uri) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// TestRequestLog: every request gets one JSON line with its request id,
// method, URI, status, bytes and duration; a stream's names its connection.
// A successful long-poll, of which a poller sends one per answer, is logged
// at debug level; a refused one at info.
func TestRequestLog(t *testing.T) {
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Logger: log.logger(slog.LevelDebug)}})

	cases := []struct {
		method, path string
		body         string
		status       int
		level        string
	}{
		{http.MethodGet, "/healthz", "", http.StatusOK, "INFO"},
		{http.MethodPost, "/v1/rooms/logged/events", "hello", http.StatusAccepted, "INFO"},
		{http.MethodGet, "/v1/rooms/logged/history", "", http.StatusOK, "INFO"},
		{http.MethodGet, "/v1/rooms/logged/poll?timeout=0&client=log-client", "", http.StatusOK, "DEBUG"},
		{http.MethodGet, "/v1/rooms/logged/poll?timeout=-1", "", http.StatusBadRequest, "INFO"},
		{http.MethodGet, "/missing", "", http.StatusNotFound, "INFO"},
		{http.MethodPatch, "/v1/rooms/logged/events", "", http.StatusMethodNotAllowed, "INFO"},
	}
	for _, tc := range cases {
		req := relaytest.Request{Method: tc.method, Path: tc.path}
		if tc.body != "" {
			req.Body = []byte(tc.body)
		}
		resp := r.Do(t, req)
		if resp.Status != tc.status {
			t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, resp.Status, tc.status)
		}
		line := log.await(t, tc.method, tc.path)
		if line.Level != tc.level || line.Status != tc.status || line.RequestID == "" || line.Remote == "" ||
			line.Bytes == nil || *line.Bytes != len(resp.Body) || line.Duration == nil || *line.Duration < 0 || line.Connection != nil {
			t.Errorf("%s %s (status %d, %d bytes): log line %+v", tc.method, tc.path, resp.Status, len(resp.Body), line)
		}
	}

	s := r.Subscribe(t, "/v1/rooms/logged/events", relaytest.StreamOptions{})
	conn := s.Connected(t).Connection
	s.Close()
	line := log.await(t, http.MethodGet, "/v1/rooms/logged/events")
	if line.Connection == nil || *line.Connection != fingerprint(conn) || line.Status != http.StatusOK || line.RequestID == "" {
		t.Errorf("stream log line %+v, want connection %s (the fingerprint of %s)", line, fingerprint(conn), conn)
	}

	// One line per request, each with its own id.
	lines := log.requests(t)
	if len(lines) != len(cases)+1 {
		t.Errorf("%d request lines for %d requests:\n%s", len(lines), len(cases)+1, log.String())
	}
	ids := map[string]bool{}
	for _, l := range lines {
		if ids[l.RequestID] {
			t.Errorf("request id %q logged twice", l.RequestID)
		}
		ids[l.RequestID] = true
	}
}

// TestRequestIDFromClient: a request id the client sends (as a proxy in
// front would) names the request's log line; one that could mislead a log
// reader is replaced by the relay's own.
func TestRequestIDFromClient(t *testing.T) {
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Logger: log.logger(slog.LevelInfo)}})
	for _, tc := range []struct{ path, sent, want string }{
		{"/healthz?n=1", "edge-7f3a-0001", "edge-7f3a-0001"},
		{"/healthz?n=2", "two words", ""},
		{"/healthz?n=3", strings.Repeat("x", 129), ""},
	} {
		r.Do(t, relaytest.Request{Method: http.MethodGet, Path: tc.path, Header: http.Header{"X-Request-Id": {tc.sent}}})
		line := log.await(t, http.MethodGet, tc.path)
		if tc.want != "" && line.RequestID != tc.want || tc.want == "" && (line.RequestID == tc.sent || line.RequestID == "") {
			t.Errorf("sent X-Request-Id %.20q: logged %q", tc.sent, line.RequestID)
		}
	}
}

// TestPollLogLevel: at info level a successful poll writes no line, a
// refused one does.
func TestPollLogLevel(t *testing.T) {
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Logger: log.logger(slog.LevelInfo)}})
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/v1/rooms/quiet/poll?timeout=0", http.StatusOK},
		{"/v1/rooms/quiet/poll?timeout=nope", http.StatusBadRequest},
		{"/healthz", http.StatusOK},
	} {
		if resp := r.Do(t, relaytest.Request{Method: http.MethodGet, Path: tc.path}); resp.Status != tc.status {
			t.Fatalf("GET %s: status %d, want %d", tc.path, resp.Status, tc.status)
		}
	}
	// Lines are written in request order, each before its response ends:
	// once the last is there, the first would be too.
	log.await(t, http.MethodGet, "/healthz")
	var uris []string
	for _, line := range log.requests(t) {
		uris = append(uris, line.URI)
	}
	if want := []string{"/v1/rooms/quiet/poll?timeout=nope", "/healthz"}; !reflect.DeepEqual(uris, want) {
		t.Errorf("logged %q, want %q", uris, want)
	}
}

// TestLogRedactsSecrets sends credentials every way a client can, valid
// and not, to every kind of route: no log line holds any of them, and the
// URI shows where they were.
func TestLogRedactsSecrets(t *testing.T) {
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Logger: log.logger(slog.LevelDebug),
		Auth:   relaytest.NewAuth(t, auth.Config{AllowQueryTokens: true}),
	}})
	valid := relaytest.Token(t, "alice", time.Hour, nil)
	cursor := poll(t, r, "/v1/rooms/secret/poll?timeout=0&access_token="+valid).Cursor
	credentials := []string{"SECRET", valid}
	secrets := append(credentials, cursor)

	query := "access_token=SECRET&ticket=SECRET2"
	bearer := relaytest.Bearer("SECRET3")
	cases := []struct {
		method, path string
		header       http.Header
		want         string // in the logged URI
	}{
		{http.MethodGet, "/v1/rooms/secret/events?" + query, bearer, "access_token=REDACTED&ticket=REDACTED"},
		{http.MethodGet, "/v1/stream?room=secret&" + query, bearer, "access_token=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/poll?timeout=0&" + query, bearer, "ticket=REDACTED"},
		{http.MethodPost, "/v1/rooms/secret/events?" + query, bearer, "access_token=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/history?" + query, bearer, "access_token=REDACTED"},
		{http.MethodGet, "/missing?" + query, bearer, "access_token=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/poll?timeout=0&access_token=" + valid, nil, "access_token=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/poll?timeout=0&cursor=" + cursor + "&access_token=" + valid, nil, "cursor=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/events?lastEventId=" + cursor + "&access_token=" + valid, nil, "lastEventId=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/poll?timeout=0&access_token=SECRET&access_token=SECRET2", nil, "access_token=REDACTED"},
		{http.MethodGet, "/v1/rooms/secret/poll?timeout=0&token=SECRET", nil, "token=REDACTED"},
	}
	for _, tc := range cases {
		resp := r.Open(t, relaytest.Request{Method: tc.method, Path: tc.path, Header: tc.header})
		for _, secret := range credentials {
			if bytes.Contains(resp.Body, []byte(secret)) {
				t.Errorf("%s %s: the answer repeats a secret: %s", tc.method, tc.path, resp.Body)
			}
		}
		path, _, _ := strings.Cut(tc.path, "?")
		var line relaytest.LogLine
		relaytest.Eventually(t, "the request is logged", func() bool {
			for _, l := range log.requests(t) {
				if l.Method == tc.method && strings.HasPrefix(l.URI, path+"?") && strings.Contains(l.URI, tc.want) && l.Status == resp.Status {
					line = l
					return true
				}
			}
			return false
		})
		if strings.Contains(line.URI, "SECRET") {
			t.Errorf("logged URI %q", line.URI)
		}
	}
	// A client id's proof is a secret too, though the poll's answer
	// hands it to its owner.
	const proof = "logged-client.HiddenProof_1"
	if resp := r.Do(t, relaytest.Request{Path: "/v1/rooms/secret/poll?timeout=0&proof=" + proof}); resp.Status != http.StatusOK {
		t.Fatalf("poll with a proof: %d %s", resp.Status, resp.Body)
	}
	relaytest.Eventually(t, "the poll with a proof is logged", func() bool {
		for _, l := range log.requests(t) {
			if strings.Contains(l.URI, "proof=REDACTED") {
				return true
			}
		}
		return false
	})
	secrets = append(secrets, "HiddenProof_1")
	// An anonymous connection's id lets its holder change the
	// connection: neither its stream's line nor a join's path shows it.
	s := r.Subscribe(t, "/v1/stream?room=secret", relaytest.StreamOptions{})
	conn := s.Connected(t).Connection
	joinPath := "/v1/connections/" + conn + "/rooms/other"
	if resp := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: joinPath}); resp.Status != http.StatusNoContent {
		t.Fatalf("join: %d %s", resp.Status, resp.Body)
	}
	s.Close()
	relaytest.Eventually(t, "the join and the stream are logged", func() bool {
		var join, stream bool
		for _, l := range log.requests(t) {
			join = join || l.URI == "/v1/connections/"+fingerprint(conn)+"/rooms/other"
			stream = stream || l.Connection != nil && *l.Connection == fingerprint(conn)
		}
		return join && stream
	})
	secrets = append(secrets, conn)
	out := log.String()
	for _, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds the secret %.20s…:\n%s", secret, out)
		}
	}
}

// TestLogLevel: below the configured level nothing is written; failures
// are logged a level up, so a warn-level relay still shows them.
func TestLogLevel(t *testing.T) {
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Logger: log.logger(slog.LevelWarn)}})
	for _, path := range []string{"/healthz", "/missing", "/v1/rooms/quiet/poll?timeout=0"} {
		r.Get(t, path)
	}
	if out := log.String(); out != "" {
		t.Errorf("a warn-level relay logged ordinary requests:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	r.Server.Drain(ctx)
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/quiet/events"}); resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("stream while draining: status %d", resp.Status)
	}
	line := log.await(t, http.MethodGet, "/v1/rooms/quiet/events")
	if line.Level != "WARN" || line.Status != http.StatusServiceUnavailable {
		t.Errorf("refused stream logged as %+v, want WARN 503", line)
	}
	if n := len(log.lines(t)); n != 1 {
		t.Errorf("%d lines, want only the refusal:\n%s", n, log.String())
	}
}

// A hijacked stream's request line is written when the stream ends, with
// every byte it carried and its whole duration, not when it is handed to
// the shared writer.
func TestStreamLoggedAtEnd(t *testing.T) {
	t.Parallel()
	var log requestLog
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Logger: log.logger(slog.LevelDebug)}})
	c, br := openRaw(t, r, "/v1/rooms/logged/events")
	r.PublishJSON(t, "logged", map[string]any{"data": strings.Repeat("x", 500)})
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, "xxxx") {
			break
		}
	}
	streamLine := func() *relaytest.LogLine {
		for _, l := range log.requests(t) {
			if l.Connection != nil && strings.HasPrefix(l.URI, "/v1/rooms/logged/events") {
				return &l
			}
		}
		return nil
	}
	if l := streamLine(); l != nil {
		t.Fatalf("the stream was logged while open: %+v", *l)
	}
	c.Close()
	relaytest.Eventually(t, "the stream's line", func() bool { return streamLine() != nil })
	if l := streamLine(); l.Status != 200 || l.Bytes == nil || *l.Bytes < 500 {
		t.Errorf("stream logged with status %d and %v bytes, want 200 and the event's 500+", l.Status, l.Bytes)
	}
}

// fingerprint is how logs name connection id: "fp-" and 64 bits of its
// SHA-256, in base64url.
func fingerprint(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "fp-" + base64.RawURLEncoding.EncodeToString(sum[:8])
}
