package relay

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/roomcast/roomcast/rooms"
)

// FuzzParseBatch checks that no content type or body makes the batch
// parser panic or answer a server error; that a readable batch holds 1 to
// rooms.MaxBatchEvents events; and that every event it accepts has a
// target, a valid event name and compact JSON data that cannot break an
// SSE frame, while every event it refuses is refused with a client error.
func FuzzParseBatch(f *testing.F) {
	f.Add("application/json", []byte(`[{"room":"a","data":{"x":[1,2]}},{"user":"bob","event":"dm"},{"namespace":"ns","volatile":true}]`))
	f.Add("application/json", []byte(`[{"rooms":["a","b","a"],"idempotency_key":"k1","exclude_self":true}]`))
	f.Add("application/json", []byte(`[{"room":"a","user":"b"},{"room":"a","nope":1},null,[],1]`))
	f.Add("application/json", []byte(`[{"room":"a"},`))
	f.Add("application/json", []byte(`[] []`))
	f.Add("application/x-ndjson", []byte("{\"room\":\"a\",\"data\":1}\r\n\n{\"room\":\n{\"namespace\":\"\"}\nnull"))
	f.Add("application/x-ndjson", []byte("\n\n"))
	f.Add("application/x-ndjson; charset=utf-8", []byte("{\"room\":\"a\",\"data\":\"\u2028\"}"))
	f.Add("application/ld+json", []byte(`[{"room":"roomcast:x","event":"roomcast:join"}]`))
	f.Add("text/plain", []byte("[]"))
	f.Add("", []byte{0xff})
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		events, err := parseBatch(contentType, body)
		if err != nil {
			if code, _ := classify(err); code.status() < 400 || code.status() >= 500 || code == codeInternal {
				t.Fatalf("error %v answers %d %s, want a client error", err, code.status(), code)
			}
			return
		}
		if len(events) == 0 || len(events) > rooms.MaxBatchEvents {
			t.Fatalf("%d events read", len(events))
		}
		for i, ev := range events {
			if ev.err != nil {
				if code, _ := classify(ev.err); code.status() < 400 || code.status() >= 500 || code == codeInternal {
					t.Fatalf("event %d: error %v answers %d %s, want a client error", i, ev.err, code.status(), code)
				}
				continue
			}
			if len(ev.channels) == 0 || len(ev.channels) > rooms.MaxEventRooms {
				t.Fatalf("event %d: %d channels", i, len(ev.channels))
			}
			if err := rooms.ValidateEventName(ev.body.Event); err != nil {
				t.Fatalf("event %d: accepted event name %q: %v", i, ev.body.Event, err)
			}
			if !json.Valid(ev.body.Data) || !utf8.Valid(ev.body.Data) {
				t.Fatalf("event %d: data %q is not valid JSON", i, ev.body.Data)
			}
			for _, c := range ev.body.Data {
				if c == '\n' || c == '\r' {
					t.Fatalf("event %d: data %q holds a line break", i, ev.body.Data)
				}
			}
			if !validIdempotencyKey(ev.key) {
				t.Fatalf("event %d: accepted key %q", i, ev.key)
			}
		}
	})
}
