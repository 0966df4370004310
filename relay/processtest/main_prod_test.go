package processtest

// Production behaviour of the real binary: header limits and timeouts of
// the HTTP server, security headers on every route, --help, streams under
// per-write deadlines, request logs and metrics.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// rawRequest sends head (a request without its final blank line is sent
// as is) over a new connection and returns the response, or the error
// reading it.
func rawRequest(t *testing.T, addr, head string) (*http.Response, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(conn, head); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// requestOfSize is a GET /healthz whose head (request line, headers and
// blank line) is exactly size bytes.
func requestOfSize(t *testing.T, size int) string {
	t.Helper()
	const start, end = "GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nX-Padding: ", "\r\n\r\n"
	pad := size - len(start) - len(end)
	if pad < 0 {
		t.Fatalf("size %d too small", size)
	}
	return start + strings.Repeat("p", pad) + end
}

// TestHeaderLimit: request heads up to 64 KiB are served, larger ones get
// 431 Request Header Fields Too Large.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil)
	cases := []struct {
		size   int
		status int
	}{
		{1 << 10, http.StatusOK},
		{63 << 10, http.StatusOK},
		{64 << 10, http.StatusOK},
		{64<<10 + 1, http.StatusRequestHeaderFieldsTooLarge},
		{68<<10 + 1<<10, http.StatusRequestHeaderFieldsTooLarge},
		{256 << 10, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.size), func(t *testing.T) {
			resp, err := rawRequest(t, addr, requestOfSize(t, tc.size))
			if err != nil {
				t.Fatalf("%d-byte head: %v", tc.size, err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("%d-byte head: %s, want %d", tc.size, resp.Status, tc.status)
			}
		})
	}
}

// TestConnectionTimeouts: a client that never finishes its request head
// is dropped after -read-header-timeout, and an idle keep-alive
// connection after -idle-timeout.
func TestConnectionTimeouts(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil, "-read-header-timeout", "300ms", "-idle-timeout", "1s")

	dropped := func(t *testing.T, conn net.Conn, r *bufio.Reader, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(waitFor))
		for {
			if _, err := r.ReadByte(); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the connection is still open after %s", waitFor)
				}
				break
			}
		}
		d := time.Since(start)
		if d > within {
			t.Errorf("closed after %s, want within %s", d, within)
		}
		return d
	}

	t.Run("read header", func(t *testing.T) {
		t.Parallel()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: relay\r\n"); err != nil {
			t.Fatal(err)
		}
		dropped(t, conn, bufio.NewReader(conn), 3*time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("keep-alive request: %s, close %v", resp.Status, resp.Close)
		}
		if d := dropped(t, conn, br, 4*time.Second); d < 500*time.Millisecond {
			t.Errorf("an idle connection was closed after %s, before the 1s idle timeout", d)
		}
	})
}

// TestNoSniffEverywhere: every answer the relay gives, successes, errors,
// streams, metrics and browser files, carries X-Content-Type-Options:
// nosniff; browser files carry a Content-Security-Policy.
func TestNoSniffEverywhere(t *testing.T) {
	t.Parallel()
	_, addr, metricsBase := startMetered(t, nil, "-metrics-token", "scrape-token")
	base := "http://" + addr
	cases := []struct {
		method, path string
		header       http.Header
		body         string
		status       int  // 0: any
		metrics      bool // sent to the metrics listener
	}{
		{"GET", "/healthz", nil, "", 200, false},
		{"GET", "/readyz", nil, "", 200, false},
		{"HEAD", "/healthz", nil, "", 200, false},
		{"GET", "/metrics", nil, "", 401, true},
		{"GET", "/metrics", http.Header{"Authorization": {"Bearer scrape-token"}}, "", 200, true},
		{"GET", "/metrics", http.Header{"Authorization": {"Bearer scrape-token"}}, "", 404, false},
		{"GET", "/v1/rooms/lobby/events", nil, "", 200, false},
		{"GET", "/v1/stream?room=lobby", nil, "", 200, false},
		{"GET", "/v1/rooms/lobby/poll?timeout=0", nil, "", 200, false},
		{"GET", "/v1/rooms/lobby/history", nil, "", 200, false},
		{"POST", "/v1/rooms/lobby/events", http.Header{"Content-Type": {"application/json"}}, `{"data":1}`, 202, false},
		{"POST", "/v1/rooms/lobby/events", http.Header{"Content-Type": {"application/json"}}, `{"data":`, 400, false},
		{"GET", "/v1/rooms/NOT%20A%20ROOM/poll", nil, "", 400, false},
		{"GET", "/v1/rooms/lobby/poll?cursor=bogus", nil, "", 400, false},
		{"PUT", "/v1/connections/nobody/rooms/lobby", nil, "", 404, false},
		{"GET", "/missing", nil, "", 404, false},
		{"PATCH", "/v1/rooms/lobby/events", nil, "", 405, false},
		{"OPTIONS", "/v1/rooms/lobby/events", http.Header{"Origin": {"https://elsewhere.example"}, "Access-Control-Request-Method": {"POST"}}, "", 0, false},
		{"GET", "/", nil, "", 0, false},
		{"GET", "/roomcast.js", nil, "", 0, false},
	}
	for _, tc := range cases {
		name := tc.method + " " + tc.path
		at := base
		if tc.metrics {
			name, at = "metrics listener "+name, metricsBase
		}
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, at+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // streams too: the headers are what matters
			if tc.status != 0 && resp.StatusCode != tc.status {
				t.Errorf("status %s, want %d", resp.Status, tc.status)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("status %s: X-Content-Type-Options %q, want nosniff", resp.Status, got)
			}
			ct := resp.Header.Get("Content-Type")
			if resp.StatusCode == 200 && (strings.HasPrefix(ct, "text/html") || strings.HasPrefix(ct, "text/javascript")) {
				csp := resp.Header.Get("Content-Security-Policy")
				if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
					t.Errorf("%s served with Content-Security-Policy %q", ct, csp)
				}
			}
		})
	}
}

