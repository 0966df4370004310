package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/roomcast/roomcast/rooms"
)

// FuzzParsePublish checks that no content type, body or query makes the
// publish parser panic or answer a server error, and that what it accepts
// is a valid event name with compact JSON data that cannot break an SSE
// frame.
func FuzzParsePublish(f *testing.F) {
	f.Add("application/json", []byte(`{"event":"chat","data":{"a":[1,2]},"volatile":true}`), "", false)
	f.Add("application/json; charset=utf-8", []byte(" {\r\n\"data\" : \"a\\nb\" }\n"), "", false)
	f.Add("application/json", []byte(`{"rooms":["a","b"],"data":null,"exclude_self":true}`), "", true)
	f.Add("application/ld+json", []byte(`{"event":"roomcast:x"}`), "", false)
	f.Add("application/json", []byte(`{} {}`), "", false)
	f.Add("application/json", []byte(`null`), "", true)
	f.Add("text/plain", []byte("hello\r\nworld\x00"), "event=note&volatile=1", false)
	f.Add("application/x-www-form-urlencoded", []byte("a=1&b=2"), "exclude_self=true", false)
	f.Add("", []byte{0xff, 0xfe, '\n'}, "event=", false)
	f.Add("multipart/form-data; boundary=x", []byte("--x--"), "", false)
	f.Add("text/", []byte("x"), "event=%zz", true)
	f.Fuzz(func(t *testing.T, contentType string, body []byte, query string, multi bool) {
		q, _ := url.ParseQuery(query)
		got, err := parsePublish(contentType, body, q, multi)
		if err != nil {
			if code, _ := classify(err); code.status() < 400 || code.status() >= 500 || code == codeInternal {
				t.Fatalf("error %v answers %d %s, want a client error", err, code.status(), code)
			}
			return
		}
		if !json.Valid(got.Data) {
			t.Fatalf("data %q is not JSON", got.Data)
		}
		if bytes.ContainsAny(got.Data, "\r\n") {
			t.Fatalf("data %q holds a line break", got.Data)
		}
		if !utf8.Valid(got.Data) {
			t.Fatalf("data %q is not UTF-8", got.Data)
		}
		if err := rooms.ValidateEventName(got.Event); err != nil {
			t.Fatalf("event %q accepted: %v", got.Event, err)
		}
		if multi && len(got.Rooms) == 0 {
			t.Fatal("a multi-room publish without rooms was accepted")
		}
		if !multi && got.Rooms != nil {
			t.Fatal("rooms accepted on a one-room publish")
		}
		isJSON, _ := classifyMediaType(contentType)
		if isJSON {
			if got.Base64 {
				t.Fatal("a JSON body was taken as base64")
			}
			return
		}
		// A raw body is the data, as a JSON string, base64 when not UTF-8.
		var s string
		if err := json.Unmarshal(got.Data, &s); err != nil {
			t.Fatalf("raw body became %q, not a JSON string", got.Data)
		}
		back := []byte(s)
		if got.Base64 {
			if back, err = base64.StdEncoding.DecodeString(s); err != nil {
				t.Fatalf("base64 data %q: %v", s, err)
			}
		}
		if got.Base64 == utf8.Valid(body) || !bytes.Equal(back, body) {
			t.Fatalf("raw body %q came back as %q (base64 %v)", body, back, got.Base64)
		}
	})
}

// TestParsePublishStatus pins the statuses of the parser's refusals.
func TestParsePublishStatus(t *testing.T) {
	cases := []struct {
		contentType, body string
		multi             bool
		status            int
	}{
		{"application/json", `{`, false, http.StatusBadRequest},
		{"multipart/mixed", ``, false, http.StatusUnsupportedMediaType},
		{"text/plain", `x`, true, http.StatusUnsupportedMediaType},
	}
	for _, tc := range cases {
		_, err := parsePublish(tc.contentType, []byte(tc.body), url.Values{}, tc.multi)
		if code, _ := classify(err); code.status() != tc.status {
			t.Errorf("%s %q: status %d, want %d", tc.contentType, tc.body, code.status(), tc.status)
		}
	}
}
