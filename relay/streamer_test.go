package relay_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