// TestHelpListsEveryOption: --help documents every option as a flag with
// its ROOMCAST_* variable, and the platform aliases.
func TestHelpListsEveryOption(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		p := start(t, nil, arg)
		if code := p.Wait(t, waitFor); code != 0 {
			t.Fatalf("roomcast %s: exit %d", arg, code)
		}
		help := p.Stdout.String() + p.Stderr.String()
		if strings.Contains(help, "roomcast listening") {
			t.Fatalf("roomcast %s started the relay", arg)
		}
		// flag.PrintDefaults writes "  -name value\n    \tusage ($VAR)".
		entries := map[string]string{}
		for _, e := range regexp.MustCompile(`(?m)^  -`).Split(help, -1)[1:] {
			name, _, _ := strings.Cut(e, " ")
			name, _, _ = strings.Cut(name, "\n")
			entries[name] = e
		}
		opts := config.Options()
		if len(opts) < 40 {
			t.Fatalf("config.Options lists %d options", len(opts))
		}
		for _, o := range opts {
			e, ok := entries[o.Flag]
			if !ok {
				t.Errorf("roomcast %s does not list -%s", arg, o.Flag)
				continue
			}
			if !strings.HasPrefix(o.Env, "ROOMCAST_") || o.Env != "ROOMCAST_"+strings.ToUpper(strings.ReplaceAll(o.Flag, "-", "_")) {
				t.Errorf("-%s has variable %s, want the flag's name", o.Flag, o.Env)
			}
			if !strings.Contains(e, "$"+o.Env) {
				t.Errorf("roomcast %s: -%s does not name $%s:\n%s", arg, o.Flag, o.Env, e)
			}
		}
		if len(entries) != len(opts) {
			t.Errorf("roomcast %s lists %d flags, config.Options %d", arg, len(entries), len(opts))
		}
		for _, alias := range []string{"PORT", "REDIS_URL"} {
			if !strings.Contains(help, alias) {
				t.Errorf("roomcast %s does not mention the %s alias", arg, alias)
			}
		}
	}
}

// pings reads the stream's lines until n heartbeat comments have come,
// failing on anything else but the end of a frame.
func (s *stream) pings(t *testing.T, n int) {
	t.Helper()
	for seen := 0; seen < n; {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d heartbeats: %v", seen, err)
		}
		switch {
		case line == ": ping\n":
			seen++
		case line == "\n", strings.HasPrefix(line, "id: "): // the id-only frame after roomcast:connected
		default:
			t.Fatalf("after %d heartbeats: line %q", seen, line)
		}
	}
}

// TestStreamOutlivesWriteTimeout: the write timeout bounds each write to
// a stream, not the stream: an idle stream kept alive by heartbeats stays
// open well past it and still delivers.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ heartbeat, writeTimeout string }{
		{"1s", "2s"},
		{"1s", "200ms"}, // idle gaps longer than the write timeout
	} {
		t.Run(tc.heartbeat+"/"+tc.writeTimeout, func(t *testing.T) {
			t.Parallel()
			_, addr := startRelay(t, nil, "-heartbeat", tc.heartbeat, "-write-timeout", tc.writeTimeout)
			events := "http://" + addr + "/v1/rooms/idle/events"
			s := openStream(t, events, nil)
			s.connected(t)
			opened := time.Now()
			s.pings(t, 3)
			wt, _ := time.ParseDuration(tc.writeTimeout)
			if d := time.Since(opened); d <= wt {
				t.Fatalf("3 heartbeats in %s, not past the %s write timeout", d, wt)
			}
			p := post(t, events, "still here")
			s.event(t, p, "still here")
		})
	}
}

