package relay_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// TestTokenRefreshToShorterExpiry: a stream whose close is an hour away is
// refreshed with a token expiring in seconds: both writers (hijacked and
// net/http) warn at once and close at the new expiry, not the old one.
func TestTokenRefreshToShorterExpiry(t *testing.T) {
	t.Parallel()
	for _, hijack := range []bool{true, false} {
		name := map[bool]string{true: "hijacked", false: "net/http"}[hijack]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := startSecured(t, func(o *relaytest.Options) { o.Relay.DisableHijack = !hijack })
			s := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "alice", time.Hour, nil))})
			conn := s.Connected(t).Connection
			short := relaytest.Token(t, "alice", 3*time.Second, nil)
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: relaytest.Bearer(short)})
			if resp.Status != http.StatusNoContent {
				t.Fatalf("refresh: status %d: %s", resp.Status, resp.Body)
			}
			s.Expect(t, "roomcast:token-expiring")
			checkClosingReason(t, s.Expect(t, "roomcast:closing"), rooms.CloseTokenExpired)
			s.WaitEnded(t)
		})
	}
}
