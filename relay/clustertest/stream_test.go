package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// frame is one SSE frame as a client's parser sees it, stamped with the
// time it was read.
type frame struct {
	relaytest.Frame
	At time.Time
}

// envelope is the parts of an event's envelope the tests look at.
type envelope struct {
	ID    *string         `json:"id"`
	Room  string          `json:"room"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// env decodes the frame's data as an envelope.
func (f frame) env(t testing.TB) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal([]byte(f.Data), &e); err != nil {
		t.Fatalf("frame %q: data is not an envelope (%v): %s", f.Event, err, f.Data)
	}
	return e
}

// eventID returns the envelope id of an application event ("" for system
// events and volatile ones).
func (f frame) eventID() string {
	if strings.HasPrefix(f.Event, "roomcast:") {
		return ""
	}
	var e envelope
	if json.Unmarshal([]byte(f.Data), &e) != nil || e.ID == nil {
		return ""
	}
	return *e.ID
}

// text returns the envelope's data as the string it was published as.
func (f frame) text(t testing.TB) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(f.env(t).Data, &s); err != nil {
		t.Fatalf("frame %q: data %s is not a string", f.Event, f.env(t).Data)
	}
	return s
}

// system is the data of roomcast:connected, reset, joined, left.
type system struct {
	Connection string   `json:"connection"`
	Client     string   `json:"client"`
	Proof      string   `json:"proof"`
	Rooms      []string `json:"rooms"`
	Reason     string   `json:"reason"`
	Room       string   `json:"room"`
	User       string   `json:"user"`
}

func (f frame) system(t testing.TB) system {
	t.Helper()
	var s system
	if err := json.Unmarshal([]byte(f.Data), &s); err != nil {
		t.Fatalf("%s data %q: %v", f.Event, f.Data, err)
	}
	return s
}

// stream is one SSE response, read by its own goroutine into an unbounded
// list of frames so that the server never waits on the test.
type stream struct {
	node *node
	conn system // data of roomcast:connected, once read by open

	cancel context.CancelFunc
	done   chan struct{}
	notify chan struct{}

	mu     sync.Mutex
	frames []frame
	read   int
	pings  int
	err    error // why the response ended; set when done closes
}

// streamClient carries streams; each stream gets its own connection.
var streamClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// open opens path on n, requires a 200, and reads up to roomcast:connected.
func open(t testing.TB, n *node, path string, header http.Header) *stream {
	t.Helper()
	s, status, body := tryOpen(n, path, header)
	if s == nil {
		t.Fatalf("GET %s on %s: %d %s", path, n.name, status, body)
	}
	s.handshake(t)
	return s
}

// handshake registers the stream's cleanup and reads the opening of the
// stream: retry:, then roomcast:connected.
func (s *stream) handshake(t testing.TB) {
	t.Helper()
	t.Cleanup(s.close)
	f := s.next(t)
	if f.Retry == "" {
		t.Fatalf("first frame on %s: %+v, want retry:", s.node.name, f)
	}
	f = s.next(t)
	if f.Event != "roomcast:connected" || f.HasID {
		t.Fatalf("second frame on %s: %+v, want roomcast:connected without id", s.node.name, f)
	}
	s.conn = f.system(t)
}

// reopen is what a client does after losing its stream: it opens path on n
// again, retrying while the answer is a 503 (an instance shedding a
// reconnect storm), until waitFor has passed. It may run on any goroutine.
func reopen(n *node, path string, header http.Header) (*stream, error) {
	deadline := time.Now().Add(waitFor)
	for {
		s, status, body := tryOpen(n, path, header)
		if s != nil {
			return s, nil
		}
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return nil, fmt.Errorf("GET %s on %s: %d %s", path, n.name, status, body)
		}
		// Backing off is what the client is for; nothing to wait on.
		time.Sleep(100 * time.Millisecond)
	}
}

// tryOpen opens a stream and returns nil with the answer when it is not a
// 200 (status 0 when the request failed). The caller closes the stream.
func tryOpen(n *node, path string, header http.Header) (*stream, int, string) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url+path, nil)
	if err != nil {
		cancel()
		return nil, 0, err.Error()
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		cancel()
		return nil, 0, err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, string(b)
	}
	s := &stream{node: n, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go s.readAll(resp)
	return s, resp.StatusCode, ""
}

func (s *stream) readAll(resp *http.Response) {
	defer close(s.done)
	defer resp.Body.Close()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	ping := func(comment string) {
		if strings.TrimSpace(comment) == "ping" {
			s.mu.Lock()
			s.pings++
			s.mu.Unlock()
			s.signal()
		}
	}
	for {
		f, err := relaytest.ReadFrame(r, ping)
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			s.signal()
			return
		}
		s.mu.Lock()
		s.frames = append(s.frames, frame{Frame: f, At: time.Now()})
		s.mu.Unlock()
		s.signal()
	}
}

func (s *stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// close disconnects the stream and waits for its reader.
func (s *stream) close() {
	s.cancel()
	<-s.done
}

// ended reports whether the response ended.
func (s *stream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// waitEnded waits until the server or the network ended the response.
func (s *stream) waitEnded(t testing.TB) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitFor):
		t.Fatalf("stream on %s did not end within %s", s.node.name, waitFor)
	}
}

// next returns the next frame, failing the test if none comes within
// waitFor or the stream ended first.
func (s *stream) next(t testing.TB) frame {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.read < len(s.frames) {
			f := s.frames[s.read]
			s.read++
			s.mu.Unlock()
			if f.IDOnly() {
				continue // it moves the cursor, nothing else
			}
			return f
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("stream on %s ended (%v) while a frame was expected", s.node.name, err)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			t.Fatalf("no frame on %s within %s", s.node.name, waitFor)
		}
	}
}

// expect returns the next frame and fails unless it is event name.
func (s *stream) expect(t testing.TB, name string) frame {
	t.Helper()
	f := s.next(t)
	if f.Event != name {
		t.Fatalf("stream on %s: got %q (%s), want %q", s.node.name, f.Event, f.Data, name)
	}
	return f
}

// expectEvent returns the next frame and fails unless it is the
// application event with envelope id id.
func (s *stream) expectEvent(t testing.TB, id string) frame {
	t.Helper()
	f := s.next(t)
	if got := f.eventID(); got != id || !f.HasID {
		t.Fatalf("stream on %s: got %q %s, want event %s with an id line", s.node.name, f.Event, f.Data, id)
	}
	return f
}

// waitPings waits until the stream has had at least n heartbeats.
func (s *stream) waitPings(t testing.TB, n int) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		s.mu.Lock()
		got, err := s.pings, s.err
		s.mu.Unlock()
		if got >= n {
			return
		}
		if err != nil {
			t.Fatalf("stream on %s ended (%v) while waiting for heartbeats", s.node.name, err)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			t.Fatalf("stream on %s: %d heartbeats within %s, want %d", s.node.name, got, waitFor, n)
		}
	}
}

// pingCount returns how many heartbeats the stream has had.
func (s *stream) pingCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pings
}

// snapshot returns every frame read so far, and whether the response ended.
func (s *stream) snapshot() ([]frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]frame(nil), s.frames...), s.err != nil
}

// lastID returns the id of the last frame that had one: where an
// EventSource would resume.
func (s *stream) lastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.frames) - 1; i >= 0; i-- {
		if s.frames[i].HasID {
			return s.frames[i].ID
		}
	}
	return ""
}