// secretRequest sends credentials in the query and the header.
func secretRequest(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"data":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer SECRET3")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRequestLogs: the binary logs one JSON line per request, streams with
// their connection id, and never a credential.
func TestRequestLogs(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, nil, "-log-level", "debug", "-api-key", "relay-api-key-for-tests", "-allow-query-tokens", "-addr", "127.0.0.1:0")
	base := "http://" + addr
	const query = "?access_token=SECRET&ticket=SECRET2"
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/rooms/lobby/events" + query},
		{"GET", "/v1/rooms/lobby/poll" + query + "&timeout=0"},
		{"POST", "/v1/rooms/lobby/events" + query},
		{"GET", "/metrics" + query},
	} {
		secretRequest(t, req.method, base+req.path)
	}
	s := openStream(t, base+"/v1/rooms/lobby/events", http.Header{"Authorization": {"Bearer relay-api-key-for-tests"}})
	s.connected(t)
	s.resp.Body.Close()
	p.Stderr.AwaitCount(t, `"msg":"request"`, 5)

	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, waitFor); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := p.Stderr.String()
	for _, secret := range []string{"SECRET", "relay-api-key-for-tests"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
	var requests []relaytest.LogLine
	for _, r := range relaytest.ParseLog(t, out) {
		if r.Msg == "request" {
			requests = append(requests, r)
		}
	}
	if len(requests) != 5 {
		t.Fatalf("%d request lines for 5 requests:\n%s", len(requests), out)
	}
	streams := 0
	for _, r := range requests[:4] {
		if !strings.Contains(r.URI, "access_token=REDACTED") || !strings.Contains(r.URI, "ticket=REDACTED") {
			t.Errorf("logged URI %q, want the credentials REDACTED", r.URI)
		}
	}
	for _, r := range requests {
		if r.RequestID == "" || r.Method == "" || r.Status == 0 || r.Bytes == nil || r.Duration == nil {
			t.Errorf("request line %+v lacks a field", r)
		}
		if r.Connection != nil {
			streams++
		}
	}
	if streams != 1 || requests[4].Connection == nil || *requests[4].Connection == "" {
		t.Errorf("%d request lines name a connection; want the one stream's:\n%s", streams, out)
	}
}

// TestLogLevel: ROOMCAST_LOG_LEVEL=warn leaves only warnings and errors.
func TestLogLevel(t *testing.T) {
	t.Parallel()
	// At warn the relay does not log where it listens: give it a port.
	addr := relaytest.FreeAddr(t)
	p := start(t, []string{"ROOMCAST_LOG_LEVEL=warn", "ROOMCAST_ADDR=" + addr})
	relaytest.Eventually(t, "the relay is ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	post(t, "http://"+addr+"/v1/rooms/lobby/events", "quiet")
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, waitFor); code != 0 {
		t.Fatalf("exit %d", code)
	}
	recs := relaytest.ParseLog(t, p.Stderr.String())
	for _, r := range recs {
		if r.Level != "WARN" && r.Level != "ERROR" {
			t.Errorf("a warn-level relay logged %+v", r)
		}
	}
	if len(recs) == 0 || !strings.Contains(p.Stderr.String(), "OPEN MODE") {
		t.Errorf("the open mode warning is missing:\n%s", p.Stderr.String())
	}
}

// scrape reads one metric's value from /metrics; -1 when it is absent.
func scrape(t *testing.T, base, token, series string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s %s", resp.Status, body)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			return f
		}
	}
	return -1
}

// awaitMetric scrapes until series has the value want.
func awaitMetric(t *testing.T, base, token, series string, want float64) {
	t.Helper()
	relaytest.Eventually(t, fmt.Sprintf("%s = %g", series, want), func() bool { return scrape(t, base, token, series) == want })
}

// TestDebugListener: with ROOMCAST_DEBUG_ADDR the binary serves Go's
// profiles on that address, and only there.
func TestDebugListener(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, []string{"ROOMCAST_DEBUG_ADDR=127.0.0.1:0", "ROOMCAST_ADDR=127.0.0.1:0"})
	m := p.Stderr.AwaitMatch(t, regexp.MustCompile(`"msg":"debug listener","addr":"([^"]+)"`))
	for _, tc := range []struct {
		url    string
		status int
	}{
		{"http://" + m[1] + "/debug/pprof/", http.StatusOK},
		{"http://" + m[1] + "/debug/pprof/goroutine?debug=1", http.StatusOK},
		{"http://" + addr + "/debug/pprof/", http.StatusNotFound},
	} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: %s, want %d", tc.url, resp.Status, tc.status)
		}
		if tc.status == http.StatusOK && !strings.Contains(string(body), "goroutine") {
			t.Errorf("GET %s: no profile in %.200s", tc.url, body)
		}
	}
}

