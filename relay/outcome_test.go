package relay_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// startRedisRelay runs a relay over a Redis backbone at url, whose calls
// time out after opTimeout; everything stops when the test ends.
func startRedisRelay(t *testing.T, url string, opTimeout time.Duration) *relaytest.Relay {
	t.Helper()
	return relaytest.Start(t, relaytest.Options{
		Backbone: relaytest.RedisBackbone(t, url, redis.Options{OpTimeout: opTimeout}),
		Relay:    relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})},
	})
}

// historyIDs reads the ids of a room's retained events over HTTP.
func historyIDs(t *testing.T, r *relaytest.Relay, room string) []string {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/history", Header: relaytest.Bearer(relaytest.APIKey)})
	if resp.Status != http.StatusOK {
		t.Fatalf("history of %s: %d %s", room, resp.Status, resp.Body)
	}
	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	resp.JSON(t, &page)
	return envelopeIDs(t, page.Events)
}

// A publish to a Redis stalled past the call timeout was answered with a
// 503 that invited a plain retry, although Redis stored it once it woke: a
// retry stored it twice. The answer is now 503 outcome_unknown with the
// key to resend with, and the resend is answered with the stored event.
func TestPublishOutcomeUnknownResend(t *testing.T) {
	srv := redistest.NewServer(t)
	// The backend publishes (with the API key: no rate limit is asked of
	// Redis first), on connections already open: a new connection's
	// handshake would stall before the script is even sent.
	r := startRedisRelay(t, srv.URL(), time.Second)
	var warm sync.WaitGroup
	for range 8 {
		warm.Add(1)
		go func() {
			defer warm.Done()
			r.Publish(t, "/v1/rooms/warm-up/events", "application/json", []byte(`{"data":0}`), relaytest.Bearer(relaytest.APIKey))
		}()
	}
	warm.Wait()
	for _, tc := range []struct {
		name  string
		path  string
		body  string
		rooms []string
		key   string // the caller's own Idempotency-Key, if any
	}{
		{"room", "/v1/rooms/stall/events", `{"event":"chat","data":"once"}`, []string{"stall"}, ""},
		{"several rooms", "/v1/events", `{"rooms":["stall-a","stall-b"],"event":"chat","data":"once"}`, []string{"stall-a", "stall-b"}, ""},
		{"caller's key", "/v1/rooms/stall-key/events", `{"event":"chat","data":"once"}`, []string{"stall-key"}, "my-key-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := relaytest.Bearer(relaytest.APIKey)
			header.Set("Content-Type", "application/json")
			if tc.key != "" {
				header.Set("Idempotency-Key", tc.key)
			}
			post := func() *relaytest.Response {
				return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: tc.path, Header: header, Body: []byte(tc.body)})
			}
			srv.Pause()
			resp := post()
			srv.Resume()
			checkError(t, resp, http.StatusServiceUnavailable, "outcome_unknown")
			resend := resp.Header.Get("Idempotency-Key")
			switch {
			case tc.key != "" && resend != tc.key:
				t.Fatalf("Idempotency-Key %q; want the caller's own %q", resend, tc.key)
			case tc.key == "" && !strings.HasPrefix(resend, "rt_"):
				t.Fatalf("Idempotency-Key %q; want the publish's token", resend)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Error("503 outcome_unknown without Retry-After")
			}
			// Redis runs the script it was sent before the stall.
			var stored []string
			relaytest.Eventually(t, "the stalled publish is in history", func() bool {
				stored = historyIDs(t, r, tc.rooms[0])
				return len(stored) == 1
			})
			header.Set("Idempotency-Key", resend)
			again := post()
			if again.Status != http.StatusAccepted {
				t.Fatalf("resend: %d %s", again.Status, again.Body)
			}
			var p relaytest.Published
			again.JSON(t, &p)
			if p.ID == nil || *p.ID != stored[0] || again.Header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("resend answered id %v (replayed %q); want the stored %s, replayed", p.ID, again.Header.Get("Idempotent-Replayed"), stored[0])
			}
			for _, room := range tc.rooms {
				if ids := historyIDs(t, r, room); len(ids) != 1 || ids[0] != stored[0] {
					t.Errorf("history of %s holds %v after the resend; want only %s", room, ids, stored[0])
				}
			}
		})
	}
}

