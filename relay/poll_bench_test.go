package relay_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// BenchmarkPollHandler measures the relay's own work for one long-poll
// that finds an event waiting (the handler chain, identity, the hub, the
// answer), without sockets: each iteration publishes one event on the hub
// and polls from the previous answer's cursor, as a poller in a busy room
// does. Allocations here are what a poll costs the garbage collector
// besides net/http's own.
func BenchmarkPollHandler(b *testing.B) {
	r := relaytest.Start(b, relaytest.Options{})
	get := func(path string) []byte {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		r.Server.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
		}
		return w.Body.Bytes()
	}
	var ans struct{ Cursor, Connection string }
	if err := json.Unmarshal(get("/v1/rooms/bench/poll?timeout=0&client=bench-client-1"), &ans); err != nil {
		b.Fatal(err)
	}
	publish := func() {
		if _, err := r.Backbone.Publish(context.Background(), rooms.Message{Channels: []string{"bench"}, Event: "bench",
			Data: json.RawMessage(`{"n":1}`)}, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		publish()
		b.StartTimer()
		body := get("/v1/rooms/bench/poll?client=bench-client-1&proof=" + url.QueryEscape(ans.Connection) +
			"&timeout=25&cursor=" + url.QueryEscape(ans.Cursor))
		if err := json.Unmarshal(body, &ans); err != nil || !strings.Contains(string(body), `"n":1`) {
			b.Fatalf("poll answered %s (%v)", body, err)
		}
	}
}
