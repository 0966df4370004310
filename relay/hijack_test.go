package relay_test

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// openRaw opens a stream over a bare TCP connection and reads up to the
// roomcast:connected event.
func openRaw(t *testing.T, r *relaytest.Relay, path string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if line == "event: roomcast:connected\n" {
			return c.(*net.TCPConn), br
		}
	}
}

// A hijacked stream whose client resets the connection is cleaned up
// without waiting for a write to fail: the socket is watched for hang-ups.
func TestHijackedDrop(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: time.Hour}})
	c, _ := openRaw(t, r, "/v1/rooms/lobby/events")
	if got := r.Hub.Connections(); got != 1 {
		t.Fatalf("%d connections, want 1", got)
	}
	_ = c.SetLinger(0)
	c.Close()
	relaytest.Eventually(t, "the dropped stream is gone", func() bool { return r.Hub.Connections() == 0 })
}

// An idle hijacked stream gets heartbeats, and events reach it.
func TestHijackedHeartbeatAndEvents(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: 50 * time.Millisecond}})
	_, br := openRaw(t, r, "/v1/rooms/lobby/events")
	pings := 0
	for pings < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": ping\n" {
			pings++
		}
	}
	id := r.PublishJSON(t, "lobby", map[string]any{"data": "hello"})
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"id":"`+id+`"`) {
			return
		}
	}
}

// With write coalescing a busy stream's events share writes; every one
// still arrives, once and in order, on every stream.
func TestHijackedCoalescedWrites(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: time.Hour, WriteCoalesce: 20 * time.Millisecond}})
	var readers []*bufio.Reader
	for range 5 {
		_, br := openRaw(t, r, "/v1/rooms/busy/events")
		readers = append(readers, br)
	}
	var ids []string
	for range 200 {
		ids = append(ids, r.PublishJSON(t, "busy", map[string]any{"data": 1}))
	}
	for i, br := range readers {
		var got []string
		for len(got) < len(ids) {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d after %d events: %v", i, len(got), err)
			}
			if rest, ok := strings.CutPrefix(line, `data: {"id":"`); ok {
				got = append(got, rest[:strings.IndexByte(rest, '"')])
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("stream %d got %v, want %v", i, got, ids)
		}
	}
}
