package sub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/relay/sub"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// front is the test server's handler: it forwards to the current relay
// instance and can refuse new streams, as a relay that is down would.
type front struct {
	current atomic.Pointer[relay.Server]
	refuse  atomic.Bool
	refused atomic.Int32
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.refuse.Load() && r.Method == http.MethodGet {
		f.refused.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":"draining","message":"down for the test"}}`)
		return
	}
	f.current.Load().ServeHTTP(w, r)
}

// testRelay is a real relay behind an httptest.Server.
type testRelay struct {
	t     *testing.T
	bb    *memory.Backbone
	key   []byte
	front *front
	srv   *httptest.Server
	http  *http.Client
}

func newRelay(t *testing.T) *testRelay {
	t.Helper()
	r := &testRelay{t: t, bb: memory.New(memory.Options{}), key: bytes.Repeat([]byte("k"), 32), front: &front{}}
	t.Cleanup(func() { r.bb.Close() })
	r.front.current.Store(r.instance())
	r.srv = httptest.NewServer(r.front)
	t.Cleanup(r.srv.Close)
	// No keep-alive, so that closing the server's connections never hits
	// a publish.
	r.http = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return r
}

// instance is a relay over the shared backbone and cursor key: another
// instance a client can fail over to and resume on.
func (r *testRelay) instance() *relay.Server {
	codec, err := rooms.NewCursorCodec(r.key)
	if err != nil {
		r.t.Fatal(err)
	}
	hub := rooms.NewHub(r.bb, codec, rooms.HubOptions{})
	return relay.New(hub, relay.Options{
		// These tests cut streams from the server's side, which reaches
		// only the connections net/http still tracks.
		DisableHijack: true,
		RetryMin:      150 * time.Millisecond,
		RetryMax:      300 * time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})
}

// publish posts body to path and returns the event's id.
func (r *testRelay) publish(path, contentType, body string) string {
	r.t.Helper()
	resp, err := r.http.Post(r.srv.URL+path, contentType, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("publish %s: %s, %v", path, resp.Status, err)
	}
	return ans.ID
}

func (r *testRelay) publishN(room string, n int) string {
	return r.publish("/v1/rooms/"+room+"/events", "application/json", fmt.Sprintf(`{"data":{"n":%d}}`, n))
}

// running is a sub.Main running in a goroutine.
type running struct {
	stdout, stderr *relaytest.Output
	cancel         context.CancelFunc
	done           chan int
}

func startSub(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &running{stdout: relaytest.NewOutput(), stderr: relaytest.NewOutput(), cancel: cancel, done: make(chan int, 1)}
	go func() { s.done <- sub.Main(ctx, args, s.stdout, s.stderr) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels Main, as SIGINT does, and returns its exit code.
func (s *running) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.done:
		s.done <- code
		return code
	case <-time.After(waitFor):
		t.Fatal("sub did not stop after its context was cancelled")
		return -1
	}
}

type envelope struct {
	ID   *string `json:"id"`
	Room string  `json:"room"`
	Data struct {
		N int `json:"n"`
	} `json:"data"`
}

// assertSequence checks that lines are the envelopes of ids, in order,
// numbered 1, 2, ...
func assertSequence(t *testing.T, lines, ids []string) {
	t.Helper()
	if len(lines) != len(ids) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(ids), strings.Join(lines, "\n"))
	}
	for i, line := range lines {
		var env envelope
		if err := json.Unmarshal([]byte(line), &env); err != nil {
			t.Fatalf("line %d is not an envelope: %v: %s", i, err, line)
		}
		if env.Data.N != i+1 || env.ID == nil || *env.ID != ids[i] {
			t.Errorf("line %d: n=%d id=%v, want n=%d id=%s", i, env.Data.N, env.ID, i+1, ids[i])
		}
	}
}

