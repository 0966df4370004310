package relay_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// eventIDPattern is the shape of an event id: "<epoch>-<seq>".
var eventIDPattern = regexp.MustCompile(`^[0-9a-f]+-[1-9][0-9]*$`)

// hostile holds every byte that could end an SSE field or line, fake
// fields, NUL, a BOM and the JavaScript line separators.
const hostile = "line1\nline2\r\nline3\rid: 666\n\nevent: evil\r\rdata: injected\n\r\n: comment\x00\ufeff\u2028\u2029\"\\</script>"

// TestPublishBodies publishes every kind of body and reads it back through
// r3labs/sse: the data must decode back exactly, named as asked, and the
// framing must survive (the marker published next arrives intact).
func TestPublishBodies(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	big := bytes.Repeat([]byte("\"quoted\"\nline\\\x01"), (64<<10-1)/15) // an envelope far past 64 KiB of line
	notUTF8 := []byte{0xff, 0xfe, 0x00, '\n', '\r', 'a', 0xc3}
	cases := []struct {
		name        string
		contentType string
		query       string
		body        []byte
		wantEvent   string
		wantData    string // the envelope's data, compact JSON; "" to compare rawBody
		rawBody     []byte // the body data must decode back to
		base64      bool
	}{
		{"json object", "application/json", "", []byte(`{"event":"chat","data":{"text":"hi","n":[1, 2]}}`), "chat", `{"text":"hi","n":[1,2]}`, nil, false},
		{"json whitespace compacted", "application/json; charset=utf-8", "", []byte(" {\r\n \"data\" :\t[ 1 ,\n 2 ] }\n"), "message", `[1,2]`, nil, false},
		{"json without data", "application/json", "", []byte(`{}`), "message", `null`, nil, false},
		{"json scalar data", "application/json", "", []byte(`{"data":"x","event":"a.b:c-d_1"}`), "a.b:c-d_1", `"x"`, nil, false},
		{"json suffix type", "application/vnd.example+json", "", []byte(`{"data":true}`), "message", `true`, nil, false},
		{"json with escaped line breaks", "application/json", "", []byte(`{"data":{"s":"a\nb\r\nid: 1\n\ndata: x\u2028"}}`), "message", `{"s":"a\nb\r\nid: 1\n\ndata: x\u2028"}`, nil, false},
		{"json query event ignored", "application/json", "?event=other", []byte(`{"data":1}`), "message", `1`, nil, false},
		{"text", "text/plain", "?event=note", []byte("hello world"), "note", "", []byte("hello world"), false},
		{"form, as curl -d sends it", "application/x-www-form-urlencoded", "", []byte("text=hi+there&x=1%0A"), "message", "", []byte("text=hi+there&x=1%0A"), false},
		{"no content type", "", "", []byte("raw"), "message", "", []byte("raw"), false},
		{"empty text", "text/plain", "", []byte{}, "message", `""`, nil, false},
		{"hostile text", "text/plain", "?event=x", []byte(hostile), "x", "", []byte(hostile), false},
		{"not UTF-8", "application/octet-stream", "", notUTF8, "message", "", notUTF8, true},
		{"not UTF-8 text", "text/plain", "", append([]byte(hostile), 0xff), "message", "", append([]byte(hostile), 0xff), true},
		{"large", "text/plain", "", big, "message", "", big, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := "bodies" + strconv.Itoa(i)
			s := r.Subscribe(t, "/v1/rooms/"+room+"/events", relaytest.StreamOptions{})
			s.Connected(t)
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/" + room + "/events" + tc.query,
				Header: contentType(tc.contentType), Body: tc.body})
			if resp.Status != http.StatusAccepted {
				t.Fatalf("status %d: %s", resp.Status, resp.Body)
			}
			if got, want := objectKeys(t, resp.Body), sorted("id", "room", "event"); !slices.Equal(got, want) {
				t.Errorf("answer keys %v, want %v", got, want)
			}
			var p relaytest.Published
			resp.JSON(t, &p)
			if p.ID == nil || !eventIDPattern.MatchString(*p.ID) || p.Room != room || p.Event != tc.wantEvent {
				t.Errorf("answer %s, want an id, room %s, event %s", resp.Body, room, tc.wantEvent)
			}

			ev := s.Expect(t, tc.wantEvent)
			env := ev.Envelope(t)
			if env.ID == nil || p.ID == nil || *env.ID != *p.ID {
				t.Errorf("envelope id %v, want %v", env.ID, p.ID)
			}
			if tc.wantData != "" && string(env.Data) != tc.wantData {
				t.Errorf("data %s, want %s", env.Data, tc.wantData)
			}
			if tc.rawBody != nil {
				var s string
				if err := json.Unmarshal(env.Data, &s); err != nil {
					t.Fatalf("data %.100s is not a JSON string: %v", env.Data, err)
				}
				got := []byte(s)
				if tc.base64 {
					if got, err := base64.StdEncoding.DecodeString(s); err != nil {
						t.Fatalf("data %q is not base64: %v", s, err)
					} else if !bytes.Equal(got, tc.rawBody) {
						t.Errorf("data decodes to %q, want %q", got, tc.rawBody)
					}
				} else if !bytes.Equal(got, tc.rawBody) {
					t.Errorf("data %.100q, want %.100q", got, tc.rawBody)
				}
			}
			wantEncoding := ""
			if tc.base64 {
				wantEncoding = "base64"
			}
			if env.Encoding != wantEncoding || strings.Contains(ev.Data, `"encoding"`) != tc.base64 {
				t.Errorf("encoding %q in %.200s, want %q", env.Encoding, ev.Data, wantEncoding)
			}

			// Nothing was injected: the next event is the marker.
			marker := r.PublishJSON(t, room, map[string]any{"event": "marker"})
			if got := s.NextEvent(t); got.Event != "marker" || got.EventID(t) != marker {
				t.Errorf("after the event came %q %.100s, want the marker", got.Event, got.Data)
			}
		})
	}
}

