package relay_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// TestCORS: a preflight from an allowed origin is answered with the
// methods and headers the API uses; credentials go to origins listed by
// name only, never with "*"; other origins get no CORS headers at all.
func TestCORS(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	preflight := func(r *relaytest.Relay, origin string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodOptions, Path: "/v1/rooms/room1/events", Header: header(nil,
			"Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type")})
	}
	named := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{app} })
	anyOrigin := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{"*"} })
	both := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{"*", app} })
	none := startSecured(t, nil)
	cases := []struct {
		name        string
		r           *relaytest.Relay
		origin      string
		allowOrigin string // "" for no CORS headers at all
		credentials bool
	}{
		{"listed origin", named, app, app, true},
		{"unlisted origin", named, "https://evil.example", "", false},
		{"lookalike origin", named, app + ".evil.example", "", false},
		{"any origin", anyOrigin, "https://evil.example", "*", false},
		{"listed beside any", both, app, app, true},
		{"unlisted beside any", both, "https://other.example", "*", false},
		{"default: same origin only", none, app, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pre := preflight(tc.r, tc.origin)
			get := tc.r.Do(t, relaytest.Request{Path: "/v1/rooms/public:lobby/history", Header: header(nil, "Origin", tc.origin)})
			for _, resp := range []*relaytest.Response{pre, get} {
				h := resp.Header
				if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
					t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
				}
				if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != tc.credentials {
					t.Errorf("credentials allowed: %v, want %v", got, tc.credentials)
				}
				if h.Get("Access-Control-Allow-Origin") == "*" && h.Get("Access-Control-Allow-Credentials") != "" {
					t.Error(`"*" with credentials`)
				}
				if tc.allowOrigin != "" && !strings.Contains(h.Get("Vary"), "Origin") {
					t.Errorf("Vary %q lacks Origin", h.Get("Vary"))
				}
			}
			if get.Status != http.StatusOK {
				t.Errorf("GET history: status %d: %s", get.Status, get.Body)
			}
			if tc.allowOrigin == "" {
				if pre.Header.Get("Access-Control-Allow-Methods") != "" || pre.Status == http.StatusNoContent {
					t.Errorf("preflight from a refused origin answered %d with methods %q", pre.Status, pre.Header.Get("Access-Control-Allow-Methods"))
				}
				return
			}
			if pre.Status != http.StatusNoContent {
				t.Errorf("preflight: status %d, want 204", pre.Status)
			}
			methods, headers := pre.Header.Get("Access-Control-Allow-Methods"), strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers"))
			for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
				if !strings.Contains(methods, m) {
					t.Errorf("Allow-Methods %q lacks %s", methods, m)
				}
			}
			for _, hd := range []string{"authorization", "content-type", "last-event-id", "idempotency-key"} {
				if !strings.Contains(headers, hd) {
					t.Errorf("Allow-Headers %q lacks %s", headers, hd)
				}
			}
		})
	}
}

// TestCORSVaryOrigin: with allowed origins configured, an answer depends on
// Origin even when it carries no CORS headers. Only answers to allowed
// origins said Vary: Origin, so a cache (the browser's own, or a CDN) that
// stored /roomcast.js or a history page fetched without Origin served it
// again, without Access-Control-Allow-Origin, to the allowed app's page,
// which the browser then refused.
func TestCORSVaryOrigin(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	r := startSecured(t, func(o *relaytest.Options) { o.Relay.AllowedOrigins = []string{app} })
	for _, path := range []string{"/roomcast.js", "/v1/rooms/public:lobby/history"} {
		for _, origin := range []string{"", "https://other.example", app} {
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			resp := r.Do(t, relaytest.Request{Path: path, Header: h})
			if resp.Status != http.StatusOK {
				t.Fatalf("GET %s (Origin %q): %d %s", path, origin, resp.Status, resp.Body)
			}
			if !slices.Contains(resp.Header.Values("Vary"), "Origin") {
				t.Errorf("GET %s with Origin %q: Vary %q lacks Origin", path, origin, resp.Header.Values("Vary"))
			}
		}
	}
}