// TestMetricsEndpoint: the binary serves its metrics on the metrics
// listener only, behind the token, and counts rooms and connections as
// clients come and go.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, []string{"ROOMCAST_METRICS_TOKEN=scrape-token", "ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_METRICS_ADDR=127.0.0.1:0"})
	base := "http://" + addr
	metrics := "http://" + p.Stderr.AwaitMatch(t, regexp.MustCompile(`"msg":"metrics listener","addr":"([^"]+)"`))[1]
	for _, tc := range []struct {
		base, header string
		status       int
	}{
		{metrics, "", 401}, {metrics, "Bearer wrong", 401}, {metrics, "Bearer scrape-token", 200},
		// Never on the relay's own listener, token or not.
		{base, "", 404}, {base, "Bearer scrape-token", 404},
	} {
		req, _ := http.NewRequest(http.MethodGet, tc.base+"/metrics", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s/metrics with %q: %s, want %d", tc.base, tc.header, resp.Status, tc.status)
		}
	}

	awaitMetric(t, metrics, "scrape-token", "roomcast_rooms", 0)
	awaitMetric(t, metrics, "scrape-token", `roomcast_connections{transport="sse"}`, 0)
	s := openStream(t, base+"/v1/rooms/lobby/events", nil)
	s.connected(t)
	awaitMetric(t, metrics, "scrape-token", "roomcast_rooms", 1)
	awaitMetric(t, metrics, "scrape-token", `roomcast_connections{transport="sse"}`, 1)
	post(t, base+"/v1/rooms/lobby/events", "counted")
	awaitMetric(t, metrics, "scrape-token", `roomcast_events_published_total{kind="retained"}`, 1)
	awaitMetric(t, metrics, "scrape-token", "roomcast_events_delivered_total", 1)
	s.resp.Body.Close()
	awaitMetric(t, metrics, "scrape-token", "roomcast_rooms", 0)
	awaitMetric(t, metrics, "scrape-token", `roomcast_connections{transport="sse"}`, 0)
	if v := scrape(t, metrics, "scrape-token", "roomcast_backbone_up"); v != 1 {
		t.Errorf("roomcast_backbone_up = %g", v)
	}
}

// TestPollSessionOptions: a named long-poller's place is kept between
// polls by default, for -poll-session-ttl, and not at all with
// -max-poll-sessions 0.
func TestPollSessionOptions(t *testing.T) {
	t.Parallel()
	sessions := func(t *testing.T, base string) string {
		t.Helper()
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "roomcast_poll_sessions "); ok {
				return v
			}
		}
		t.Fatalf("no roomcast_poll_sessions in /metrics:\n%s", b)
		return ""
	}
	// pollTwice polls for a starting point, then holds a poll from it
	// for 100 ms: only a held poll leaves its place behind.
	pollTwice := func(t *testing.T, base, client string) {
		t.Helper()
		var cursor, proof string
		for _, q := range []string{"timeout=0", "timeout=0.1&cursor="} {
			// The second poll proves the (anonymous) poller's id with the
			// proof the first answer gave.
			resp, err := http.Get(base + "/v1/rooms/polled/poll?client=" + client + "&proof=" + url.QueryEscape(proof) + "&" + q + url.QueryEscape(cursor))
			if err != nil {
				t.Fatal(err)
			}
			var ans struct{ Cursor, Connection string }
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || ans.Cursor == "" {
				t.Fatalf("poll %s: %s (%v)", q, resp.Status, err)
			}
			cursor, proof = ans.Cursor, ans.Connection
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, "1"},
		{"none", []string{"-max-poll-sessions", "0"}, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, addr, metrics := startMetered(t, nil, tc.args...)
			pollTwice(t, "http://"+addr, "poller-one")
			if got := sessions(t, metrics); got != tc.want {
				t.Fatalf("roomcast_poll_sessions = %s after a held poll, want %s", got, tc.want)
			}
		})
	}
	t.Run("ttl", func(t *testing.T) {
		t.Parallel()
		_, addr, metrics := startMetered(t, nil, "-poll-session-ttl", "1s")
		pollTwice(t, "http://"+addr, "poller-two")
		if got := sessions(t, metrics); got != "1" {
			t.Fatalf("roomcast_poll_sessions = %s right after a held poll, want 1", got)
		}
		relaytest.Eventually(t, "the place expires", func() bool { return sessions(t, metrics) == "0" })
	})
}