func contentType(ct string) http.Header {
	if ct == "" {
		return nil
	}
	return http.Header{"Content-Type": {ct}}
}

// TestPublishVolatile checks that a volatile event has a null id in the
// answer and the envelope, no id line, and no place in history.
func TestPublishVolatile(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.OpenRaw(t, "/v1/rooms/vol/events", nil)
	s.Frame(t)
	s.EventFrame(t) // roomcast:connected
	for _, tc := range []struct {
		name, contentType, path string
		body                    string
	}{
		{"json", "application/json", "/v1/rooms/vol/events", `{"volatile":true,"data":{"x":1}}`},
		{"raw", "text/plain", "/v1/rooms/vol/events?volatile=true", `typing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: tc.path, Header: contentType(tc.contentType), Body: []byte(tc.body)})
			if resp.Status != http.StatusAccepted {
				t.Fatalf("status %d: %s", resp.Status, resp.Body)
			}
			if obj := resp.Object(t); string(obj["id"]) != "null" || string(obj["room"]) != `"vol"` || string(obj["event"]) != `"message"` {
				t.Errorf("answer %s, want id null", resp.Body)
			}
			frame, ev := s.EventFrame(t)
			if strings.Contains(frame, "id: ") || ev.HasID {
				t.Errorf("volatile frame %q has an id line", frame)
			}
			if env := (relaytest.Event{Data: ev.Data}).Envelope(t); env.ID != nil {
				t.Errorf("volatile envelope id %v, want null", *env.ID)
			}
		})
	}
	var h struct {
		Events []json.RawMessage `json:"events"`
	}
	r.Get(t, "/v1/rooms/vol/history").JSON(t, &h)
	if len(h.Events) != 0 {
		t.Errorf("history holds volatile events: %s", h.Events)
	}
}

// TestPublishExcludeSelf checks that exclude_self skips every connection of
// the sender's client, live and on replay after a reconnect, and nobody else.
func TestPublishExcludeSelf(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	const alice, bob = "alice-client", "bob-client-1"
	path := func(client string) string { return "/v1/rooms/chat/events?client=" + client }
	alice1 := r.Subscribe(t, path(alice), relaytest.StreamOptions{})
	first := alice1.Connected(t)
	sender := first.Connection
	// Alice's id is hers: her other streams come with its proof.
	alice2 := r.Subscribe(t, path(alice)+"&proof="+first.Proof, relaytest.StreamOptions{})
	bobS := r.Subscribe(t, path(bob), relaytest.StreamOptions{})
	alice2.Connected(t)
	bobS.Connected(t)
	from := http.Header{"Roomcast-Connection": {sender}}
	publish := func(body string) string {
		t.Helper()
		return *r.Publish(t, "/v1/rooms/chat/events", "application/json", []byte(body), from).ID
	}

	excluded := publish(`{"data":"not for alice","exclude_self":true}`)
	marker := r.PublishJSON(t, "chat", map[string]any{"event": "marker"})
	if got := bobS.Expect(t, "message"); got.EventID(t) != excluded || *got.Envelope(t).Client != alice {
		t.Errorf("bob got %s, want %s from %s", got.Data, excluded, alice)
	}
	bobS.Expect(t, "marker")
	for name, s := range map[string]*relaytest.Stream{"alice1": alice1, "alice2": alice2} {
		if got := s.NextEvent(t); got.Event != "marker" || got.EventID(t) != marker {
			t.Errorf("%s got %q %s before the marker", name, got.Event, got.Data)
		}
	}

	// Without exclude_self the sender gets its own event, stamped with its client.
	own := publish(`{"data":"for everyone"}`)
	for name, s := range map[string]*relaytest.Stream{"alice1": alice1, "alice2": alice2, "bob": bobS} {
		if got := s.NextEvent(t).Envelope(t); *got.ID != own || got.Client == nil || *got.Client != alice {
			t.Errorf("%s got %+v, want %s from %s", name, got, own, alice)
		}
	}

	// Replay after a reconnect skips it too, by client id.
	cursor := alice2.LastEventID()
	alice2.Close()
	excluded = publish(`{"data":"missed, not for alice","exclude_self":true}`)
	marker = r.PublishJSON(t, "chat", map[string]any{"event": "marker"})
	back := r.Subscribe(t, path(alice)+"&proof="+first.Proof, relaytest.StreamOptions{LastEventID: cursor})
	back.Connected(t)
	if got := back.NextEvent(t); got.Event != "marker" || got.EventID(t) != marker {
		t.Errorf("alice on replay got %q %s, want only the marker", got.Event, got.Data)
	}
	carol := r.Subscribe(t, path("carol-client"), relaytest.StreamOptions{LastEventID: cursor})
	carol.Connected(t)
	if got := carol.Until(t, func(relaytest.Event) bool { return true }); got[0].EventID(t) != excluded {
		t.Errorf("carol on replay got %s, want %s", got[0].Data, excluded)
	}
	carol.Expect(t, "marker")
}

// TestPublishExcludeSelfPoller checks that the token of a poll answer
// proves the poller's client for exclude_self.
func TestPublishExcludeSelfPoller(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	var first pollAnswer
	r.Get(t, "/v1/rooms/pc/poll?client=poller-0001").JSON(t, &first)
	if first.Client != "poller-0001" || !strings.HasPrefix(first.Connection, "poller-0001.") {
		t.Fatalf("poll answer client %q connection %q", first.Client, first.Connection)
	}
	excluded := *r.Publish(t, "/v1/rooms/pc/events", "application/json", []byte(`{"data":1,"exclude_self":true}`),
		http.Header{"Roomcast-Connection": {first.Connection}}).ID
	kept := r.PublishJSON(t, "pc", map[string]any{"data": 2})
	var own, other pollAnswer
	r.Get(t, "/v1/rooms/pc/poll?client=poller-0001&proof="+first.Connection+"&cursor="+first.Cursor).JSON(t, &own)
	if got := envelopeIDs(t, own.Events); !slices.Equal(got, []string{kept}) {
		t.Errorf("the sender polled %v, want only %s", got, kept)
	}
	r.Get(t, "/v1/rooms/pc/poll?client=poller-0002&cursor="+first.Cursor).JSON(t, &other)
	if got := envelopeIDs(t, other.Events); !slices.Equal(got, []string{excluded, kept}) {
		t.Errorf("another poller got %v, want %s and %s", got, excluded, kept)
	}
}

// TestPublishIdempotent checks that a retried publish answers the first
// answer and publishes once.
func TestPublishIdempotent(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.Subscribe(t, "/v1/rooms/idem/events", relaytest.StreamOptions{})
	s.Connected(t)
	var answers []*relaytest.Response
	for _, body := range []string{`{"data":"once"}`, `{"data":"once"}`, `{"data":"changed"}`} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/idem/events",
			Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"order-42 retry"}}, Body: []byte(body)})
		if resp.Status != http.StatusAccepted {
			t.Fatalf("status %d: %s", resp.Status, resp.Body)
		}
		answers = append(answers, resp)
	}
	for i, a := range answers[1:] {
		if !bytes.Equal(a.Body, answers[0].Body) {
			t.Errorf("retry %d answered %s, want %s", i+1, a.Body, answers[0].Body)
		}
		if a.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry %d lacks Idempotent-Replayed", i+1)
		}
	}
	marker := r.PublishJSON(t, "idem", map[string]any{"event": "marker"})
	got := s.Until(t, func(ev relaytest.Event) bool { return ev.Event == "marker" })
	if len(got) != 2 || string(got[0].Envelope(t).Data) != `"once"` || got[1].EventID(t) != marker {
		t.Errorf("subscriber got %v, want the event once, then the marker", got)
	}
}

// TestPublishMultiRoom checks POST /v1/events: one id for every room, and a
// connection in two of them gets it once, live and on resume.
func TestPublishMultiRoom(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	const multiPath = "/v1/stream?room=a&room=b&client=multi-client"
	multi := r.Subscribe(t, multiPath, relaytest.StreamOptions{})
	first := multi.Connected(t)
	if !slices.Equal(first.Rooms, []string{"a", "b"}) {
		t.Fatalf("rooms %v", first.Rooms)
	}
	single := r.Subscribe(t, "/v1/rooms/c/events", relaytest.StreamOptions{})
	single.Connected(t)

	publish := func(rooms ...string) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"rooms": rooms, "event": "news", "data": len(rooms)})
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/events", Header: contentType("application/json"), Body: body})
		if resp.Status != http.StatusAccepted {
			t.Fatalf("status %d: %s", resp.Status, resp.Body)
		}
		if got, want := objectKeys(t, resp.Body), sorted("id", "rooms", "event"); !slices.Equal(got, want) {
			t.Errorf("answer keys %v, want %v", got, want)
		}
		var p relaytest.Published
		resp.JSON(t, &p)
		if p.ID == nil || !eventIDPattern.MatchString(*p.ID) || !slices.Equal(p.Rooms, rooms) || p.Event != "news" {
			t.Fatalf("answer %s", resp.Body)
		}
		return *p.ID
	}
	checkOnce := func(s *relaytest.Stream, id, marker string) {
		t.Helper()
		got := s.UntilEventID(t, marker)
		if len(got) != 2 || got[0].EventID(t) != id {
			t.Fatalf("got %v, want %s once, then the marker", got, id)
		}
		env := got[0].Envelope(t)
		if !slices.Equal(env.Rooms, []string{"a", "b", "c"}) || (env.Room != "a" && env.Room != "b") {
			t.Errorf("envelope rooms %v room %q", env.Rooms, env.Room)
		}
	}

	live := publish("a", "b", "c")
	checkOnce(multi, live, r.PublishJSON(t, "b", map[string]any{}))
	if env := single.NextEvent(t).Envelope(t); *env.ID != live || env.Room != "c" {
		t.Errorf("room c got %+v, want %s through c", env, live)
	}

	cursor := multi.LastEventID()
	multi.Close()
	missed := publish("a", "b", "c")
	marker := r.PublishJSON(t, "a", map[string]any{})
	back := r.Subscribe(t, multiPath+"&proof="+first.Proof, relaytest.StreamOptions{LastEventID: cursor})
	back.Connected(t)
	checkOnce(back, missed, marker)

	for _, room := range []string{"a", "b", "c"} {
		var h struct {
			Events []json.RawMessage `json:"events"`
		}
		r.Get(t, "/v1/rooms/"+room+"/history").JSON(t, &h)
		if ids := envelopeIDs(t, h.Events); !slices.Contains(ids, live) || !slices.Contains(ids, missed) {
			t.Errorf("history of %s %v lacks %s or %s", room, ids, live, missed)
		}
	}
}

// envelopeIDs returns the ids of raw envelopes.
func envelopeIDs(t *testing.T, events []json.RawMessage) []string {
	t.Helper()
	out := []string{}
	for _, e := range events {
		out = append(out, relaytest.Event{Data: string(e)}.EventID(t))
	}
	return out
}

// TestIdempotencyKeysBoundedUnderRacingRetries: publishes racing with the
// same new key, some refused by a rate and one stored, must leave the key
// counted: a caller storing keys past its bound only had to send, beside
// each publish, copies of it that its rate refuses, when a refused copy
// that had held the key first took it back.
func TestIdempotencyKeysBoundedUnderRacingRetries(t *testing.T) {
	const copies = 8
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone},
		// A rate spent at once: every publish there past the first is
		// refused, after its key was held.
		Named: map[string]rooms.NamespaceOptions{"spent": {Anonymous: true, Publish: rooms.PublishAnyone,
			PublishRate: 0.001, PublishBurst: 1}},
	}
	o := relaytest.Options{
		Relay: relay.Options{Namespaces: ns, Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1000,
			PublishCallerRate: 1e6, PublishCallerBurst: 1e6}},
		Hub: rooms.HubOptions{Namespaces: ns},
	}
	r := startMetered(t, o)
	send := func(room, key string) int {
		req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/rooms/"+room+"/events", strings.NewReader(`{"event":"e","data":"x"}`))
		if err != nil {
			t.Error(err)
			return 0
		}
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := send("spent:r", ""); s != http.StatusAccepted {
		t.Fatalf("spending the namespace's rate: %d", s)
	}
	for i := range 200 {
		key := fmt.Sprintf("retry-%d", i)
		statuses := make(chan int, copies+1)
		for j := range copies + 1 {
			room := "spent:r"
			if j == copies/2 {
				room = "lobby"
			}
			go func() { statuses <- send(room, key) }()
		}
		for range copies + 1 {
			<-statuses
		}
	}
	// Every key the backbone stored for the caller is one it counts.
	g := gauges(t, r)
	if counted, stored := g["roomcast_idempotency_keys"], g["roomcast_backbone_idempotency_keys"]; counted < stored || stored == 0 {
		t.Fatalf("%v keys counted against the caller, %v stored", counted, stored)
	}
}

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

// TestNamespaceBroadcast: an event to a namespace reaches every connection
// in at least one of its rooms exactly once, nobody outside it, and is
// covered by resume.
func TestNamespaceBroadcast(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	aliceToken := relaytest.Token(t, "alice", time.Hour, nil)
	alice := relaytest.BearerMap(aliceToken)
	both := r.Subscribe(t, "/v1/stream?room=team-1,team-2", relaytest.StreamOptions{Header: alice})
	both.Connected(t)
	single := r.Subscribe(t, "/v1/rooms/team-3/events", relaytest.StreamOptions{Header: alice})
	single.Connected(t)
	outside := r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{})
	outside.Connected(t)
	userOnly := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: alice})
	userOnly.Connected(t)

	resp := postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce","data":"to default"}`)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("broadcast: status %d: %s", resp.Status, resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil || p.Event != "announce" {
		t.Fatalf("answer %s", resp.Body)
	}
	count := func(s *relaytest.Stream, marker string) int {
		n := 0
		for _, ev := range s.UntilEventID(t, marker) {
			if ev.Event == "announce" {
				n++
			}
		}
		return n
	}
	bob := userHeader(t, "bob")
	if n := count(both, publishAs(t, r, "team-1", bob, `{}`)); n != 1 {
		t.Errorf("a connection in two rooms of the namespace got the broadcast %d times", n)
	}
	if n := count(single, publishAs(t, r, "team-3", bob, `{}`)); n != 1 {
		t.Errorf("a single-room stream got the broadcast %d times", n)
	}
	if n := count(outside, publishAs(t, r, "public:lobby", bob, `{}`)); n != 0 {
		t.Errorf("a stream of another namespace got the broadcast %d times", n)
	}
	pm := postJSON(t, r, "/v1/users/alice/events", server(), `{}`)
	var pp relaytest.Published
	pm.JSON(t, &pp)
	if n := count(userOnly, *pp.ID); n != 0 {
		t.Errorf("a stream in no room got the broadcast %d times", n)
	}

	// Resume covers it, for single- and multi-room streams.
	lastBoth, lastSingle := both.LastEventID(), single.LastEventID()
	both.Close()
	single.Close()
	missed := postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce","data":"missed"}`)
	missed.JSON(t, &p)
	for name, path := range map[string]string{lastBoth: "/v1/stream", lastSingle: "/v1/rooms/team-3/events"} {
		s := r.Subscribe(t, path, relaytest.StreamOptions{Header: alice, LastEventID: name})
		s.Connected(t)
		// What the client had not received before it left comes back
		// (such as the private message above), then the broadcast, once.
		if n := count(s, *p.ID); n != 1 {
			t.Errorf("%s resumed with the missed broadcast %d times", path, n)
		}
	}
	// Leaving the namespace's last room stops broadcasts.
	s := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: alice})
	conn := s.Connected(t).Connection
	if resp := r.Do(t, relaytest.Request{Method: http.MethodDelete, Path: "/v1/connections/" + conn + "/rooms/team-1", Header: relaytest.Bearer(aliceToken)}); resp.Status != http.StatusNoContent {
		t.Fatalf("leave: %d %s", resp.Status, resp.Body)
	}
	s.Expect(t, "roomcast:left")
	postJSON(t, r, "/v1/namespaces/default/events", server(), `{"event":"announce"}`)
	pm = postJSON(t, r, "/v1/users/alice/events", server(), `{}`)
	pm.JSON(t, &pp)
	if n := count(s, *pp.ID); n != 0 {
		t.Errorf("a stream that left the namespace got %d broadcasts", n)
	}
}

