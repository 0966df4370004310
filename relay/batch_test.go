package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// batchResult is one result of POST /v1/batch.
type batchResult struct {
	ID       *string `json:"id"`
	Replayed bool    `json:"replayed"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	IdempotencyKey string `json:"idempotency_key"`
	RetryAfter     int    `json:"retry_after"`
}

// code is the result's error code, "" for a stored event.
func (r batchResult) code() string {
	if r.Error == nil {
		return ""
	}
	return r.Error.Code
}

// batchBackbones start a relay for each backbone the batch runs on: the
// embedded one and a real Redis.
var batchBackbones = []struct {
	name  string
	start func(t *testing.T, opts relaytest.Options) *relaytest.Relay
}{
	{"memory", func(t *testing.T, opts relaytest.Options) *relaytest.Relay { return relaytest.Start(t, opts) }},
	{"redis", func(t *testing.T, opts relaytest.Options) *relaytest.Relay {
		opts.Backbone = relaytest.RedisBackbone(t, redistest.SharedURL(t), redis.Options{Prefix: redistest.Prefix(t)})
		return relaytest.Start(t, opts)
	}},
}

// batchOptions: alice publishes where anyone with a token may; news is the
// server's.
func batchOptions(t *testing.T) relaytest.Options {
	return relaytest.Options{Relay: relay.Options{
		Auth:       relaytest.NewAuth(t, auth.Config{}),
		MaxPayload: 256,
		Namespaces: &rooms.Namespaces{Named: map[string]rooms.NamespaceOptions{"news": {Publish: rooms.PublishServer}}},
	}}
}

// postBatch sends body as contentType with credential and returns the answer.
func postBatch(t *testing.T, r *relaytest.Relay, credential, contentType, body string) *relaytest.Response {
	t.Helper()
	h := relaytest.Bearer(credential)
	h.Set("Content-Type", contentType)
	return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/batch", Header: h, Body: []byte(body)})
}

// batchResults requires a 200 and returns its results.
func batchResults(t *testing.T, resp *relaytest.Response, n int) []batchResult {
	t.Helper()
	if resp.Status != http.StatusOK {
		t.Fatalf("batch: status %d, want 200: %s", resp.Status, resp.Body)
	}
	var ans struct {
		Results []batchResult `json:"results"`
	}
	resp.JSON(t, &ans)
	if len(ans.Results) != n {
		t.Fatalf("%d results, want %d: %s", len(ans.Results), n, resp.Body)
	}
	return ans.Results
}

// historyData reads the data of a room's retained events, oldest first.
func historyData(t *testing.T, r *relaytest.Relay, room string) []string {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/history?limit=1000", Header: relaytest.Bearer(relaytest.APIKey)})
	if resp.Status != http.StatusOK {
		t.Fatalf("history of %s: %d %s", room, resp.Status, resp.Body)
	}
	var page struct {
		Events []struct {
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	resp.JSON(t, &page)
	out := []string{}
	for _, e := range page.Events {
		out = append(out, string(e.Data))
	}
	return out
}

func TestBatchMixedResults(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			alice := relaytest.Token(t, "alice", time.Hour, nil)
			big := strings.Repeat("x", 300)
			body := `[
				{"room":"lobby","data":1},
				{"room":"news:today","data":2},
				{"user":"bob","event":"dm","data":3},
				{"room":"lobby","event":"roomcast:join","data":4},
				{"namespace":"default","data":5},
				{"rooms":["lobby","side"],"data":6},
				{"room":"lobby","data":"` + big + `"},
				{"room":"lobby","user":"bob","data":8},
				{"room":"lobby","bogus":1},
				{"room":"lobby","data":10}
			]`
			res := batchResults(t, postBatch(t, r, alice, "application/json", body), 10)
			want := []string{"", "forbidden", "", "reserved_event", "", "", "payload_too_large", "invalid_parameter", "invalid_json", ""}
			for i, code := range want {
				if res[i].code() != code {
					t.Errorf("result %d: code %q, want %q (%+v)", i, res[i].code(), code, res[i])
				}
				if code == "" && (res[i].ID == nil || *res[i].ID == "") {
					t.Errorf("result %d: stored without an id", i)
				}
			}
			if got := historyData(t, r, "lobby"); fmt.Sprint(got) != "[1 6 10]" {
				t.Errorf("lobby holds %v, want [1 6 10]: the forbidden and refused events stored nothing", got)
			}
			if got := historyData(t, r, "news:today"); len(got) != 0 {
				t.Errorf("the forbidden room holds %v", got)
			}
		})
	}
}

func TestBatchOrderWithinRoom(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			var lines []string
			var want []string
			for i := range 200 {
				room := "a"
				if i%3 == 0 {
					room = "b"
				} else {
					want = append(want, fmt.Sprint(i))
				}
				lines = append(lines, fmt.Sprintf(`{"room":%q,"data":%d}`, room, i))
			}
			res := batchResults(t, postBatch(t, r, relaytest.APIKey, "application/x-ndjson", strings.Join(lines, "\n")+"\n"), 200)
			for i, x := range res {
				if x.code() != "" {
					t.Fatalf("result %d: %+v", i, x)
				}
			}
			if got := historyData(t, r, "a"); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("room a holds %v, want %v (batch order)", got, want)
			}
		})
	}
}

func TestBatchRateLimitPerEvent(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			opts := batchOptions(t)
			opts.Relay.Limits = relay.Limits{PublishRate: 1e6, PublishBurst: 1e6, PublishCallerRate: 0.001, PublishCallerBurst: 3}
			r := bb.start(t, opts)
			alice := relaytest.Token(t, "alice", time.Hour, nil)
			body := `[{"room":"lobby","data":1},{"room":"lobby","data":2},{"room":"x:y","data":3},{"room":"lobby","data":4},{"room":"lobby","data":5}]`
			res := batchResults(t, postBatch(t, r, alice, "application/json", body), 5)
			for i, code := range []string{"", "", "", "rate_limited", "rate_limited"} {
				if res[i].code() != code {
					t.Errorf("result %d: code %q, want %q", i, res[i].code(), code)
				}
			}
			if res[4].RetryAfter < 1 {
				t.Errorf("a rate-limited event says retry_after %d", res[4].RetryAfter)
			}
			// The batch spent the allowance a single publish needs too.
			h := relaytest.Bearer(alice)
			h.Set("Content-Type", "application/json")
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events", Header: h, Body: []byte(`{"data":0}`)})
			if resp.Status != http.StatusTooManyRequests {
				t.Errorf("a single publish after the batch: %d, want 429", resp.Status)
			}
		})
	}
}

func TestBatchIdempotencyKeys(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			alice := relaytest.Token(t, "alice", time.Hour, nil)
			body := `[{"room":"lobby","data":1,"idempotency_key":"k1"},{"room":"lobby","data":2},{"room":"lobby","data":1,"idempotency_key":"k1"},{"room":"lobby","data":3,"idempotency_key":"` + strings.Repeat("k", 300) + `"}]`
			first := batchResults(t, postBatch(t, r, alice, "application/json", body), 4)
			if first[0].code() != "" || first[0].Replayed {
				t.Fatalf("first event: %+v", first[0])
			}
			if first[2].ID == nil || *first[2].ID != *first[0].ID || !first[2].Replayed {
				t.Errorf("the key repeated within the batch: %+v, want a replay of %s", first[2], *first[0].ID)
			}
			if first[3].code() != "invalid_parameter" {
				t.Errorf("an over-long key: %+v", first[3])
			}
			again := batchResults(t, postBatch(t, r, alice, "application/json", body), 4)
			if again[0].ID == nil || *again[0].ID != *first[0].ID || !again[0].Replayed {
				t.Errorf("the batch resent: %+v, want a replay of %s", again[0], *first[0].ID)
			}
			if again[1].ID == nil || *again[1].ID == *first[1].ID {
				t.Errorf("an event without a key, resent: %+v, want a new event", again[1])
			}
			if got := historyData(t, r, "lobby"); fmt.Sprint(got) != "[1 2 2]" {
				t.Errorf("lobby holds %v, want [1 2 2]", got)
			}
			// A single publish with the same key is answered the same.
			h := relaytest.Bearer(alice)
			h.Set("Idempotency-Key", "k1")
			p := r.Publish(t, "/v1/rooms/lobby/events", "application/json", []byte(`{"data":1}`), h)
			if p.ID == nil || *p.ID != *first[0].ID {
				t.Errorf("a single publish with the batch's key: %v, want %s", p.ID, *first[0].ID)
			}
		})
	}
}

func TestBatchBans(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			if err := r.Hub.Ban(context.Background(), "mallory", time.Minute); err != nil {
				t.Fatal(err)
			}
			mallory := relaytest.Token(t, "mallory", time.Hour, nil)
			var res []batchResult
			relaytest.Eventually(t, "the ban to hold", func() bool {
				res = batchResults(t, postBatch(t, r, mallory, "application/json", `[{"room":"lobby","data":1},{"user":"bob","data":2}]`), 2)
				return res[0].code() == "banned"
			})
			if res[1].code() != "banned" {
				t.Errorf("a banned user's private message: %+v", res[1])
			}
		})
	}
}

func TestBatchUnreadable(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{MaxBatchBytes: 64 << 10}})
	many := func(n int, sep, open, closing string) string {
		ev := make([]string, n)
		for i := range ev {
			ev[i] = `{"room":"a","data":1}`
		}
		return open + strings.Join(ev, sep) + closing
	}
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		code                    string
	}{
		{"1,001 events", "application/json", many(1001, ",", "[", "]"), 413, "too_many_events"},
		{"1,001 lines", "application/x-ndjson", many(1001, "\n", "", "\n"), 413, "too_many_events"},
		{"not an array", "application/json", `{"room":"a"}`, 400, "invalid_json"},
		{"broken array", "application/json", `[{"room":"a"},`, 400, "invalid_json"},
		{"two values", "application/json", `[] []`, 400, "invalid_json"},
		{"empty array", "application/json", `[]`, 400, "invalid_parameter"},
		{"blank NDJSON", "application/x-ndjson", "\n \n", 400, "invalid_parameter"},
		{"raw text", "text/plain", `hello`, 415, "unsupported_media_type"},
		{"no type", "", `[]`, 415, "unsupported_media_type"},
		{"not UTF-8", "application/x-ndjson", "{\"room\":\"a\",\"data\":\"\xff\"}", 400, "invalid_json"},
		{"over the byte bound", "application/x-ndjson", strings.Repeat(`{"room":"a","data":1}`+"\n", 4000), 413, "payload_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.contentType != "" {
				h.Set("Content-Type", tc.contentType)
			}
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/batch", Header: h, Body: []byte(tc.body)})
			if resp.Status != tc.status || string(resp.Object(t)["error"]) == "" || !strings.Contains(string(resp.Body), `"code":"`+tc.code+`"`) {
				t.Errorf("status %d %s; want %d %s", resp.Status, resp.Body, tc.status, tc.code)
			}
		})
	}
	if got := historyData(t, r, "a"); len(got) != 0 {
		t.Errorf("refused batches stored %v", got)
	}
}

func TestBatchNDJSONBadLine(t *testing.T) {
	for _, bb := range batchBackbones {
		t.Run(bb.name, func(t *testing.T) {
			r := bb.start(t, batchOptions(t))
			body := "{\"room\":\"lobby\",\"data\":1}\r\n{\"room\":\"lobby\",\"data\":\n\n{\"room\":\"lobby\",\"data\":3}\nnull\n[1]\n{\"room\":\"lobby\",\"data\":6}"
			res := batchResults(t, postBatch(t, r, relaytest.APIKey, "application/x-ndjson", body), 6)
			for i, code := range []string{"", "invalid_json", "", "invalid_json", "invalid_json", ""} {
				if res[i].code() != code {
					t.Errorf("line result %d: %+v, want code %q", i, res[i], code)
				}
			}
			if got := historyData(t, r, "lobby"); fmt.Sprint(got) != "[1 3 6]" {
				t.Errorf("lobby holds %v, want [1 3 6]", got)
			}
		})
	}
}

// A batch stored while Redis stalls past the call timeout: every event is
// answered outcome_unknown with the key to resend it with (the event's own,
// else its publish token); the events resent with those keys are answered
// with what Redis stored, each stored once.
func TestBatchOutcomeUnknownResend(t *testing.T) {
	srv := redistest.NewServer(t)
	r := startRedisRelay(t, srv.URL(), time.Second)
	// Connections already open: a new one's handshake would stall before
	// the pipeline is even sent.
	for range 4 {
		batchResults(t, postBatch(t, r, relaytest.APIKey, "application/json", `[{"room":"warm-up","data":0}]`), 1)
	}
	events := []string{`{"room":"stall","data":1,"idempotency_key":"mine-1"}`, `{"room":"stall","data":2}`}
	srv.Pause()
	resp := postBatch(t, r, relaytest.APIKey, "application/x-ndjson", strings.Join(events, "\n"))
	srv.Resume()
	res := batchResults(t, resp, 2)
	if res[0].code() != "outcome_unknown" || res[0].IdempotencyKey != "mine-1" {
		t.Fatalf("event with its own key: %+v, want outcome_unknown naming mine-1", res[0])
	}
	if res[1].code() != "outcome_unknown" || !strings.HasPrefix(res[1].IdempotencyKey, "rt_") {
		t.Fatalf("event without a key: %+v, want outcome_unknown naming its token", res[1])
	}
	var stored []string
	relaytest.Eventually(t, "the stalled batch is in history", func() bool {
		stored = historyIDs(t, r, "stall")
		return len(stored) == 2
	})
	resend := fmt.Sprintf(`[{"room":"stall","data":1,"idempotency_key":"mine-1"},{"room":"stall","data":2,"idempotency_key":%q}]`, res[1].IdempotencyKey)
	again := batchResults(t, postBatch(t, r, relaytest.APIKey, "application/json", resend), 2)
	for i := range again {
		if again[i].ID == nil || *again[i].ID != stored[i] || !again[i].Replayed {
			t.Errorf("resent event %d: %+v, want a replay of %s", i, again[i], stored[i])
		}
	}
	if got := historyIDs(t, r, "stall"); len(got) != 2 {
		t.Errorf("stall holds %v after the resend, want the 2 events once", got)
	}
}

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