// Tokens are read as tokens: a malformed one is refused, and one too old
// to be told apart from a new publish is refused rather than stored twice.
func TestPublishTokenRefusals(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	old := rooms.NewPublishToken(time.Now().Add(-rooms.PublishTokenWindow - time.Minute)).String()
	for _, tc := range []struct {
		key    string
		status int
		code   string
	}{
		{"rt_not-a-token", http.StatusBadRequest, "invalid_parameter"},
		{old[:len(old)-1] + "!", http.StatusBadRequest, "invalid_parameter"},
		{old, http.StatusConflict, "idempotency_key_expired"},
	} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/tokens/events",
			Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {tc.key}},
			Body:   []byte(`{"event":"chat","data":1}`)})
		checkError(t, resp, tc.status, tc.code)
	}
	if ids := historyIDs(t, r, "tokens"); len(ids) != 0 {
		t.Fatalf("refused publishes stored %v", ids)
	}
	// A fresh token is a resend like any other: stored once.
	fresh := rooms.NewPublishToken(time.Now()).String()
	h := http.Header{"Idempotency-Key": {fresh}}
	first := r.Publish(t, "/v1/rooms/tokens/events", "application/json", []byte(`{"data":1}`), h)
	second := r.Publish(t, "/v1/rooms/tokens/events", "application/json", []byte(`{"data":1}`), h)
	if first.ID == nil || second.ID == nil || *first.ID != *second.ID {
		t.Fatalf("two sends of one token answered %v and %v", first.ID, second.ID)
	}
	if ids := historyIDs(t, r, "tokens"); len(ids) != 1 {
		t.Fatalf("history holds %v; want one event", ids)
	}
}

// go-redis resends a command whose connection ended before its reply: a
// publish whose reply was lost after Redis ran it ran twice, and a single
// POST stored two events. Now the second run finds the publish's token.
func TestPublishLostReplyStoresOnce(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	r := startRedisRelay(t, proxy.URL(), 5*time.Second)
	key := relaytest.Bearer(relaytest.APIKey)
	// Loads the script, so that the lost reply is the script's own.
	r.Publish(t, "/v1/rooms/lost/events", "application/json", []byte(`{"data":"warm-up"}`), key)
	proxy.LoseReplyTo(func(req []byte) bool { return strings.Contains(string(req), "reply-to-lose") })
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lost/events",
		Header: http.Header{"Authorization": key["Authorization"], "Content-Type": {"application/json"}},
		Body:   []byte(`{"data":"reply-to-lose"}`)})
	if proxy.Lost() != 1 {
		t.Fatal("the proxy lost no reply: the test did not test")
	}
	if resp.Status != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("publish whose reply was lost: %d (replayed %q) %s; want 202, not a replay", resp.Status, resp.Header.Get("Idempotent-Replayed"), resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil {
		t.Fatalf("publish answered no id: %s", resp.Body)
	}
	if ids := historyIDs(t, r, "lost"); len(ids) != 2 || ids[1] != *p.ID {
		t.Fatalf("history holds %v after one publish (answered %s); want the warm-up and that event once", ids, *p.ID)
	}
}