// publishPath is one way to publish: to target i (a room, or a user) of
// namespace ns, with data as the event's data.
type publishPath struct {
	name string
	// private: the path sends private messages, which belong to no
	// namespace, so namespace rules do not govern them.
	private bool
	request func(ns string, i int, data string) relaytest.Request
}

// companionRoom is a room anyone may publish to: a multi-room publish
// lists it first, so that a refusal proves the rule was applied to a room
// that was not the first.
const companionRoom = "pub:other"

var publishPaths = []publishPath{
	{name: "room", request: func(ns string, i int, data string) relaytest.Request {
		return jsonPost(fmt.Sprintf("/v1/rooms/%s:r%d/events", ns, i), `{"data":`+data+`}`)
	}},
	{name: "multi-room", request: func(ns string, i int, data string) relaytest.Request {
		return jsonPost("/v1/events", fmt.Sprintf(`{"rooms":[%q,"%s:r%d"],"data":%s}`, companionRoom, ns, i, data))
	}},
	{name: "namespace", request: func(ns string, _ int, data string) relaytest.Request {
		return jsonPost("/v1/namespaces/"+ns+"/events", `{"data":`+data+`}`)
	}},
	{name: "private", private: true, request: func(_ string, i int, data string) relaytest.Request {
		return jsonPost(fmt.Sprintf("/v1/users/u%d/events", i), `{"data":`+data+`}`)
	}},
}

