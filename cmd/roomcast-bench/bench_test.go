package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// TestMain fails the package if a run leaves a goroutine behind: every
// subscriber, poller and publisher must be stopped when Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// policy is the relay under test's: anonymous subscribers, publishes with
// the API key only (as the bench script configures the real binary).
func policy() *rooms.Namespaces {
	return &rooms.Namespaces{Default: rooms.NamespaceOptions{
		Anonymous: true, Publish: rooms.PublishServer, Presence: true, JoinLeaveEvents: true,
	}}
}

// startRelay runs one relay with the API key and the policy above.
func startRelay(t *testing.T) string {
	t.Helper()
	return startRelayWith(t, relayOptions{})
}

// startRelayWith starts a relay with opts and the test policy.
func startRelayWith(t *testing.T, opts relayOptions) string {
	t.Helper()
	opts.Relay.Namespaces = policy()
	return serveRelay(t, memory.New(memory.Options{}), opts)
}

// startCluster runs n relays sharing one in-memory backbone, as instances
// sharing Redis would.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	var urls []string
	for range n {
		urls = append(urls, serveRelay(t, closeLater{bb}, relayOptions{Relay: relay.Options{Namespaces: policy()}}))
	}
	return urls
}

// checkIntegrity requires every message to have reached every subscriber
// once and in order.
func checkIntegrity(t *testing.T, rep *Report, subscribers, messages int) {
	t.Helper()
	d := rep.Deliveries
	want := int64(subscribers * messages)
	if !rep.OK || !rep.Complete || d.Expected != want || d.Received != want || d.Lost != 0 || d.Duplicated != 0 ||
		d.OutOfOrder != 0 || d.StreamsEnded != 0 || rep.Latency.Count != want {
		var b bytes.Buffer
		_ = rep.WriteTable(&b)
		t.Fatalf("want %d deliveries, each once and in order:\n%s", want, b.String())
	}
	if rep.Connect.Connected != subscribers || rep.Publish.Accepted != int64(messages) {
		t.Fatalf("connected %d of %d, accepted %d of %d", rep.Connect.Connected, subscribers, rep.Publish.Accepted, messages)
	}
	if l := rep.Latency; l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Fatalf("latency percentiles out of order: %+v", l)
	}
	// One fan-out end per event, the slowest of its deliveries: the
	// slowest of them all is the slowest delivery, and the median event
	// ends no sooner than the median delivery arrives.
	if f := rep.LastDelivery; f.Count != int64(messages) || f.Max != rep.Latency.Max || f.P50 < rep.Latency.P50 {
		t.Fatalf("fan-out end %+v, deliveries %+v", f, rep.Latency)
	}
}

// readers are the stream readers of this system, each of which every
// stream test runs with.
func readers() []string {
	if epollAvailable {
		return []string{ReaderEpoll, ReaderGoroutine}
	}
	return []string{ReaderGoroutine}
}

