package relay_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/relaytest"
)

// BenchmarkPollHandler measures the relay's own work for one poll that
// finds an event waiting (the handler chain, identity, the hub, the
// answer), without sockets: allocations here are what a poll costs the
// garbage collector besides net/http's own.
func BenchmarkPollHandler(b *testing.B) {
	r := relaytest.Start(b, relaytest.Options{})
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		r.Server.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
		}
		return w
	}
	var first struct{ Cursor string }
	if err := json.Unmarshal(get("/v1/rooms/bench/poll?timeout=0").Body.Bytes(), &first); err != nil {
		b.Fatal(err)
	}
	resp, err := r.Client().Post(r.URL+"/v1/rooms/bench/events", "application/json",
		strings.NewReader(`{"event":"bench","data":{"n":1}}`))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b.Fatalf("publish: %s", resp.Status)
	}
	path := "/v1/rooms/bench/poll?client=bench-client-1&timeout=25&cursor=" + url.QueryEscape(first.Cursor)
	if !strings.Contains(get(path).Body.String(), `"n":1`) {
		b.Fatal("the poll did not return the event")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		get(path)
	}
}