func jsonPost(path, body string) relaytest.Request {
	return relaytest.Request{Method: http.MethodPost, Path: path, Body: []byte(body),
		Header: http.Header{"Content-Type": {"application/json"}}}
}

// policyNamespaces are the namespaces of TestPublishPolicyEveryPath: auth
// (a token needed; the default), pub (anyone), srv (the server only), tiny
// (64-byte bodies), slow (2 publishes, then one per 100 s).
func policyNamespaces() *rooms.Namespaces {
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated}
	pub, srv, tiny, slow := base, base, base, base
	pub.Anonymous, pub.Publish = true, rooms.PublishAnyone
	srv.Publish = rooms.PublishServer
	tiny.MaxPayload = 64
	slow.PublishRate, slow.PublishBurst = 0.01, 2
	return &rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{
		"auth": base, "pub": pub, "srv": srv, "tiny": tiny, "slow": slow,
	}}
}

// TestPublishPolicyEveryPath runs every publish rule through every publish
// path over HTTP: one policy decides them all. Private messages go to no
// namespace: the namespace rules (who may publish, strict namespaces, a
// namespace's payload and rate) do not apply to them, the rest does — the
// token's publish patterns included ("#user:<recipient>").
func TestPublishPolicyEveryPath(t *testing.T) {
	t.Parallel()
	alice := func(t *testing.T) http.Header { return userHeader(t, "alice") }
	anonymous := func(*testing.T) http.Header { return nil }
	small := `"x"`
	big := func(n int) string { return `"` + strings.Repeat("x", n) + `"` }
	type outcome struct {
		status int
		code   string
	}
	accepted := outcome{http.StatusAccepted, ""}
	rules := []struct {
		name   string
		mod    func(*relaytest.Options)
		setup  func(t *testing.T, r *relaytest.Relay)
		caller func(*testing.T) http.Header
		// warm publishes go first, each to warmNS(i) target i; then the
		// checked one goes to ns.
		warm   int
		warmNS func(i int) string
		ns     string
		data   string
		want   outcome
		// private is the outcome for private messages when it differs.
		private *outcome
	}{
		{name: "allowed", caller: alice, ns: "auth", data: small, want: accepted},
		{name: "authorisation: only the server publishes", caller: alice, ns: "srv", data: small,
			want: outcome{403, "forbidden"}, private: &accepted},
		{name: "authorisation: the server may", caller: func(*testing.T) http.Header { return server() }, ns: "srv", data: small, want: accepted},
		{name: "anonymous where a token is needed", caller: anonymous, ns: "auth", data: small,
			want: outcome{401, "unauthenticated"}},
		{name: "anonymous where anyone may", caller: anonymous, ns: "pub", data: small,
			want: accepted, private: &outcome{401, "unauthenticated"}},
		{name: "publish patterns", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{"pub:*", "auth:allowed"}}}))
		}, ns: "auth", data: small, want: outcome{403, "forbidden"}},
		{name: "publish patterns that allow every path", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{"pub:*", "auth:*", "#user:*"}}}))
		}, ns: "auth", data: small, want: accepted},
		{name: "publish patterns: none", caller: func(t *testing.T) http.Header {
			return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"rooms": map[string]any{
				"publish": []string{}}}))
		}, ns: "pub", data: small, want: outcome{403, "forbidden"}},
		{name: "bans", caller: alice, ns: "pub", data: small, want: outcome{403, "banned"},
			setup: func(t *testing.T, r *relaytest.Relay) {
				if resp := postJSON(t, r, "/v1/moderation/bans", server(), `{"user":"alice","duration":"10m"}`); resp.Status != http.StatusCreated {
					t.Fatalf("ban: status %d: %s", resp.Status, resp.Body)
				}
			}},
		{name: "namespace max_payload", caller: alice, ns: "tiny", data: big(100),
			want: outcome{413, "payload_too_large"}, private: &accepted},
		{name: "global max_payload", caller: alice, ns: "auth", data: big(2000),
			want: outcome{413, "payload_too_large"}},
		{name: "namespace publish_rate", caller: alice, warm: 2, warmNS: func(int) string { return "slow" }, ns: "slow", data: small,
			want: outcome{429, "rate_limited"}, private: &accepted},
		{name: "global publish rate", caller: alice, warm: 2, warmNS: func(int) string { return "auth" }, ns: "auth", data: small,
			mod:  func(o *relaytest.Options) { o.Relay.Limits.PublishRate, o.Relay.Limits.PublishBurst = 0.01, 2 },
			want: outcome{429, "rate_limited"}},
		{name: "per-caller total", caller: alice, warm: 3, warmNS: func(i int) string { return fmt.Sprintf("c%d", i) }, ns: "c9", data: small,
			mod: func(o *relaytest.Options) {
				o.Relay.Limits.PublishCallerRate, o.Relay.Limits.PublishCallerBurst = 0.01, 3
			},
			want: outcome{429, "rate_limited"}},
		{name: "per-caller total: the server is exempt", caller: func(*testing.T) http.Header { return server() },
			warm: 5, warmNS: func(i int) string { return fmt.Sprintf("c%d", i) }, ns: "c9", data: small,
			mod: func(o *relaytest.Options) {
				o.Relay.Limits.PublishCallerRate, o.Relay.Limits.PublishCallerBurst = 0.01, 3
			},
			want: accepted},
		{name: "strict namespaces", caller: alice, ns: "nope", data: small,
			mod:  func(o *relaytest.Options) { o.Relay.Namespaces.Strict = true },
			want: outcome{404, "unknown_namespace"}, private: &accepted},
	}
	for _, rule := range rules {
		for _, path := range publishPaths {
			t.Run(rule.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				opts := relaytest.Options{Relay: relay.Options{
					Auth:       relaytest.NewAuth(t, auth.Config{}),
					Namespaces: policyNamespaces(),
					MaxPayload: 1024,
				}}
				if rule.mod != nil {
					rule.mod(&opts)
				}
				r := relaytest.Start(t, opts)
				if rule.setup != nil {
					rule.setup(t, r)
				}
				caller := rule.caller(t)
				send := func(ns string, i int) *relaytest.Response {
					req := path.request(ns, i, rule.data)
					for k, v := range caller {
						req.Header[k] = v
					}
					return r.Do(t, req)
				}
				for i := range rule.warm {
					if resp := send(rule.warmNS(i), i); resp.Status != http.StatusAccepted {
						t.Fatalf("publish %d before the checked one: status %d: %s", i, resp.Status, resp.Body)
					}
				}
				want := rule.want
				if path.private && rule.private != nil {
					want = *rule.private
				}
				resp := send(rule.ns, rule.warm)
				if want.code == "" {
					if resp.Status != want.status {
						t.Fatalf("status %d, want %d: %s", resp.Status, want.status, resp.Body)
					}
					return
				}
				wantError(t, resp, want.status, want.code)
				if want.status == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
					t.Error("a 429 without Retry-After")
				}
				// A refused publish is not retained.
				var hist struct{ Events []json.RawMessage }
				r.Do(t, relaytest.Request{Path: "/v1/rooms/" + companionRoom + "/history", Header: server()}).JSON(t, &hist)
				if path.name == "multi-room" && len(hist.Events) != rule.warm {
					t.Errorf("%s holds %d events, want the %d accepted before", companionRoom, len(hist.Events), rule.warm)
				}
			})
		}
	}
}

// startOnRedis runs an open relay on a Redis backbone under prefix and
// returns its base URL; relays started with the same prefix are instances
// of one deployment.
func startOnRedis(t *testing.T, url, prefix string, limits relay.Limits) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bb, err := redis.New(ctx, url, redis.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := rooms.NewCursorCodec([]byte("publish policy test cursor key!!"))
	if err != nil {
		t.Fatal(err)
	}
	hub := rooms.NewHub(bb, codec, rooms.HubOptions{})
	if err := hub.Start(ctx); err != nil {
		_ = bb.Close()
		t.Fatal(err)
	}
	srv := relay.New(hub, relay.Options{Limits: limits,
		Logger: slog.New(slog.DiscardHandler)})
	srv.SetReady()
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		srv.Close()
		_ = bb.Close()
	})
	return ts.URL
}
