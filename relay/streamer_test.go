package relay_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"bufio"
	"context"
	"net"
	"net/http"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// Every timer of the hijacked streams' writer is stopped (or has fired)
// once the streams end, whoever ends them: each stream owns one, and an
// idle stream with an hour to its next heartbeat still holds it armed,
// so a stream that forgot to stop its timer would show here.
func TestStreamerTimersEndWithStreams(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: time.Hour, WriteCoalesce: 5 * time.Millisecond}})
	type stream struct {
		id   string
		read func() string
		hang func()
	}
	var streams []stream
	for range 4 {
		c, br := openRaw(t, r, "/v1/rooms/timers/events")
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var hello struct{ Connection string }
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &hello); err != nil || hello.Connection == "" {
			t.Fatalf("roomcast:connected data %q: %v", line, err)
		}
		streams = append(streams, stream{id: hello.Connection, read: func() string {
			s, _ := br.ReadString('\n')
			return s
		}, hang: func() { _ = c.SetLinger(0); c.Close() }})
	}
	relaytest.Eventually(t, "a timer armed per stream", func() bool { return relay.StreamerTimers(r.Server) >= 4 })

	// Busy streams: their writes arm the coalescing flush too.
	var ids []string
	for range 20 {
		ids = append(ids, r.PublishJSON(t, "timers", map[string]any{"data": 1}))
	}
	for i, s := range streams {
		for {
			line := s.read()
			if line == "" {
				t.Fatalf("stream %d ended before the last event", i)
			}
			if strings.Contains(line, `"id":"`+ids[len(ids)-1]+`"`) {
				break
			}
		}
	}

	// Two hang up, two are ended by the server.
	streams[0].hang()
	streams[1].hang()
	for _, s := range streams[2:] {
		conn, err := r.Hub.Lookup(s.id)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close(rooms.CloseReason{Code: rooms.CloseShutdown, Message: "test"})
	}
	for i, s := range streams[2:] {
		for {
			line := s.read()
			if line == "" {
				t.Fatalf("stream %d ended without roomcast:closing", i+2)
			}
			if line == "event: roomcast:closing\n" {
				break
			}
		}
	}
	relaytest.Eventually(t, "the streams to end", func() bool { return r.Hub.Connections() == 0 })
	relaytest.Eventually(t, "no timer left armed", func() bool { return relay.StreamerTimers(r.Server) == 0 })
}

// TestStalledConsumer checks that a client that stops reading costs the
// others nothing: the publisher is never held up, a healthy subscriber in
// the same room gets every event, and the stalled connection is dropped.
func TestStalledConsumer(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{
		Relay: relay.Options{WriteTimeout: 200 * time.Millisecond},
		Hub:   rooms.HubOptions{QueueSize: 32},
	})
	healthy := r.Subscribe(t, "/v1/rooms/stall/events", relaytest.StreamOptions{})
	healthy.Connected(t)
	_, stalledID := r.OpenStalled(t, "/v1/rooms/stall/events")
	stalled, err := r.Hub.Lookup(stalledID)
	if err != nil {
		t.Fatal(err)
	}

	// Large events fill the kernel's buffers quickly; the publisher goes on
	// until the hub has given up on the stalled connection.
	body := []byte(`{"data":"` + strings.Repeat("x", 32<<10) + `"}`)
	const most = 5000
	deadline := time.Now().Add(30 * time.Second)
	var ids []string
	for gaveUp := false; !gaveUp; {
		if len(ids) == most || time.Now().After(deadline) {
			t.Fatalf("after %d events the stalled connection is still served", len(ids))
		}
		ids = append(ids, *r.Publish(t, "/v1/rooms/stall/events", "application/json", body, nil).ID)
		select {
		case <-stalled.Done():
			gaveUp = true
		default:
			_, err := r.Hub.Lookup(stalledID)
			gaveUp = err != nil
		}
	}
	// A few more, published while the stalled connection is on its way out.
	for range 10 {
		ids = append(ids, *r.Publish(t, "/v1/rooms/stall/events", "application/json", body, nil).ID)
	}
	t.Logf("published %d events of %d KiB", len(ids), len(body)>>10)

	relaytest.Eventually(t, "the stalled connection is removed", func() bool {
		_, err := r.Hub.Lookup(stalledID)
		return err != nil && r.Hub.Connections() == 1
	})
	for i, id := range ids {
		ev := healthy.NextEvent(t)
		if ev.Event != "message" || ev.EventID(t) != id {
			t.Fatalf("healthy subscriber, event %d: %q (%.100s), want %s", i, ev.Event, ev.Data, id)
		}
	}
	if reason := stalled.Reason(); reason.Code != "" && reason.Code != rooms.CloseSlowConsumer {
		t.Errorf("stalled connection closed for %+v", reason)
	}
}