// TestRun runs the generator against relays in this process: one relay,
// and two sharing a backbone, with each stream reader. Each case uses its
// own room.
func TestRun(t *testing.T) {
	single := []string{startRelay(t)}
	cluster := startCluster(t, 2)
	tests := []struct {
		name    string
		cfg     Config
		targets []string
	}{
		{name: "streams and polls", targets: single, cfg: Config{Subscribers: 20, Polls: 3, Messages: 50, Rate: 500, Publishers: 2}},
		{name: "sources and tiny payloads", targets: single, cfg: Config{Subscribers: 12, Messages: 30, Rate: 1000, Sources: 3, Size: 1}},
		{name: "two instances", targets: cluster, cfg: Config{Subscribers: 10, Polls: 2, Messages: 40, Rate: 500, Publishers: 2, PublishSpread: true}},
		// 8 streams per connection at most: the 20 streams need three.
		{name: "h2c", targets: []string{startRelayWith(t, relayOptions{H2C: true, H2CMaxStreams: 8})},
			cfg: Config{Subscribers: 20, Polls: 2, Messages: 30, Rate: 500, H2C: true}},
	}
	for _, reader := range readers() {
		for i, tc := range tests {
			if tc.cfg.H2C && reader != ReaderGoroutine {
				continue // HTTP/2 streams are read through net/http
			}
			t.Run(reader+"/"+tc.name, func(t *testing.T) {
				testRun(t, tc.cfg, tc.targets, "run-"+reader+"-"+strconv.Itoa(i), reader)
			})
		}
	}

	// Volatile events may be dropped, but none may arrive twice or out of
	// order.
	t.Run("volatile", func(t *testing.T) {
		cfg := Config{Targets: single, Room: "volatile", APIKey: apiKey, Subscribers: 10, Messages: 20, Rate: 500, Volatile: true, Settle: 3 * time.Second}
		rep, err := Run(context.Background(), cfg, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		d := rep.Deliveries
		if !rep.OK || d.Duplicated != 0 || d.OutOfOrder != 0 || d.Received+d.Lost != d.Expected || d.Received == 0 {
			t.Fatalf("volatile run: ok %v, %+v", rep.OK, d)
		}
	})

	// Publishes need the key: the relay refuses them, and the report says
	// so rather than claiming success.
	t.Run("without the key", func(t *testing.T) {
		cfg := Config{Targets: single, Room: "nokey", APIKey: "wrong", Subscribers: 2, Messages: 3, Rate: 1000, Settle: 100 * time.Millisecond}
		rep, err := Run(context.Background(), cfg, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK || rep.Publish.Accepted != 0 || rep.Publish.Failed != 3 || !strings.Contains(rep.Publish.LastError, "401") {
			t.Fatalf("ok %v, publish %+v", rep.OK, rep.Publish)
		}
	})

	// The command as the binary runs it, with JSON on stdout and in a file.
	t.Run("main json", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "report.json")
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), []string{
			"-targets", single[0], "-room", "main", "-api-key", apiKey, "-n", "20", "-messages", "50", "-rate", "500",
			"-warmup", "100ms", "-server-pid", strconv.Itoa(os.Getpid()), "-format", "json", "-json", file, "-label", "unit",
		}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
		}
		written, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(written, stdout.Bytes()) {
			t.Fatalf("the -json file differs from stdout:\n%s\n%s", written, stdout.String())
		}
		var rep map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
		}
		for _, k := range []string{"config", "connect", "publish", "deliveries", "latency_ms", "servers",
			"server_cpu_us_per_delivery", "server_rss_per_conn_kb", "load_generator", "machine", "ok"} {
			if _, ok := rep[k]; !ok {
				t.Errorf("JSON report has no %q", k)
			}
		}
		var typed Report
		if err := json.Unmarshal(stdout.Bytes(), &typed); err != nil {
			t.Fatal(err)
		}
		checkIntegrity(t, &typed, 20, 50)
		if typed.Label != "unit" || typed.Config.Subscribers != 20 || typed.Config.WarmupSec != 0.1 {
			t.Fatalf("config echoed as %+v (label %q)", typed.Config, typed.Label)
		}
	})

	t.Run("main table", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), []string{"-targets", single[0], "-room", "table", "-api-key", apiKey,
			"-n", "5", "-messages", "5", "-rate", "500", "-warmup", "0s"}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		for _, want := range []string{"deliveries      25/25", "lost 0 (0 subscribers), duplicated 0, out of order 0", "result          OK"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("table lacks %q:\n%s", want, stdout.String())
			}
		}
	})
}

