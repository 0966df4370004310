package relay_test

import (
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

const (
	testLifetime      = time.Second
	lifetimeRetryMin  = 100 * time.Millisecond
	lifetimeRetryMax  = 300 * time.Millisecond
	lifetimeCloseSlop = 2 * time.Second // scheduling under -race
)

// startLifetime runs a relay whose streams live testLifetime.
func startLifetime(t *testing.T, compress string) *relaytest.Relay {
	return relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		MaxStreamLifetime: testLifetime,
		RetryMin:          lifetimeRetryMin,
		RetryMax:          lifetimeRetryMax,
		Compress:          compress,
	}})
}

// checkLifetimeClosing requires roomcast:closing with reason max_lifetime,
// a message and a reconnect delay within the retry range.
func checkLifetimeClosing(t *testing.T, ev relaytest.Event) {
	t.Helper()
	var d struct {
		Reason      string `json:"reason"`
		Message     string `json:"message"`
		ReconnectMS *int64 `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("closing data %q: %v", ev.Data, err)
	}
	if ev.Event != "roomcast:closing" || d.Reason != rooms.CloseMaxLifetime || d.Message == "" || d.ReconnectMS == nil ||
		time.Duration(*d.ReconnectMS)*time.Millisecond < lifetimeRetryMin || time.Duration(*d.ReconnectMS)*time.Millisecond > lifetimeRetryMax {
		t.Fatalf("event %q %s, want roomcast:closing reason max_lifetime with reconnect_ms in [%d, %d]",
			ev.Event, ev.Data, lifetimeRetryMin.Milliseconds(), lifetimeRetryMax.Milliseconds())
	}
}

// TestMaxStreamLifetime: a stream is told roomcast:closing, reason
// max_lifetime, after about MaxStreamLifetime (less a jitter of up to a
// tenth) and then ends; without the option streams stay.
func TestMaxStreamLifetime(t *testing.T) {
	r := startLifetime(t, "")
	raw := r.OpenRaw(t, "/v1/rooms/life/events", nil)
	raw.Frame(t)
	if _, hello := raw.EventFrame(t); hello.Type != "roomcast:connected" {
		t.Fatalf("first event %+v", hello)
	}
	opened := time.Now()
	frame, closing := raw.EventFrame(t)
	lived := time.Since(opened)
	if closing.HasID {
		t.Errorf("roomcast:closing carries an id: %q", frame)
	}
	checkLifetimeClosing(t, relaytest.Event{Event: closing.Type, Data: closing.Data})
	if lived < testLifetime*9/10-50*time.Millisecond || lived > testLifetime+lifetimeCloseSlop {
		t.Errorf("the stream lived %s, want about %s", lived, testLifetime)
	}
	if err := raw.WaitEnded(t); err != io.EOF {
		t.Errorf("after roomcast:closing the stream ended with %v, want a clean end", err)
	}
	relaytest.Eventually(t, "the connection is gone", func() bool { return r.Hub.Connections() == 0 })

	// Without a lifetime the stream outlives it.
	forever := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: 300 * time.Millisecond}})
	s := forever.OpenRaw(t, "/v1/rooms/life/events", nil)
	s.Frame(t)
	s.EventFrame(t)
	s.Frame(t) // the id-only frame that sets the first cursor
	deadline := time.Now().Add(testLifetime + 500*time.Millisecond)
	for time.Now().Before(deadline) {
		if f := s.Frame(t); f != ": ping\n\n" {
			t.Fatalf("frame %q on a stream without a lifetime, want only heartbeats", f)
		}
	}
}

// TestMaxStreamLifetimeResume: a client that resumes with its last id, as
// EventSource does, loses and repeats nothing published around the cut,
// for single- and multi-room streams, compressed or not.
func TestMaxStreamLifetimeResume(t *testing.T) {
	plain := startLifetime(t, "")
	zipped := startLifetime(t, relay.CompressAll) // Go's client accepts gzip
	cases := []struct {
		name  string
		relay *relaytest.Relay
		path  string
		rooms []string
	}{
		{"single room", plain, "/v1/rooms/cut/events", []string{"cut"}},
		{"multi room", plain, "/v1/stream?room=cut-a&room=cut-b", []string{"cut-a", "cut-b"}},
		{"gzip", zipped, "/v1/rooms/cut/events", []string{"cut"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.relay
			s := r.Subscribe(t, tc.path, relaytest.StreamOptions{Reconnect: true})
			s.Connected(t)
			// Publish steadily until the client has been cut and has come
			// back twice, so that events go out before, during and after
			// each cut, and then some more: the last ones come after the
			// last roomcast:closing.
			var ids []string
			publish := func() {
				room := tc.rooms[len(ids)%len(tc.rooms)]
				ids = append(ids, r.PublishJSON(t, room, map[string]any{"data": len(ids)}))
				time.Sleep(5 * time.Millisecond)
			}
			deadline := time.Now().Add(3*testLifetime + 2*lifetimeCloseSlop)
			for s.Connects() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("the stream reconnected %d times in %s", s.Connects()-1, 3*testLifetime+2*lifetimeCloseSlop)
				}
				publish()
			}
			for range 10 {
				publish()
			}

			var got []string
			closings := 0
			for len(got) < len(ids) {
				ev := s.NextEvent(t)
				switch ev.Event {
				case "roomcast:closing":
					checkLifetimeClosing(t, ev)
					closings++
				case "roomcast:connected":
				case "message":
					got = append(got, ev.EventID(t))
				default:
					t.Fatalf("unexpected %q %s", ev.Event, ev.Data)
				}
			}
			if !slices.Equal(got, ids) {
				t.Fatalf("across %d cuts the client got\n%v\nwant\n%v", closings, got, ids)
			}
			if closings < 2 {
				t.Errorf("%d roomcast:closing before the third connection's events", closings)
			}
		})
	}
}