// TestDisconnectCleansUp checks that every kind of client that goes away
// leaves nothing in the hub; TestMain checks that no goroutine stays.
func TestDisconnectCleansUp(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	var streams []*relaytest.Stream
	for _, path := range []string{"/v1/rooms/a/events", "/v1/rooms/a/events", "/v1/rooms/b/events?padding=64", "/v1/stream?room=a&room=b", "/v1/stream"} {
		s := r.Subscribe(t, path, relaytest.StreamOptions{})
		s.Connected(t)
		streams = append(streams, s)
	}
	raw := r.OpenRaw(t, "/v1/rooms/c/events", nil)
	raw.Frame(t)
	raw.EventFrame(t)
	tcp, _ := r.OpenStalled(t, "/v1/rooms/c/events")
	if n := r.Hub.Connections(); n != 7 {
		t.Fatalf("%d connections, want 7", n)
	}
	// A held poll whose client gives up.
	tail := poll(t, r, "/v1/rooms/a/poll")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v1/rooms/a/poll?timeout=30&cursor="+tail.Cursor, nil)
	if resp, err := r.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("the held poll answered %d before its timeout", resp.StatusCode)
	}

	for _, s := range streams {
		s.Close()
	}
	raw.Close()
	tcp.Close()
	relaytest.Eventually(t, "every connection is gone", func() bool { return r.Hub.Connections() == 0 })
	// The rooms still work.
	s := r.Subscribe(t, "/v1/rooms/a/events", relaytest.StreamOptions{})
	s.Connected(t)
	expectIDs(t, s, []string{r.PublishJSON(t, "a", map[string]any{})})
}

// TestPausedConsumerResumes: a client that stops reading long enough for
// the relay's side of the socket to fill, and then reads again, gets every
// event, in order, on the same stream: the relay waits for room in the
// socket instead of dropping or reordering what did not fit.
func TestPausedConsumerResumes(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Hub: rooms.HubOptions{QueueSize: 1024}})
	c, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A small receive window, so that the relay's writes back up soon.
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET /v1/rooms/paused/events HTTP/1.1\r\nHost: relay\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	frames := bufio.NewReader(resp.Body)
	for {
		f, err := relaytest.ReadFrame(frames, nil)
		if err != nil {
			t.Fatal(err)
		}
		if f.Event == "roomcast:connected" {
			break
		}
	}
	// 4 MiB while the client reads nothing: far more than the socket's
	// buffers hold.
	body := []byte(`{"data":"` + strings.Repeat("y", 16<<10) + `"}`)
	var ids []string
	for range 256 {
		ids = append(ids, *r.Publish(t, "/v1/rooms/paused/events", "application/json", body, nil).ID)
	}
	for i, id := range ids {
		var f relaytest.Frame
		for f.Event == "" {
			if f, err = relaytest.ReadFrame(frames, nil); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
		}
		if f.Event != "message" || !strings.Contains(f.Data, id) {
			t.Fatalf("event %d: %q id %q (%.80s), want %s", i, f.Event, f.ID, f.Data, id)
		}
	}
}
