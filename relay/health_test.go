package relay_test

import (
	"net/http"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// TestReadiness checks /readyz through start-up and /healthz throughout.
func TestReadiness(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{NotReady: true})
	check := func(path string, status int, want map[string]any) {
		t.Helper()
		resp := r.Get(t, path)
		var got map[string]any
		resp.JSON(t, &got)
		if resp.Status != status {
			t.Errorf("%s: status %d, want %d", path, resp.Status, status)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v (%s)", path, k, got[k], v, resp.Body)
			}
		}
	}
	check("/readyz", http.StatusServiceUnavailable, map[string]any{"status": "starting", "backbone": "up"})
	check("/healthz", http.StatusOK, map[string]any{"status": "ok"})
	r.Server.SetReady()
	check("/readyz", http.StatusOK, map[string]any{"status": "ready", "backbone": "up", "connections": float64(0)})
	check("/healthz", http.StatusOK, map[string]any{"status": "ok"})
}
