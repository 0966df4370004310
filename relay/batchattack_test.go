package relay_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// Idempotency keys are scoped by user, and a user id may hold '|' (Auth0's
// "auth0|5f7c…" ids do): user "auth0" with key "v|k" must not be answered
// with what user "auth0|v" stored under "k", in a single publish or a batch.
func TestIdempotencyScopeUsersWithBar(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			victim := relaytest.Token(t, "auth0|v", time.Hour, nil)
			other := relaytest.Token(t, "auth0", time.Hour, nil)
			h := relaytest.Bearer(victim)
			h.Set("Idempotency-Key", "k")
			r.Publish(t, "/v1/rooms/lobby/events", "application/json", []byte(`{"data":1}`), h)

			h = relaytest.Bearer(other)
			h.Set("Idempotency-Key", "v|k")
			h.Set("Content-Type", "application/json")
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events", Header: h, Body: []byte(`{"data":2}`)})
			if resp.Status != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "" {
				t.Errorf("another user's key answered a single publish: %d %s %v", resp.Status, resp.Body, resp.Header)
			}
			mine := batchResults(t, postBatch(t, r, victim, "application/json", `[{"room":"lobby","data":3,"idempotency_key":"k2"}]`), 1)
			res := batchResults(t, postBatch(t, r, other, "application/json", `[{"room":"lobby","data":4,"idempotency_key":"v|k2"}]`), 1)
			if res[0].Replayed || res[0].ID == nil || *res[0].ID == *mine[0].ID {
				t.Errorf("another user's key answered a batch event: %+v", res[0])
			}
			if got := historyData(t, r, "lobby"); fmt.Sprint(got) != "[1 2 3 4]" {
				t.Errorf("lobby holds %v, want the three events stored apart", got)
			}
		})
	}
}
