package relay_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// checkClosing asserts the data of roomcast:closing on shutdown.
func checkClosing(t *testing.T, data string) {
	t.Helper()
	if got, want := objectKeys(t, []byte(data)), sorted("reason", "message", "reconnect_ms"); !slices.Equal(got, want) {
		t.Errorf("closing keys %v, want %v", got, want)
	}
	var d struct {
		Reason      string `json:"reason"`
		Message     string `json:"message"`
		ReconnectMS int64  `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		t.Fatal(err)
	}
	delay := time.Duration(d.ReconnectMS) * time.Millisecond
	if d.Reason != "shutdown" || d.Message == "" || delay < retryMin || delay > retryMax {
		t.Errorf("closing %s, want reason shutdown and reconnect_ms in [%d, %d]", data, retryMin.Milliseconds(), retryMax.Milliseconds())
	}
}

// TestDrain checks a graceful shutdown: every stream is told to reconnect
// after a delay within the retry range and closed, new streams are refused,
// and readiness fails while liveness holds.
func TestDrain(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{RetryMin: retryMin, RetryMax: retryMax}})
	var streams []*relaytest.Stream
	for _, path := range []string{"/v1/rooms/d/events", "/v1/rooms/d/events", "/v1/stream?room=d&room=e", "/v1/stream"} {
		s := r.Subscribe(t, path, relaytest.StreamOptions{})
		s.Connected(t)
		streams = append(streams, s)
	}
	raw := r.OpenRaw(t, "/v1/rooms/e/events", nil)
	raw.Frame(t)
	raw.EventFrame(t)
	if resp := r.Get(t, "/readyz"); resp.Status != http.StatusOK {
		t.Fatalf("/readyz before the drain: %d %s", resp.Status, resp.Body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		r.Server.Drain(ctx)
	}()

	for i, s := range streams {
		ev := s.NextEvent(t)
		if ev.Event != "roomcast:closing" {
			t.Fatalf("stream %d got %q %s, want roomcast:closing", i, ev.Event, ev.Data)
		}
		checkClosing(t, ev.Data)
		s.WaitEnded(t)
	}
	frame, ev := raw.EventFrame(t)
	if !strings.HasPrefix(frame, "event: roomcast:closing\ndata: ") || ev.HasID {
		t.Errorf("closing frame %q, want no id line", frame)
	}
	checkClosing(t, ev.Data)
	if err := raw.WaitEnded(t); err != io.EOF {
		t.Errorf("the stream ended with %v, want a clean end", err)
	}
	select {
	case <-drained:
	case <-time.After(relaytest.Wait):
		t.Fatal("Drain did not return")
	}
	if ctx.Err() != nil {
		t.Error("Drain returned only at its deadline")
	}
	if n := r.Hub.Connections(); n != 0 {
		t.Errorf("%d connections after the drain", n)
	}

	for _, path := range []string{"/v1/rooms/d/events", "/v1/stream?room=d"} {
		resp := r.Get(t, path)
		checkError(t, resp, http.StatusServiceUnavailable, "draining")
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s: 503 without Retry-After", path)
		}
	}
	// A poll is not held while draining: it answers at once although
	// its timeout is longer than the client's patience.
	tail := poll(t, r, "/v1/rooms/d/poll")
	if a := poll(t, r, "/v1/rooms/d/poll?timeout=55&cursor="+tail.Cursor); len(a.Events) != 0 {
		t.Errorf("poll while draining: %s", a.Events)
	}

	ready := r.Get(t, "/readyz")
	var body map[string]any
	ready.JSON(t, &body)
	if ready.Status != http.StatusServiceUnavailable || body["status"] != "draining" {
		t.Errorf("/readyz while draining: %d %s", ready.Status, ready.Body)
	}
	if resp := r.Get(t, "/healthz"); resp.Status != http.StatusOK {
		t.Errorf("/healthz while draining: %d %s", resp.Status, resp.Body)
	}
}
