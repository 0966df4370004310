package processtest

// These tests build the real binary once and drive it over real HTTP and
// real signals, as an operator and a curl user would.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

const (
	testVersion = "test-1.2.3"
	// waitFor bounds a wait for a process to finish: a hang detector, not
	// a speed check. A script of the README starts several race-built
	// processes; on a loaded CI machine that took over 10 s.
	waitFor = 60 * time.Second
)

// binary is the roomcast binary under test, benchBinary the load
// generator built beside it.
var binary, benchBinary string

func TestMain(m *testing.M) {
	// The tests run the README's and docs' commands as written, from the
	// repository's root, and read the files there.
	if err := os.Chdir(filepath.Join("..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "roomcast-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary, err = relaytest.BuildRoomcast(dir, testVersion)
	if err == nil {
		// The load generator beside it, where `roomcast bench` finds it.
		benchBinary = filepath.Join(dir, "roomcast-bench")
		build := exec.Command("go", "build", "-o", benchBinary, "./cmd/roomcast-bench")
		if out, berr := build.CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build ./cmd/roomcast-bench: %w\n%s", berr, out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running roomcast process.
type proc = relaytest.Process

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// Open mode keeps its development-token key in the cache directory:
	// the test's own, not the user's.
	cmd.Env = relaytest.CleanEnv(append([]string{"XDG_CACHE_HOME=" + t.TempDir()}, env...)...)
	return relaytest.StartProcess(t, cmd, relaytest.ProcessOptions{Name: "roomcast " + strings.Join(args, " ")})
}

// startRelay runs the relay and returns it with the address it listens on,
// read from its JSON "roomcast listening" log line.
func startRelay(t *testing.T, env []string, args ...string) (*proc, string) {
	t.Helper()
	if len(env) == 0 && !hasFlag(args, "-addr") {
		args = append([]string{"-addr", "127.0.0.1:0"}, args...)
	}
	p := start(t, env, args...)
	line := p.Stderr.AwaitListening(t)
	if line.Backbone != "memory" || line.Version != testVersion {
		t.Errorf("listening line says backbone %q version %q", line.Backbone, line.Version)
	}
	return p, line.Addr
}

// startMetered is startRelay with metrics served on a listener of their
// own, on a free port: it returns the relay's address and that listener's
// base URL, read from the "metrics listener" log line.
func startMetered(t *testing.T, env []string, args ...string) (p *proc, addr, metrics string) {
	t.Helper()
	p, addr = startRelay(t, env, append([]string{"-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0"}, args...)...)
	m := p.Stderr.AwaitMatch(t, regexp.MustCompile(`"msg":"metrics listener","addr":"([^"]+)"`))
	return p, addr, "http://" + m[1]
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// stream is an SSE response read frame by frame.
type stream struct {
	resp *http.Response
	r    *bufio.Reader
}

func openStream(t *testing.T, url string, header http.Header) *stream {
	t.Helper()
	return openStreamWith(t, http.DefaultClient, url, header)
}

// openStreamWith opens a stream with client (an HTTP/2 one, say).
func openStreamWith(t *testing.T, client *http.Client, url string, header http.Header) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return &stream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next frame that dispatches something (an id-only
// frame moves the cursor and dispatches nothing, as in a browser), or
// io.EOF when the server ended the stream.
func (s *stream) next() (relaytest.Frame, error) {
	for {
		f, err := relaytest.ReadFrame(s.r, nil)
		if err != nil || !f.IDOnly() {
			return f, err
		}
	}
}

func (s *stream) mustNext(t *testing.T) relaytest.Frame {
	t.Helper()
	f, err := s.next()
	if err != nil {
		t.Fatalf("reading stream: %v", err)
	}
	return f
}

// connected reads the opening of a stream: retry:, then roomcast:connected.
func (s *stream) connected(t *testing.T) {
	t.Helper()
	if f := s.mustNext(t); f.Retry == "" || f.Event != "" {
		t.Fatalf("first frame %+v, want a retry: field", f)
	}
	f := s.mustNext(t)
	if f.Event != "roomcast:connected" || f.HasID {
		t.Fatalf("second frame %+v, want roomcast:connected without id", f)
	}
	var d struct {
		Connection, Client string
		Rooms              []string
	}
	if err := json.Unmarshal([]byte(f.Data), &d); err != nil || d.Connection == "" || d.Client == "" || len(d.Rooms) == 0 {
		t.Fatalf("roomcast:connected data %s (%v)", f.Data, err)
	}
}

type published struct{ ID, Room, Event string }

// post publishes like `curl -d body URL`: a form-encoded body becomes the
// event's data as a string.
func post(t *testing.T, url, body string) published {
	t.Helper()
	resp, err := http.Post(url, "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p published
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: %s (%v)", url, resp.Status, err)
	}
	return p
}

type envelope struct {
	ID    *string
	Room  string
	Event string
	Data  json.RawMessage
}

// event reads the next frame and checks it is the message that p answered.
func (s *stream) event(t *testing.T, p published, data string) relaytest.Frame {
	t.Helper()
	f := s.mustNext(t)
	var env envelope
	if err := json.Unmarshal([]byte(f.Data), &env); err != nil {
		t.Fatalf("frame %+v: %v", f, err)
	}
	want, _ := json.Marshal(data)
	if !f.HasID || f.ID == "" || f.Event != p.Event || env.ID == nil || *env.ID != p.ID ||
		env.Room != p.Room || string(env.Data) != string(want) {
		t.Fatalf("frame %+v, want event %s (%s) with data %s", f, p.ID, p.Event, want)
	}
	return f
}

// The README's curl session: subscribe, publish, resume.
func TestCurlSession(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil)
	events := "http://" + addr + "/v1/rooms/lobby/events"

	s := openStream(t, events, nil)
	h := s.resp.Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache, no-transform" || h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("stream headers %v", h)
	}
	s.connected(t)
	hello := post(t, events, "hello")
	if hello.Room != "lobby" || hello.Event != "message" || hello.ID == "" {
		t.Errorf("publish answer %+v", hello)
	}
	cursor := s.event(t, hello, "hello").ID
	s.resp.Body.Close()

	missed := post(t, events, "while you were away")
	s = openStream(t, events, http.Header{"Last-Event-Id": {cursor}})
	s.connected(t)
	cursor = s.event(t, missed, "while you were away").ID
	live := post(t, events+"?event=note", "live")
	s.event(t, live, "live")
	s.resp.Body.Close()

	// The query parameter does what the header does, for clients that
	// cannot set headers.
	s = openStream(t, events+"?lastEventId="+cursor, nil)
	s.connected(t)
	s.event(t, live, "live")
}

// SIGTERM drains: /readyz fails, streams are told to come back later and
// ended, a publish in flight completes, and the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, nil, "-drain-timeout", "3s", "-retry-min", "100ms", "-retry-max", "200ms")
	s := openStream(t, "http://"+addr+"/v1/rooms/lobby/events", nil)
	s.connected(t)

	// A publish whose body is still on its way when the signal comes. The
	// 100 Continue proves that its handler is running.
	body := `{"event":"late","data":"made it"}`
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/rooms/lobby/events HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", addr, len(body))
	tp := textproto.NewReader(bufio.NewReader(conn))
	if line, err := tp.ReadLine(); err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("want 100 Continue, got %q (%v)", line, err)
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		t.Fatal(err)
	}

	p.Signal(t, syscall.SIGTERM)
	signalled := time.Now()
	f := s.mustNext(t)
	var closing struct {
		Reason      string
		Message     string
		ReconnectMS *int `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(f.Data), &closing); err != nil || f.Event != "roomcast:closing" ||
		closing.Reason != "shutdown" || closing.ReconnectMS == nil || *closing.ReconnectMS < 100 || *closing.ReconnectMS > 200 {
		t.Fatalf("frame %+v, want roomcast:closing with reason shutdown and reconnect_ms in [100, 200]", f)
	}
	if f, err := s.next(); err != io.EOF {
		t.Fatalf("after roomcast:closing: %+v, %v; want the stream to end", f, err)
	}

	// Not ready any more: answers 503 while the listener is open, then
	// nothing answers at all.
	if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz while draining: %s", resp.Status)
		}
	}
	if resp, err := http.Get("http://" + addr + "/v1/rooms/lobby/events"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("new stream while draining: %s", resp.Status)
		}
	}

	io.WriteString(conn, body)
	resp, err := http.ReadResponse(tp.R, nil)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(string(answer), `"event":"late"`) {
		t.Errorf("publish in flight: %s %s", resp.Status, answer)
	}

	if code := p.Wait(t, 3*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(signalled); d > 3*time.Second {
		t.Errorf("exited %s after SIGTERM, beyond the 3s drain timeout", d)
	}
	for _, msg := range []string{`"msg":"draining"`, `"msg":"stopped"`} {
		if !strings.Contains(p.Stderr.String(), msg) {
			t.Errorf("log lacks %s", msg)
		}
	}
}

// A publish that never finishes does not hold the process past the drain
// timeout.
func TestShutdownGivesUpAfterDrainTimeout(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, nil, "-drain-timeout", "1s")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/rooms/lobby/events HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n", addr)
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("want 100 Continue, got %q (%v)", line, err)
	}
	p.Signal(t, syscall.SIGTERM)
	signalled := time.Now()
	// The publish would hold the process for the 15 s body timeout: the
	// upper bound is loose (a race-built process on a loaded machine
	// takes seconds to exit), far below that.
	if code := p.Wait(t, 12*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(signalled); d < time.Second || d > 10*time.Second {
		t.Errorf("exited %s after SIGTERM, want about the 1s drain timeout", d)
	}
	if !strings.Contains(p.Stderr.String(), "shutdown incomplete") {
		t.Errorf("log does not say that the shutdown was cut short:\n%s", p.Stderr.String())
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	p := start(t, nil, "version")
	if code := p.Wait(t, waitFor); code != 0 || p.Stdout.String() != "roomcast "+testVersion+"\n" {
		t.Errorf("exit %d, stdout %q", code, p.Stdout.String())
	}
}

// A bad setting stops the relay before it listens, with a message naming
// the flag or variable to fix.
func TestBadConfiguration(t *testing.T) {
	t.Parallel()
	nanRate := filepath.Join(t.TempDir(), "nan.toml")
	if err := os.WriteFile(nanRate, []byte("[namespaces.chat]\npublish_rate = nan\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"env value", []string{"ROOMCAST_HEARTBEAT=banana"}, nil, 2, "ROOMCAST_HEARTBEAT"},
		{"flag value", nil, []string{"-heartbeat", "banana"}, 2, "-heartbeat"},
		{"PORT alias", []string{"PORT=web"}, nil, 2, "PORT"},
		{"retry range", nil, []string{"-retry-min", "5s", "-retry-max", "1s"}, 2, "-retry-max"},
		{"unknown flag", nil, []string{"-bogus"}, 2, "-bogus"},
		{"stray argument", nil, []string{"serve"}, 2, `"serve"`},
		{"help", nil, []string{"-h"}, 0, "roomcast sub [flags] ROOM"},
		{"open mode off loopback", nil, []string{"-addr", "0.0.0.0:0"}, 1, "ROOMCAST_OPEN=true"},
		{"open on purpose without allowed hosts", []string{"ROOMCAST_OPEN=true"}, []string{"-addr", "0.0.0.0:0"}, 1, "ROOMCAST_ALLOWED_HOSTS"},
		{"dev tokens with a key off loopback without allowed hosts", []string{"ROOMCAST_JWT_SECRET=a test HS256 secret of 32 bytes or more", "ROOMCAST_DEV_TOKENS=true"},
			[]string{"-addr", "0.0.0.0:0"}, 1, "ROOMCAST_ALLOWED_HOSTS"},
		{"allowed host with a scheme", []string{"ROOMCAST_ALLOWED_HOSTS=https://relay.example"}, nil, 2, "ROOMCAST_ALLOWED_HOSTS"},
		{"client address header", []string{"ROOMCAST_CLIENT_IP_HEADER=Forwarded"}, nil, 2, "ROOMCAST_CLIENT_IP_HEADER"},
		{"body timeout", []string{"ROOMCAST_READ_BODY_TIMEOUT=1ms"}, nil, 2, "ROOMCAST_READ_BODY_TIMEOUT"},
		{"short JWT secret", []string{"ROOMCAST_JWT_SECRET=short"}, nil, 2, "ROOMCAST_JWT_SECRET must be"},
		// NaN once passed "above 0" and turned rate limiting off.
		{"NaN publish rate", []string{"ROOMCAST_PUBLISH_RATE=NaN"}, nil, 2, "ROOMCAST_PUBLISH_RATE"},
		{"infinite publish rate flag", nil, []string{"-publish-rate", "Inf"}, 2, "-publish-rate"},
		{"NaN caller rate", []string{"ROOMCAST_PUBLISH_CALLER_RATE=nan"}, nil, 2, "ROOMCAST_PUBLISH_CALLER_RATE"},
		{"NaN publish_rate in the namespace file", []string{"ROOMCAST_CONFIG=" + nanRate}, nil, 1, "publish_rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, tt.env, tt.args...)
			code := p.Wait(t, waitFor)
			if code != tt.code || !strings.Contains(p.Stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, p.Stderr.String(), tt.code, tt.want)
			}
			if strings.Contains(p.Stderr.String(), "roomcast listening") {
				t.Error("it listened anyway")
			}
		})
	}
}

// PORT, the platforms' name, makes the relay listen on that port.
func TestPortAlias(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(relaytest.FreePort(t))

	// PORT means every interface, which open mode allows only when told.
	p, addr := startRelay(t, []string{"PORT=" + port, "ROOMCAST_OPEN=true", "ROOMCAST_ALLOWED_HOSTS=127.0.0.1"})
	if _, got, _ := net.SplitHostPort(addr); got != port {
		t.Fatalf("listening on %s, want port %s", addr, port)
	}
	resp, err := http.Get("http://127.0.0.1:" + port + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s", resp.Status)
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, waitFor); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// `roomcast sub` prints what is published, reports a relay restart and
// carries on with the new relay on the same address.
func TestSubAgainstRelay(t *testing.T) {
	t.Parallel()
	relay, addr := startRelay(t, nil, "-retry-min", "100ms", "-retry-max", "200ms")
	base := "http://" + addr
	sub := start(t, []string{"ROOMCAST_URL=" + base}, "sub", "-format", "text", "lobby")
	sub.Stderr.AwaitCount(t, "roomcast:connected", 1)

	post(t, base+"/v1/rooms/lobby/events", "hi")
	post(t, base+"/v1/rooms/lobby/events?event=note", "there")
	sub.Stdout.AwaitMatch(t, regexp.MustCompile(`^message lobby -: hi\nnote lobby -: there\n$`))

	// The relay restarts on the same address. Its history went with the
	// old process, so sub is told of the gap, then gets live events.
	relay.Signal(t, syscall.SIGTERM)
	if code := relay.Wait(t, waitFor); code != 0 {
		t.Fatalf("relay exit code %d", code)
	}
	sub.Stderr.AwaitCount(t, `roomcast:closing {"reason":"shutdown"`, 1)
	startRelay(t, nil, "-addr", addr)
	sub.Stderr.AwaitCount(t, "roomcast:connected", 2)
	post(t, base+"/v1/rooms/lobby/events", "again")
	sub.Stdout.AwaitMatch(t, regexp.MustCompile(`^message lobby -: hi\nnote lobby -: there\nmessage lobby -: again\n$`))
	// The reset comes before "again" on the stream, but sub reports it on
	// stderr, read apart from stdout: wait for it there.
	sub.Stderr.AwaitCount(t, "roomcast:reset", 1)

	sub.Signal(t, syscall.SIGINT)
	if code := sub.Wait(t, waitFor); code != 0 {
		t.Errorf("sub exit code %d after SIGINT", code)
	}
	if !strings.Contains(sub.Stderr.String(), "resume with -last-event-id=") {
		t.Errorf("sub did not say where to resume:\n%s", sub.Stderr.String())
	}
}
