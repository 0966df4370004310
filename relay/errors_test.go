package relay_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

const (
	testMaxPayload = 1024
	testMaxRooms   = 3
)

// checkError asserts an answer is exactly {"error":{"code","message"}}
// with the given status and code.
func checkError(t *testing.T, resp *relaytest.Response, status int, code string) {
	t.Helper()
	if resp.Status != status {
		t.Errorf("status %d, want %d: %s", resp.Status, status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if got := objectKeys(t, resp.Body); !slices.Equal(got, []string{"error"}) {
		t.Fatalf("answer keys %v, want [error]: %s", got, resp.Body)
	}
	detail := resp.Object(t)["error"]
	if got := objectKeys(t, detail); !slices.Equal(got, []string{"code", "message"}) {
		t.Errorf("error keys %v, want [code message]", got)
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(detail, &e); err != nil {
		t.Fatal(err)
	}
	if e.Code != code || e.Message == "" {
		t.Errorf("error %s, want code %q and a message", detail, code)
	}
}

// TestErrors answers every error code on its routes.
func TestErrors(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{
		Relay: relay.Options{MaxPayload: testMaxPayload},
		Hub:   rooms.HubOptions{MaxRooms: testMaxRooms},
	})
	single := r.Subscribe(t, "/v1/rooms/a/events", relaytest.StreamOptions{})
	full := r.Subscribe(t, "/v1/stream?room=a&room=b&room=c", relaytest.StreamOptions{})
	cursor := poll(t, r, "/v1/rooms/a/poll").Cursor
	placeholders := strings.NewReplacer(
		"{single}", single.Connected(t).Connection,
		"{full}", full.Connected(t).Connection,
		"{tampered}", relaytest.Tamper(cursor),
	)
	jsonType := http.Header{"Content-Type": {"application/json"}}
	tooMany := `{"rooms":["r0"` + strings.Repeat(`,"r"`, rooms.MaxEventRooms) + `]}`
	over := bytes.Repeat([]byte("x"), testMaxPayload+1)

	cases := []struct {
		name    string
		method  string
		path    string
		header  http.Header
		body    string
		chunked bool
		status  int
		code    string
		allow   string
	}{
		{"stream room with space", "GET", "/v1/rooms/no%20space/events", nil, "", false, 400, "invalid_room", ""},
		{"publish room with slash", "POST", "/v1/rooms/a%2Fb/events", nil, "x", false, 400, "invalid_room", ""},
		{"poll bad namespace", "GET", "/v1/rooms/BAD:x/poll", nil, "", false, 400, "invalid_room", ""},
		{"history all dots", "GET", "/v1/rooms/.../history", nil, "", false, 400, "invalid_room", ""},
		{"room name too long", "GET", "/v1/rooms/" + strings.Repeat("n", 129) + "/events", nil, "", false, 400, "invalid_room", ""},
		{"multi stream bad room", "GET", "/v1/stream?room=ok&room=bad%21", nil, "", false, 400, "invalid_room", ""},
		{"multi poll without room", "GET", "/v1/poll", nil, "", false, 400, "invalid_room", ""},
		{"multi publish bad room", "POST", "/v1/events", jsonType, `{"rooms":["ok","bad room"]}`, false, 400, "invalid_room", ""},
		{"join bad room", "PUT", "/v1/connections/{full}/rooms/bad%20room", nil, "", false, 400, "invalid_room", ""},

		{"raw event name", "POST", "/v1/rooms/a/events?event=bad%20name", nil, "x", false, 400, "invalid_event", ""},
		{"json event name", "POST", "/v1/rooms/a/events", jsonType, `{"event":"a/b"}`, false, 400, "invalid_event", ""},
		{"empty event name", "POST", "/v1/rooms/a/events", jsonType, `{"event":""}`, false, 400, "invalid_event", ""},
		{"long event name", "POST", "/v1/rooms/a/events", jsonType, `{"event":"` + strings.Repeat("e", 65) + `"}`, false, 400, "invalid_event", ""},

		{"json reserved event", "POST", "/v1/rooms/a/events", jsonType, `{"event":"roomcast:connected"}`, false, 400, "reserved_event", ""},
		{"raw reserved event", "POST", "/v1/rooms/a/events?event=roomcast:x", nil, "x", false, 400, "reserved_event", ""},
		{"multi reserved event", "POST", "/v1/events", jsonType, `{"rooms":["a"],"event":"roomcast:reset"}`, false, 400, "reserved_event", ""},

		{"truncated json", "POST", "/v1/rooms/a/events", jsonType, `{"data":`, false, 400, "invalid_json", ""},
		{"json array", "POST", "/v1/rooms/a/events", jsonType, `[1]`, false, 400, "invalid_json", ""},
		{"json null", "POST", "/v1/rooms/a/events", jsonType, `null`, false, 400, "invalid_json", ""},
		{"json unknown field", "POST", "/v1/rooms/a/events", jsonType, `{"evnt":"x"}`, false, 400, "invalid_json", ""},
		{"json two values", "POST", "/v1/rooms/a/events", jsonType, `{} {}`, false, 400, "invalid_json", ""},
		{"json wrong type", "POST", "/v1/rooms/a/events", jsonType, `{"event":1}`, false, 400, "invalid_json", ""},
		{"json not UTF-8", "POST", "/v1/rooms/a/events", jsonType, "{\"data\":\"\xff\"}", false, 400, "invalid_json", ""},
		{"json empty body", "POST", "/v1/rooms/a/events", jsonType, ``, false, 400, "invalid_json", ""},

		{"body with length", "POST", "/v1/rooms/a/events", nil, string(over), false, 413, "payload_too_large", ""},
		{"chunked body", "POST", "/v1/rooms/a/events", nil, string(over), true, 413, "payload_too_large", ""},
		{"large chunked body", "POST", "/v1/rooms/a/events", nil, strings.Repeat("x", 1<<20), true, 413, "payload_too_large", ""},
		{"multi chunked body", "POST", "/v1/events", jsonType, `{"rooms":["a"],"data":"` + string(over) + `"}`, true, 413, "payload_too_large", ""},

		{"multipart", "POST", "/v1/rooms/a/events", http.Header{"Content-Type": {"multipart/form-data; boundary=x"}}, "--x--", false, 415, "unsupported_media_type", ""},
		{"unparseable type", "POST", "/v1/rooms/a/events", http.Header{"Content-Type": {"text/"}}, "x", false, 415, "unsupported_media_type", ""},
		{"multi publish raw", "POST", "/v1/events", http.Header{"Content-Type": {"text/plain"}}, "x", false, 415, "unsupported_media_type", ""},

		{"unknown path", "GET", "/nope", nil, "", false, 404, "not_found", ""},
		{"room without action", "GET", "/v1/rooms/a", nil, "", false, 404, "not_found", ""},
		{"unknown v1 path", "POST", "/v1/nothing", nil, "", false, 404, "not_found", ""},

		{"delete events", "DELETE", "/v1/rooms/a/events", nil, "", false, 405, "method_not_allowed", "GET, POST"},
		{"put events", "PUT", "/v1/events", nil, "", false, 405, "method_not_allowed", "POST"},
		{"post poll", "POST", "/v1/rooms/a/poll", nil, "", false, 405, "method_not_allowed", "GET"},
		{"post healthz", "POST", "/healthz", nil, "", false, 405, "method_not_allowed", "GET"},
		{"get connection room", "GET", "/v1/connections/x/rooms/a", nil, "", false, 405, "method_not_allowed", "PUT, DELETE"},

		{"malformed cursor", "GET", "/v1/rooms/a/poll?cursor=not%20a%20cursor", nil, "", false, 400, "invalid_cursor", ""},
		{"tampered cursor", "GET", "/v1/rooms/a/poll?cursor={tampered}", nil, "", false, 400, "invalid_cursor", ""},
		{"multi poll tampered cursor", "GET", "/v1/poll?room=a&cursor={tampered}", nil, "", false, 400, "invalid_cursor", ""},

		{"join unknown", "PUT", "/v1/connections/nope/rooms/a", nil, "", false, 404, "unknown_connection", ""},
		{"leave unknown", "DELETE", "/v1/connections/nope/rooms/a", nil, "", false, 404, "unknown_connection", ""},
		{"sender unknown", "POST", "/v1/rooms/a/events", http.Header{"Roomcast-Connection": {"nope"}}, "x", false, 404, "unknown_connection", ""},
		{"sender forged token", "POST", "/v1/rooms/a/events", http.Header{"Roomcast-Connection": {"someone-else.AAAAAAAAAAAAAAAAAAAAAA"}}, "x", false, 404, "unknown_connection", ""},

		{"stream too many rooms", "GET", "/v1/stream?room=a&room=b&room=c&room=d", nil, "", false, 400, "too_many_rooms", ""},
		{"poll too many rooms", "GET", "/v1/poll?room=a,b,c,d", nil, "", false, 400, "too_many_rooms", ""},
		{"publish too many rooms", "POST", "/v1/events", jsonType, tooMany, false, 400, "too_many_rooms", ""},
		{"join one room too many", "PUT", "/v1/connections/{full}/rooms/d", nil, "", false, 400, "too_many_rooms", ""},

		{"timeout not a number", "GET", "/v1/rooms/a/poll?timeout=soon", nil, "", false, 400, "invalid_parameter", ""},
		{"timeout negative", "GET", "/v1/rooms/a/poll?timeout=-1", nil, "", false, 400, "invalid_parameter", ""},
		{"timeout above max", "GET", "/v1/rooms/a/poll?timeout=56", nil, "", false, 400, "invalid_parameter", ""},
		{"timeout NaN", "GET", "/v1/poll?room=a&timeout=NaN", nil, "", false, 400, "invalid_parameter", ""},
		{"timeout infinite", "GET", "/v1/rooms/a/poll?timeout=Inf", nil, "", false, 400, "invalid_parameter", ""},
		{"padding negative", "GET", "/v1/rooms/a/events?padding=-1", nil, "", false, 400, "invalid_parameter", ""},
		{"history limit", "GET", "/v1/rooms/a/history?limit=0", nil, "", false, 400, "invalid_parameter", ""},
		{"history before", "GET", "/v1/rooms/a/history?before=x", nil, "", false, 400, "invalid_parameter", ""},
		{"raw volatile", "POST", "/v1/rooms/a/events?volatile=maybe", nil, "x", false, 400, "invalid_parameter", ""},
		{"exclude_self without sender", "POST", "/v1/rooms/a/events", jsonType, `{"exclude_self":true}`, false, 400, "invalid_parameter", ""},
		{"idempotency key not ASCII", "POST", "/v1/rooms/a/events", http.Header{"Idempotency-Key": {"clé"}}, "x", false, 400, "invalid_parameter", ""},
		{"multi without rooms", "POST", "/v1/events", jsonType, `{"rooms":[]}`, false, 400, "invalid_parameter", ""},
		{"rooms on a room publish", "POST", "/v1/rooms/a/events", jsonType, `{"rooms":["b"]}`, false, 400, "invalid_parameter", ""},

		{"join single-room stream", "PUT", "/v1/connections/{single}/rooms/b", nil, "", false, 409, "single_room_stream", ""},
		{"leave single-room stream", "DELETE", "/v1/connections/{single}/rooms/a", nil, "", false, 409, "single_room_stream", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := relaytest.Request{Method: tc.method, Path: placeholders.Replace(tc.path), Header: tc.header, Chunked: tc.chunked}
			if tc.body != "" || tc.method == http.MethodPost {
				req.Body = []byte(tc.body)
			}
			resp := r.Do(t, req)
			checkError(t, resp, tc.status, tc.code)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
		})
	}
}

// TestNoSniff checks X-Content-Type-Options on answers of every kind.
func TestNoSniff(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.OpenRaw(t, "/v1/stream?room=a", nil)
	s.Frame(t)
	_, hello := s.EventFrame(t)
	var c relaytest.Connected
	if err := json.Unmarshal([]byte(hello.Data), &c); err != nil {
		t.Fatal(err)
	}
	if got := s.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("stream: X-Content-Type-Options %q", got)
	}
	for _, req := range []relaytest.Request{
		{Path: "/healthz"},
		{Path: "/readyz"},
		{Path: "/v1/rooms/a/poll"},
		{Path: "/v1/rooms/a/history"},
		{Method: "POST", Path: "/v1/rooms/a/events", Body: []byte("x")},
		{Method: "PUT", Path: "/v1/connections/" + c.Connection + "/rooms/b"},
		{Method: "DELETE", Path: "/v1/connections/" + c.Connection + "/rooms/b"},
		{Path: "/missing"},
		{Method: "PATCH", Path: "/v1/rooms/a/events"},
		{Method: "POST", Path: "/v1/rooms/a/events", Body: bytes.Repeat([]byte("x"), 65<<10), Chunked: true},
	} {
		resp := r.Do(t, req)
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s (status %d): X-Content-Type-Options %q, want nosniff", req.Method, req.Path, resp.Status, got)
		}
	}
}