func TestSubResumesAfterDisconnect(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL, "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)

	var ids []string
	for n := 1; n <= 3; n++ {
		ids = append(ids, r.publishN("lobby", n))
	}
	s.stdout.AwaitLines(t, 3)

	// The relay goes away: open streams break and new ones are refused
	// while events keep being published.
	r.front.refuse.Store(true)
	r.srv.CloseClientConnections()
	for n := 4; n <= 6; n++ {
		ids = append(ids, r.publishN("lobby", n))
	}
	s.stderr.AwaitCount(t, "503", 1)
	r.front.refuse.Store(false)

	s.stderr.AwaitCount(t, "roomcast:connected", 2)
	ids = append(ids, r.publishN("lobby", 7))
	assertSequence(t, s.stdout.AwaitLines(t, 7), ids)
	if code := s.stop(t); code != 0 {
		t.Errorf("exit code %d after cancel, want 0", code)
	}
	assertSequence(t, s.stdout.Lines(), ids)
}

var reconnectRE = regexp.MustCompile(`roomcast:closing .*"reconnect_ms":(\d+)`)

func TestSubFollowsDrainToAnotherInstance(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL, "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)
	ids := []string{r.publishN("lobby", 1)}
	s.stdout.AwaitLines(t, 1)

	// A rolling restart: the old instance drains, which ends the stream
	// cleanly, and the next connection reaches a new one.
	old := r.front.current.Swap(r.instance())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	old.Drain(ctx)
	ids = append(ids, r.publishN("lobby", 2))

	s.stderr.AwaitCount(t, "roomcast:connected", 2)
	ids = append(ids, r.publishN("lobby", 3))
	assertSequence(t, s.stdout.AwaitLines(t, 3), ids)

	stderr := s.stderr.String()
	m := reconnectRE.FindStringSubmatch(stderr)
	if m == nil || !strings.Contains(stderr, `"reason":"shutdown"`) {
		t.Fatalf("no roomcast:closing with reason shutdown and reconnect_ms on stderr:\n%s", stderr)
	}
	if want := fmt.Sprintf("stream ended; reconnecting in %sms", m[1]); !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q: the closing delay was not honoured:\n%s", want, stderr)
	}
}

var resumeRE = regexp.MustCompile(`stopped; resume with -last-event-id=(\S+)\n`)

func TestSubStartsAfterLastEventID(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL+"/", "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)
	r.publishN("lobby", 0)
	s.stdout.AwaitLines(t, 1)
	if code := s.stop(t); code != 0 {
		t.Fatalf("exit code %d after cancel, want 0", code)
	}
	m := resumeRE.FindStringSubmatch(s.stderr.String())
	if m == nil {
		t.Fatalf("no cursor to resume from on stderr:\n%s", s.stderr.String())
	}

	ids := []string{r.publishN("lobby", 1)}
	// A full-size body arrives as a JSON string: with its envelope the
	// event is well over the 64 KiB that r3labs's client reads by default.
	big := strings.Repeat("x", 64<<10)
	ids = append(ids, r.publish("/v1/rooms/lobby/events?event=big", "text/plain", big))

	s = startSub(t, "-url", r.srv.URL, "-last-event-id", m[1], "lobby")
	lines := s.stdout.AwaitLines(t, 2)
	var one, two struct {
		ID    string
		Event string
		Data  json.RawMessage
	}
	if err := json.Unmarshal([]byte(lines[0]), &one); err != nil || one.ID != ids[0] || string(one.Data) != `{"n":1}` {
		t.Errorf("first line %s (%v), want event %s", lines[0], err, ids[0])
	}
	if err := json.Unmarshal([]byte(lines[1]), &two); err != nil || two.ID != ids[1] || two.Event != "big" || string(two.Data) != `"`+big+`"` {
		t.Errorf("second line: %d bytes, id %q, event %q (%v); want the %d-byte event %s", len(lines[1]), two.ID, two.Event, err, len(big), ids[1])
	}
	if strings.Contains(s.stderr.String(), "roomcast:reset") {
		t.Errorf("the printed cursor was not accepted:\n%s", s.stderr.String())
	}
}

func TestSubTextMulti(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL, "-format", "text", "-multi", "a, ns:b")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)

	r.publish("/v1/rooms/a/events", "application/json", `{"data":"hello there"}`)
	r.publish("/v1/rooms/ns:b/events?event=note", "text/plain", "two\nlines")
	r.publish("/v1/events", "application/json", `{"rooms":["a","ns:b","c"],"event":"both","data":{"x":1}}`)
	r.publish("/v1/rooms/a/events", "application/json", `{"event":"last","data":null}`)

	lines := s.stdout.AwaitLines(t, 4)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^message a -: hello there$`),
		regexp.MustCompile(`^note ns:b -: "two\\nlines"$`),
		regexp.MustCompile(`^both (a|ns:b) -: \{"x":1\}$`), // once, though it reached both rooms
		regexp.MustCompile(`^last a -: null$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d = %q, want match for %s", i, lines[i], re)
		}
	}
}

func TestSubUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no room", nil, 2, "exactly one ROOM"},
		{"two rooms", []string{"a", "b"}, 2, "exactly one ROOM"},
		{"list without -multi", []string{"a,b"}, 2, "-multi"},
		{"invalid room", []string{"no spaces"}, 2, "invalid room"},
		{"invalid room in list", []string{"-multi", "a,,b"}, 2, "invalid room"},
		{"bad format", []string{"-format", "xml", "a"}, 2, "-format"},
		{"bad url", []string{"-url", "ftp://example.com", "a"}, 2, "-url"},
		// The route was appended to the query: the relay's demo page
		// answered, read as a stream that never came.
		{"url with a query", []string{"-url", "http://127.0.0.1:1/?x=1", "a"}, 2, "no query or fragment"},
		{"url with a fragment", []string{"-multi", "-url", "http://127.0.0.1:1#top", "a,b"}, 2, "no query or fragment"},
		{"unknown flag", []string{"-nope", "a"}, 2, "-nope"},
		{"help", []string{"-h"}, 0, "Usage: roomcast sub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := sub.Main(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tt.code, tt.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// A refusal that asking again cannot change ends the command instead of
// being retried forever.
func TestSubStopsOnPermanentError(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL+"/not-the-relay", "lobby")
	select {
	case code := <-s.done:
		s.done <- code
		if code != 1 || !strings.Contains(s.stderr.String(), "not_found") {
			t.Errorf("exit %d, stderr %q; want 1 and the relay's not_found", code, s.stderr.String())
		}
	case <-time.After(waitFor):
		t.Fatalf("sub kept retrying a 404:\n%s", s.stderr.String())
	}
}

// ROOMCAST_URL is the default of -url.
func TestSubURLFromEnvironment(t *testing.T) {
	r := newRelay(t)
	t.Setenv("ROOMCAST_URL", r.srv.URL)
	s := startSub(t, "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)
	id := r.publishN("lobby", 1)
	assertSequence(t, s.stdout.AwaitLines(t, 1), []string{id})
}

// A stream silent for longer than -idle-timeout (here shorter than the
// relay's heartbeat) is treated as dead and resumed without loss.
func TestSubReconnectsSilentStream(t *testing.T) {
	r := newRelay(t)
	s := startSub(t, "-url", r.srv.URL, "-idle-timeout", "200ms", "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)
	ids := []string{r.publishN("lobby", 1)}
	s.stderr.AwaitCount(t, "roomcast:connected", 2)
	ids = append(ids, r.publishN("lobby", 2))
	assertSequence(t, s.stdout.AwaitLines(t, 2), ids)
}

// -token carries a user token to a relay that needs one to subscribe; a
// missing one stops the command with the relay's refusal and the remedy.
func TestSubToken(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth:       relaytest.NewAuth(t, auth.Config{}),
		Namespaces: &rooms.Namespaces{Default: rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true}},
	}})
	alice := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"name": "Alice"})
	s := startSub(t, "-url", r.URL, "-format", "text", "-token", alice, "lobby")
	s.stderr.AwaitCount(t, "roomcast:connected", 1)
	r.Publish(t, "/v1/rooms/lobby/events", "text/plain", []byte("hi"), relaytest.Bearer(alice))
	s.stdout.AwaitMatch(t, regexp.MustCompile(`^message lobby Alice: hi\n$`))

	anonymous := startSub(t, "-url", r.URL, "lobby")
	select {
	case code := <-anonymous.done:
		anonymous.done <- code
		if code != 1 || !strings.Contains(anonymous.stderr.String(), "unauthenticated") || !strings.Contains(anonymous.stderr.String(), "-token") {
			t.Errorf("exit %d, stderr %q; want 1, unauthenticated and the -token hint", code, anonymous.stderr.String())
		}
	case <-time.After(waitFor):
		t.Fatalf("sub without a token kept retrying:\n%s", anonymous.stderr.String())
	}
}
