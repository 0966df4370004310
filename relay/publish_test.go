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

	"github.com/roomcast/roomcast/relay/internal/relaytest"
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