// A publish token named a publish for anyone who sent its text: Mallory
// holding Bob's token was answered with Bob's event id (and, sent first, her
// event took Bob's token, so Bob's resend was answered 202 for an event
// never stored), and a token resent with another room or body was answered
// 202 for an event stored nowhere. A token is now its caller's alone, and
// resent with another message it is refused.
func TestPublishTokenBoundToCallerAndMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) *relaytest.Relay
	}{
		{"memory", func(t *testing.T) *relaytest.Relay {
			return relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})}})
		}},
		{"redis", func(t *testing.T) *relaytest.Relay {
			return startRedisRelay(t, redistest.NewServer(t).URL(), 5*time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.start(t)
			token := rooms.NewPublishToken(time.Now()).String()
			as := func(user string) http.Header {
				h := relaytest.Bearer(relaytest.Token(t, user, time.Hour, nil))
				h.Set("Content-Type", "application/json")
				h.Set("Idempotency-Key", token)
				return h
			}
			post := func(user, room, body string) *relaytest.Response {
				return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/" + room + "/events",
					Header: as(user), Body: []byte(body)})
			}
			publishedID := func(resp *relaytest.Response) string {
				t.Helper()
				if resp.Status != http.StatusAccepted {
					t.Fatalf("publish: %d %s", resp.Status, resp.Body)
				}
				var p relaytest.Published
				resp.JSON(t, &p)
				if p.ID == nil {
					t.Fatalf("publish answered no id: %s", resp.Body)
				}
				return *p.ID
			}
			bob := publishedID(post("bob", "bound-a", `{"data":"bob"}`))
			// Mallory's publish with Bob's token is hers: stored anew.
			resp := post("mallory", "bound-a", `{"data":"mallory"}`)
			if mallory := publishedID(resp); mallory == bob || resp.Header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("Mallory's publish with Bob's token answered %s (replayed %q); Bob's event is %s", mallory, resp.Header.Get("Idempotent-Replayed"), bob)
			}
			// Bob's token resent with another room or body names nothing
			// that was stored.
			checkError(t, post("bob", "bound-b", `{"data":"bob"}`), http.StatusUnprocessableEntity, "idempotency_key_reused")
			checkError(t, post("bob", "bound-a", `{"data":"other"}`), http.StatusUnprocessableEntity, "idempotency_key_reused")
			if ids := historyIDs(t, r, "bound-b"); len(ids) != 0 {
				t.Fatalf("room bound-b holds %v", ids)
			}
			// The true resend is answered with Bob's event.
			again := post("bob", "bound-a", `{"data":"bob"}`)
			if id := publishedID(again); id != bob || again.Header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("Bob's resend answered %s (replayed %q); want %s, replayed", id, again.Header.Get("Idempotent-Replayed"), bob)
			}
			if ids := historyIDs(t, r, "bound-a"); len(ids) != 2 || ids[0] != bob {
				t.Fatalf("room bound-a holds %v; want Bob's %s and Mallory's event", ids, bob)
			}
		})
	}
}