// testRun runs cfg against targets in room with reader and checks that
// every message reached every subscriber once and in order.
func testRun(t *testing.T, cfg Config, targets []string, room, reader string) {
	cfg.Targets = targets
	cfg.Room = room
	cfg.Reader = reader
	cfg.APIKey = apiKey
	cfg.ServerPIDs = []int{os.Getpid()} // the relays run in this process
	cfg.Timeout = time.Minute
	var log bytes.Buffer
	rep, err := Run(context.Background(), cfg, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	checkIntegrity(t, rep, cfg.Subscribers+cfg.Polls, cfg.Messages)
	if cfg.Polls > 0 && (rep.Deliveries.PollRequests == 0 || len(rep.ByKind) != 2 || rep.ByKind["poll"].Count != int64(cfg.Polls*cfg.Messages)) {
		t.Fatalf("poll figures: %d requests, by kind %+v", rep.Deliveries.PollRequests, rep.ByKind)
	}
	if len(targets) > 1 && len(rep.ByTarget) != len(targets) {
		t.Fatalf("latency of %d targets reported, want %d", len(rep.ByTarget), len(targets))
	}
	// CPU is counted in ticks of 10 ms: a small run may take none.
	if s := rep.Servers; len(s) != 1 || s[0].RSSIdleKB <= 0 || s[0].RSSPeakKB < s[0].RSSIdleKB || rep.ServerCPUMicrosPerDelivery < 0 {
		t.Fatalf("server figures: %+v, %g µs per delivery", s, rep.ServerCPUMicrosPerDelivery)
	}
	if rep.Config.Reader != reader {
		t.Fatalf("report names reader %q, want %q", rep.Config.Reader, reader)
	}
}

func TestRunRefused(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"too_many_connections"}}`, http.StatusTooManyRequests)
	}))
	defer ts.Close()
	cfg := Config{Targets: []string{ts.URL}, Subscribers: 3, Polls: 1, Messages: 1, Rate: 1, ConnectTimeout: 5 * time.Second}
	rep, err := Run(context.Background(), cfg, io.Discard)
	if err == nil || rep == nil || rep.Connect.Failed != 4 || !strings.Contains(err.Error(), "429") {
		t.Fatalf("run against a refusing server: %v, %+v", err, rep)
	}
	ts.CloseClientConnections()
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, want string // want "" for refused
	}{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"http://127.0.0.2:9", "http://127.0.0.2:9"},
		{"http://localhost:8080/", "http://127.0.0.1:8080"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://127.0.0.1", "http://127.0.0.1:80"},
		{"http://10.0.0.1:8080", ""},
		{"http://192.168.1.10", ""},
		{"http://example.com:8080", ""},
		{"http://0.0.0.0:8080", ""},
		{"https://127.0.0.1:8443", ""},
		{"http://127.0.0.1:8080/v1", ""},
		{"127.0.0.1:8080", ""},
	}
	for _, tc := range tests {
		got, err := parseTarget(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s accepted as %s", tc.in, got.base)
		case tc.want != "" && (err != nil || got.base != tc.want):
			t.Errorf("%s: %q, %v; want %s", tc.in, got.base, err, tc.want)
		}
	}
}

// TestH2CAgainstHTTP1Relay: -h2c against a relay that speaks HTTP/1.1
// only fails the run and says why.
func TestH2CAgainstHTTP1Relay(t *testing.T) {
	cfg := Config{Targets: []string{startRelay(t)}, Subscribers: 2, Messages: 1, Rate: 1, H2C: true,
		APIKey: apiKey, ConnectTimeout: 5 * time.Second}
	var log bytes.Buffer
	_, err := Run(context.Background(), cfg, &log)
	if err == nil || !strings.Contains(err.Error(), "ROOMCAST_H2C=true") {
		t.Fatalf("err = %v, want the run refused naming ROOMCAST_H2C\n%s", err, log.String())
	}
}

func TestMainUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-targets", "http://10.1.2.3:8080"}, 2, "non-loopback"},
		{[]string{"-format", "xml"}, 2, "table or json"},
		{[]string{"-room", "BAD:x"}, 2, "-room"},
		{[]string{"-event", "roomcast:x"}, 2, "-event"},
		{[]string{"-server-pid", "abc"}, 2, "not a pid"},
		{[]string{"extra"}, 2, "unexpected argument"},
		{[]string{"-reader", "poll"}, 2, "must be epoll or goroutine"},
		{[]string{"-h"}, 0, "Usage: roomcast bench"},
		{[]string{"-targets", "http://127.0.0.1:1", "-messages", "0", "-duration", "0s"}, 1, "set -messages or -duration"},
		{[]string{"-targets", "http://127.0.0.1:1", "-polls", "1", "-volatile"}, 1, "volatile"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, want %d; stderr %q lacks %q", tc.args, code, tc.code, stderr.String(), tc.want)
		}
	}
}

// Publishes the relay refuses are reported by status and code with what to
// change: here anonymous publishes over the relay's per-address rate.
func TestMainReportsRefusals(t *testing.T) {
	url := serveRelay(t, memory.New(memory.Options{}), relayOptions{Relay: relay.Options{
		Namespaces: &rooms.Namespaces{Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone}},
		Limits:     relay.Limits{PublishRate: 0.001, PublishBurst: 4},
	}})
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"-targets", url, "-api-key", "", "-n", "2", "-messages", "10", "-rate", "1000",
		"-warmup", "10ms", "-settle", "200ms"}, &stdout, &stderr)
	out := stdout.String()
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"4/10 accepted", "6 of 10 publishes refused with 429 rate_limited", "ROOMCAST_PUBLISH_RATE", "-api-key", "lower -rate"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// Subscribers the relay refuses are reported with what to change: here
// more streams than the relay allows per address.
func TestMainReportsRefusedSubscribers(t *testing.T) {
	url := serveRelay(t, memory.New(memory.Options{}), relayOptions{Relay: relay.Options{
		Namespaces: &rooms.Namespaces{Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone}},
		Limits:     relay.Limits{MaxConnsPerIP: 2},
	}})
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"-targets", url, "-api-key", "", "-n", "4", "-messages", "2", "-rate", "100",
		"-warmup", "10ms", "-settle", "200ms", "-sources", "1"}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"2 of 4 subscribers did not connect", "too_many_connections", "ROOMCAST_MAX_CONNS_PER_IP"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s\n%s", want, stdout.String(), stderr.String())
		}
	}
}
