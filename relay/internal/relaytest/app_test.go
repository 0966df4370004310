package relaytest_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// TestStartRunsProductionWiring: a test relay is assembled as main
// assembles one (app.Assemble), so what production wires around the edge
// is there in tests too: /metrics, gauges read from the hub, counters fed
// by the hub's observer, backbone calls timed, and development tokens that
// the relay's own authenticator accepts.
func TestStartRunsProductionWiring(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})}, DevTokens: true})
	token := devToken(t, r)
	s := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(token)})
	s.Connected(t)
	r.Publish(t, "/v1/rooms/lobby/events", "application/json", []byte(`{"data":{"n":1}}`), relaytest.Bearer(token))
	s.NextEvent(t)
	checkMetrics(t, r)
}

// TestStartConfigRunsMain: StartConfig serves the relay main assembles
// from the command line and environment, open mode's development tokens
// and metrics included.
func TestStartConfigRunsMain(t *testing.T) {
	r := relaytest.StartConfig(t, map[string]string{
		"ROOMCAST_DEV_TOKEN_KEY_FILE": filepath.Join(t.TempDir(), "dev-token-key"),
		"ROOMCAST_METRICS_ADDR":       "127.0.0.1:0",
	}, "-addr", "127.0.0.1:0")
	token := devToken(t, r)
	s := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{Header: relaytest.BearerMap(token)})
	s.Connected(t)
	r.Publish(t, "/v1/rooms/lobby/events", "application/json", []byte(`{"data":{"n":1}}`), relaytest.Bearer(token))
	// The envelope's sender is the token's user, which the relay read
	// from a token it verified with its own key.
	if from := string(s.NextEvent(t).Envelope(t).From); !strings.Contains(from, `"dev-`) {
		t.Errorf("event from %s, want the development user", from)
	}
	checkMetrics(t, r)
}

// devToken gets a development token from POST /v1/dev/token.
func devToken(t *testing.T, r *relaytest.Relay) string {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/dev/token",
		Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"name":"Ada"}`)})
	if resp.Status != http.StatusOK {
		t.Fatalf("POST /v1/dev/token: %d %s", resp.Status, resp.Body)
	}
	var answer struct{ Token, User string }
	resp.JSON(t, &answer)
	if answer.Token == "" || !strings.HasPrefix(answer.User, "dev-") {
		t.Fatalf("POST /v1/dev/token answered %s", resp.Body)
	}
	return answer.Token
}

// checkMetrics scrapes /metrics after one stream in lobby received one
// event: on the metrics listener, the relay's own answering 404.
func checkMetrics(t *testing.T, r *relaytest.Relay) {
	t.Helper()
	if resp := r.Get(t, "/metrics"); resp.Status != http.StatusNotFound {
		t.Errorf("/metrics on the relay's listener: %d, want 404", resp.Status)
	}
	resp := r.Scrape(t, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.Status, resp.Body)
	}
	body := string(resp.Body)
	for _, want := range []string{
		`roomcast_rooms 1`,                        // a gauge reading the hub
		`roomcast_connections{transport="sse"} 1`, // counted by the edge
		`roomcast_events_published_total{kind="retained"} 1`,
		`roomcast_backbone_duration_seconds_count{op="publish"} 1`, // the timed backbone
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	// The hub's observer counts the event and the stream's presence
	// events: without it the counter stays 0.
	if !strings.Contains(body, "\nroomcast_events_delivered_total ") || strings.Contains(body, "\nroomcast_events_delivered_total 0\n") {
		t.Errorf("/metrics counts no delivery:\n%s", body)
	}
}
