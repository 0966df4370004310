package relaytest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// RawStream reads a stream's bytes as the relay frames them: each frame is
// the text up to and including a blank line, for exact-bytes assertions.
type RawStream struct {
	Header http.Header

	cancel context.CancelFunc
	done   chan struct{}
	notify chan struct{}

	mu     sync.Mutex
	frames []string
	read   int
	ended  bool
	err    error
}

// OpenRaw opens path and requires a 200 answer.
func (r *Relay) OpenRaw(t testing.TB, path string, header http.Header) *RawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := r.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	s := &RawStream{Header: resp.Header, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		var buf []byte
		chunk := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(chunk)
			buf = append(buf, chunk[:n]...)
			var frames []string
			frames, buf = splitFrames(buf)
			s.mu.Lock()
			s.frames = append(s.frames, frames...)
			if err != nil {
				s.ended, s.err = true, err
				if len(buf) > 0 {
					s.frames = append(s.frames, string(buf))
				}
			}
			s.mu.Unlock()
			s.signal()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *RawStream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Close disconnects the stream and waits for its reader.
func (s *RawStream) Close() {
	s.cancel()
	<-s.done
}

// Frame returns the next frame, failing the test if none comes within
// Wait or the stream ended.
func (s *RawStream) Frame(t testing.TB) string {
	t.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.read < len(s.frames) {
			f := s.frames[s.read]
			s.read++
			s.mu.Unlock()
			return f
		}
		ended, err := s.ended, s.err
		s.mu.Unlock()
		if ended {
			t.Fatalf("stream ended (%v) while a frame was expected", err)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			t.Fatalf("no frame within %s", Wait)
		}
	}
}

// EventFrame returns the next frame that dispatches an event, skipping
// comments such as heartbeats, and the event as Parse sees it.
func (s *RawStream) EventFrame(t testing.TB) (string, Dispatched) {
	t.Helper()
	for {
		f := s.Frame(t)
		p := Parse([]byte(f))
		switch len(p.Events) {
		case 0:
			continue
		case 1:
			return f, p.Events[0]
		}
		t.Fatalf("frame %q dispatches %d events", f, len(p.Events))
	}
}

// WaitEnded waits for the end of the response and returns the error that
// ended it (io.EOF for a clean end).
func (s *RawStream) WaitEnded(t testing.TB) error {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(Wait):
		t.Fatalf("stream did not end within %s", Wait)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// OpenStalled opens a stream over a raw TCP connection with a tiny receive
// buffer, reads up to roomcast:connected and then never reads again. It
// returns the connection, closed when the test ends, and the stream's
// connection id.
func (r *Relay) OpenStalled(t testing.TB, path string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.HTTP.Listener.Addr().String(), Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(Wait))
	br := bufio.NewReaderSize(c, 512)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stalled stream's opening: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var hello Connected
			if err := json.Unmarshal([]byte(data), &hello); err != nil || hello.Connection == "" {
				t.Fatalf("connected data %q: %v", data, err)
			}
			return c, hello.Connection
		}
	}
}
