package relay_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
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

// A batch of a user's events while Redis does not answer: each event's
// checks (ban, rate allowances) used to wait out the call timeout in turn,
// so a batch of 1,000 events held its request for 1,000 timeouts and more.
// The first failure now answers the rest at once, nothing of them spent or
// stored, for the caller to send again.
func TestBatchBackboneDownAnswersAtOnce(t *testing.T) {
	srv := redistest.NewServer(t)
	r := startRedisRelay(t, srv.URL(), 500*time.Millisecond)
	alice := relaytest.Token(t, "alice", time.Hour, nil)
	for range 4 {
		batchResults(t, postBatch(t, r, alice, "application/json", `[{"room":"warm-up","data":0}]`), 1)
	}
	const n = 60
	ev := make([]string, n)
	for i := range ev {
		ev[i] = fmt.Sprintf(`{"room":"stall","data":%d}`, i)
	}
	srv.Pause()
	resp := postBatch(t, r, alice, "application/x-ndjson", strings.Join(ev, "\n"))
	srv.Resume()
	res := batchResults(t, resp, n)
	notTried := 0
	for i, x := range res {
		if x.code() != "backbone_unavailable" {
			t.Errorf("event %d: %+v, want backbone_unavailable", i, x)
		}
		if x.Error != nil && strings.Contains(x.Error.Message, "not tried") {
			notTried++
		}
	}
	if notTried < n-1 {
		t.Errorf("%d events waited on the backbone after it failed once, want at most 1", n-notTried)
	}
	if got := historyData(t, r, "stall"); len(got) != 0 {
		t.Errorf("the refused batch stored %v", got)
	}
	// Nothing was spent: the batch sent again is stored whole.
	again := batchResults(t, postBatch(t, r, alice, "application/x-ndjson", strings.Join(ev, "\n")), n)
	for i, x := range again {
		if x.code() != "" {
			t.Fatalf("event %d resent: %+v", i, x)
		}
	}
}

// The same publish decided alone and as a batch event: every route and the
// batch go through one publish operation, so the codes must agree, for
// every caller and target. (Payload limits are left out: a batch event's
// size is its own JSON, target included, as docs/api.md says.)
func TestBatchDecidesAsSinglePublish(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			opts := batchOptions(t)
			opts.Relay.Namespaces = &rooms.Namespaces{Named: map[string]rooms.NamespaceOptions{
				"news":    {Publish: rooms.PublishServer},
				"members": {Publish: rooms.PublishAuthenticated},
			}}
			r := bb.start(t, opts)
			creds := map[string]string{
				"anonymous":  "",
				"alice":      relaytest.Token(t, "alice", time.Hour, nil),
				"lobby-only": relaytest.Token(t, "carol", time.Hour, relaytest.Claims{"publish": []string{"lobby"}}),
				"api key":    relaytest.APIKey,
			}
			targets := []struct {
				path, field string
			}{
				{"/v1/rooms/lobby/events", `"room":"lobby"`},
				{"/v1/rooms/news:today/events", `"room":"news:today"`},
				{"/v1/rooms/members:x/events", `"room":"members:x"`},
				{"/v1/users/bob/events", `"user":"bob"`},
				{"/v1/namespaces/news/events", `"namespace":"news"`},
				{"/v1/namespaces/default/events", `"namespace":"default"`},
			}
			bodies := []string{`"data":1`, `"data":1,"exclude":["abcdefgh"]`, `"data":1,"exclude_self":true`, `"event":"roomcast:x"`, `"data":1,"from":{"user":"eve"}`}
			for name, cred := range creds {
				for _, tg := range targets {
					for _, b := range bodies {
						h := http.Header{}
						if cred != "" {
							h = relaytest.Bearer(cred)
						}
						h.Set("Content-Type", "application/json")
						single := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: tg.path, Header: h, Body: []byte("{" + b + "}")})
						want := ""
						if single.Status >= 300 {
							var e struct {
								Error struct {
									Code string `json:"code"`
								} `json:"error"`
							}
							single.JSON(t, &e)
							want = e.Error.Code
						}
						resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/batch", Header: h, Body: []byte("[{" + tg.field + "," + b + "}]")})
						got := batchResults(t, resp, 1)[0].code()
						// Where both refuse, the order of the checks may
						// differ: the single route authorises before it
						// reads the body, the batch reads the event first.
						checkOrder := got != "" && want != "" && (got == "reserved_event" || want == "reserved_event")
						if got != want && !checkOrder {
							t.Errorf("%s → %s {%s}: batch %q, single %q", name, tg.path, b, got, want)
						}
					}
				}
			}
		})
	}
}