// Redis refuses a script's first write when it is out of memory, but a
// volatile publish wrote nothing before PUBLISH: it went out live, then the
// token's record was refused, and the answer was 503 backbone_unavailable
// ("nothing was stored, a plain retry is safe"): a retry delivered it twice.
// Now the record is written before anything is published, so an OOM refuses
// the whole publish.
func TestPublishRefusedOutOfMemoryDeliversNothing(t *testing.T) {
	srv := redistest.NewServer(t)
	admin := srv.Client()
	t.Cleanup(func() { _ = admin.Close() })
	r := startRedisRelay(t, srv.URL(), 5*time.Second)
	header := relaytest.Bearer(relaytest.APIKey)
	s := r.Subscribe(t, "/v1/rooms/oom/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.APIKey)})
	defer s.Close()
	s.Connected(t)
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	// Below what Redis already uses: every command that may grow memory
	// is refused.
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"event":"v","data":"volatile","volatile":true}`, `{"event":"s","data":"stored"}`} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/oom/events",
			Header: http.Header{"Authorization": header["Authorization"], "Content-Type": {"application/json"}}, Body: []byte(body)})
		checkError(t, resp, http.StatusServiceUnavailable, "backbone_unavailable")
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	marker := r.Publish(t, "/v1/rooms/oom/events", "application/json", []byte(`{"event":"marker","data":1}`), header)
	for _, ev := range s.UntilEventID(t, *marker.ID) {
		if ev.Event == "v" || ev.Event == "s" {
			t.Errorf("a publish answered 503 backbone_unavailable was delivered: %s %s", ev.Event, ev.Data)
		}
	}
}

// go-redis retries a publish whose reply was lost; when the retry could not
// even connect (the link to Redis went down just after Redis ran the
// script), the dial error of the last attempt was read as "nothing was
// sent": 503 backbone_unavailable, inviting a plain retry, for an event
// stored and delivered. Publish now knows whether any attempt was written.
func TestPublishLostReplyThenUnreachableIsUnknown(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	r := startRedisRelay(t, proxy.URL(), 5*time.Second)
	key := relaytest.Bearer(relaytest.APIKey)
	r.Publish(t, "/v1/rooms/cut/events", "application/json", []byte(`{"data":"warm-up"}`), key)
	proxy.LoseReplyAndGoDown(func(req []byte) bool { return strings.Contains(string(req), "reply-to-lose") })
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/cut/events",
		Header: http.Header{"Authorization": key["Authorization"], "Content-Type": {"application/json"}},
		Body:   []byte(`{"data":"reply-to-lose"}`)})
	if proxy.Lost() != 1 {
		t.Fatal("the proxy lost no reply: the test did not test")
	}
	checkError(t, resp, http.StatusServiceUnavailable, "outcome_unknown")
	if !strings.HasPrefix(resp.Header.Get("Idempotency-Key"), "rt_") {
		t.Fatalf("503 outcome_unknown with Idempotency-Key %q; want the publish's token", resp.Header.Get("Idempotency-Key"))
	}
	// The event is stored: Redis ran the script.
	admin := srv.Client()
	defer admin.Close()
	n, err := admin.XLen(context.Background(), "roomcast:h:cut").Result()
	if err != nil || n != 2 {
		t.Fatalf("Redis holds %d events of the room (%v); want the warm-up and the lost one", n, err)
	}
}

// A token is accepted while it is within PublishTokenWindow of the clock,
// minted in the past or the future, but its record lived a fixed time from
// its write: a token minted ahead of the clock outlived its record, and a
// resend in between was stored a second time. Records now live until the
// token is refused.
func TestPublishTokenFromTheFutureOutlivesNoRecord(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		var mu sync.Mutex
		now := time.Now()
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		r := relaytest.Start(t, relaytest.Options{Memory: memory.Options{Now: clock}})
		token := rooms.NewPublishToken(now.Add(rooms.PublishTokenWindow - 10*time.Second)).String()
		h := http.Header{"Idempotency-Key": {token}}
		first := r.Publish(t, "/v1/rooms/ahead/events", "application/json", []byte(`{"data":1}`), h)
		mu.Lock()
		now = now.Add(rooms.PublishTokenWindow + rooms.PublishTokenSkew + 10*time.Second)
		mu.Unlock()
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/ahead/events",
			Header: http.Header{"Idempotency-Key": {token}, "Content-Type": {"application/json"}}, Body: []byte(`{"data":1}`)})
		if resp.Status != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("resend within the token's window: %d (replayed %q) %s; want 202, replayed", resp.Status, resp.Header.Get("Idempotent-Replayed"), resp.Body)
		}
		if ids := historyIDs(t, r, "ahead"); len(ids) != 1 || ids[0] != *first.ID {
			t.Fatalf("history holds %v; want only %s", ids, *first.ID)
		}
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.NewServer(t)
		r := startRedisRelay(t, srv.URL(), 5*time.Second)
		ahead := rooms.PublishTokenWindow - 10*time.Second
		minted := time.Now().Add(ahead)
		token := rooms.NewPublishToken(minted).String()
		h := relaytest.Bearer(relaytest.APIKey)
		h.Set("Idempotency-Key", token)
		r.Publish(t, "/v1/rooms/ahead/events", "application/json", []byte(`{"data":1}`), h)
		admin := srv.Client()
		defer admin.Close()
		bucket := "roomcast:t:" + strconv.FormatInt(minted.Unix(), 10)
		ttl, err := admin.PTTL(context.Background(), bucket).Result()
		if err != nil {
			t.Fatal(err)
		}
		// The token is accepted until minted+window on this clock, and on
		// an instance up to PublishTokenSkew behind until skew later.
		if want := ahead + rooms.PublishTokenWindow + rooms.PublishTokenSkew - 5*time.Second; ttl < want {
			t.Fatalf("the record of a token minted %v ahead expires in %v; it is accepted for %v", ahead, ttl, ahead+rooms.PublishTokenWindow)
		}
	})
}
