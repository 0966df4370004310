package relay_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// TestAllowedHosts: with an allow-list the relay answers only to the hosts
// on it, whatever the request (the same-origin check would otherwise pass
// a page of any site whose name resolves to the relay: DNS rebinding);
// others get 421 host_not_allowed in the one JSON shape, except the health
// probes, which platforms call by a machine's address.
func TestAllowedHosts(t *testing.T) {
	t.Parallel()
	r := startSecured(t, func(o *relaytest.Options) {
		o.Relay.AllowedHosts = []string{"relay.example", "*.apps.example", "10.1.2.3:8080", "::1"}
	})
	const publish = "/v1/rooms/public:lobby/events"
	tests := []struct {
		method, path, host string
		extra              []string
		want               int
	}{
		{http.MethodPost, publish, "relay.example", nil, http.StatusAccepted},
		{http.MethodPost, publish, "RELAY.example.:8443", nil, http.StatusAccepted},
		{http.MethodPost, publish, "relay.example", []string{"Origin: http://relay.example"}, http.StatusAccepted},
		{http.MethodPost, publish, "chat.apps.example", nil, http.StatusAccepted},
		{http.MethodPost, publish, "10.1.2.3:8080", nil, http.StatusAccepted},
		{http.MethodPost, publish, "[::1]:9000", nil, http.StatusAccepted},
		{http.MethodPost, publish, "attacker.example", []string{"Origin: http://attacker.example"}, http.StatusMisdirectedRequest},
		{http.MethodPost, publish, "relay.example.attacker.example", nil, http.StatusMisdirectedRequest},
		{http.MethodPost, publish, "apps.example", nil, http.StatusMisdirectedRequest},
		{http.MethodPost, publish, "10.1.2.3:9090", nil, http.StatusMisdirectedRequest},
		{http.MethodPost, publish, "10.1.2.3", nil, http.StatusMisdirectedRequest},
		{http.MethodGet, "/v1/rooms/public:lobby/history", "attacker.example", nil, http.StatusMisdirectedRequest},
		{http.MethodGet, "/v1/rooms/public:lobby/poll?timeout=0", "attacker.example", nil, http.StatusMisdirectedRequest},
		{http.MethodGet, "/", "attacker.example", nil, http.StatusMisdirectedRequest},
		{http.MethodGet, "/healthz", "10.9.9.9:8080", nil, http.StatusOK},
		{http.MethodGet, "/readyz", "10.9.9.9:8080", nil, http.StatusOK},
	}
	for _, tt := range tests {
		lines := append([]string{"Host: " + tt.host}, tt.extra...)
		body := ""
		if tt.method == http.MethodPost {
			body = `{}`
		}
		got := sendRaw(t, r, tt.method, tt.path, lines, body)
		if got.status != tt.want {
			t.Errorf("%s %s, Host %s: %d %s, want %d", tt.method, tt.path, tt.host, got.status, got.body, tt.want)
			continue
		}
		if got.status == http.StatusMisdirectedRequest {
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal([]byte(got.body), &e); err != nil || e.Error.Code != "host_not_allowed" {
				t.Errorf("Host %s: body %s, want the JSON error host_not_allowed", tt.host, got.body)
			}
		}
	}
}

// TestAnyHostWithoutAllowList: a relay given no allow-list answers to any
// host, as before.
func TestAnyHostWithoutAllowList(t *testing.T) {
	t.Parallel()
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{}})
	if got := sendRaw(t, r, http.MethodPost, "/v1/rooms/lobby/events", []string{"Host: anything.example"}, `{}`); got.status != http.StatusAccepted {
		t.Errorf("publish: %d %s", got.status, got.body)
	}
}
