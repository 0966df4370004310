package relay_test

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

const (
	retryMin = 1500 * time.Millisecond
	retryMax = 2500 * time.Millisecond
)

// checkStreamHeaders asserts the headers every SSE response carries.
func checkStreamHeaders(t *testing.T, h interface{ Get(string) string }) {
	t.Helper()
	for name, want := range map[string]string{
		"Content-Type":           "text/event-stream",
		"Cache-Control":          "no-cache, no-transform",
		"X-Accel-Buffering":      "no",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// checkRetry asserts that a retry value is a whole number of milliseconds
// within [retryMin, retryMax].
func checkRetry(t *testing.T, v string) {
	t.Helper()
	ms, err := strconv.Atoi(v)
	if err != nil || time.Duration(ms)*time.Millisecond < retryMin || time.Duration(ms)*time.Millisecond > retryMax {
		t.Errorf("retry %q, want milliseconds in [%d, %d]", v, retryMin.Milliseconds(), retryMax.Milliseconds())
	}
}

// objectKeys returns the sorted keys of a JSON object.
func objectKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%q is not a JSON object: %v", raw, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestStreamOpening checks the exact bytes a stream opens with: headers, a
// retry field in range, the padding comment, then roomcast:connected
// without an id, then an event framed as id, event and data lines.
func TestStreamOpening(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{RetryMin: retryMin, RetryMax: retryMax}})
	cases := []struct {
		name    string
		query   string
		padding int // bytes of the padding comment, newline included
	}{
		{"no padding", "", 0},
		{"padding too small for a comment", "&padding=2", 0},
		{"padding", "&padding=100", 100},
		{"padding capped at 4 KiB", "&padding=1000000", 4096},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := "open" + strconv.Itoa(i)
			client := "reader-000" + strconv.Itoa(i)
			s := r.OpenRaw(t, "/v1/rooms/"+room+"/events?client="+client+tc.query, nil)
			checkStreamHeaders(t, s.Header)

			first := s.Frame(t)
			if !strings.HasPrefix(first, "retry: ") || !strings.HasSuffix(first, "\n\n") || strings.Count(first, "\n") != 2 {
				t.Fatalf("first frame %q, want one retry line", first)
			}
			checkRetry(t, strings.TrimSuffix(strings.TrimPrefix(first, "retry: "), "\n\n"))

			hello := s.Frame(t)
			if tc.padding > 0 {
				pad := ":" + strings.Repeat(" ", tc.padding-2) + "\n"
				if !strings.HasPrefix(hello, pad) {
					t.Fatalf("frame %.80q does not start with a %d-byte padding comment", hello, tc.padding)
				}
				hello = strings.TrimPrefix(hello, pad)
			}
			const head = "event: roomcast:connected\ndata: "
			if !strings.HasPrefix(hello, head) || strings.Count(hello, "\n") != 3 {
				t.Fatalf("connected frame %q, want exactly an event and a data line", hello)
			}
			data := strings.TrimSuffix(strings.TrimPrefix(hello, head), "\n\n")
			if got, want := objectKeys(t, []byte(data)), sorted("connection", "client", "proof", "rooms"); !slices.Equal(got, want) {
				t.Errorf("connected keys %v, want %v", got, want)
			}
			var c relaytest.Connected
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatal(err)
			}
			if id, err := base64.RawURLEncoding.DecodeString(c.Connection); err != nil || len(id) != 16 {
				t.Errorf("connection %q is not 128 random bits in base64url", c.Connection)
			}
			if c.Client != client || !slices.Equal(c.Rooms, []string{room}) || !strings.HasPrefix(c.Proof, client+".") {
				t.Errorf("connected = %+v, want client %s, its proof and rooms [%s]", c, client, room)
			}

			before := time.Now().UnixMilli()
			p := r.Publish(t, "/v1/rooms/"+room+"/events", "application/json",
				[]byte(`{"event":"chat","data":{"text":"hi","n":[1,2]}}`), nil)
			after := time.Now().UnixMilli()
			frame, ev := s.EventFrame(t)
			lines := strings.Split(strings.TrimSuffix(frame, "\n\n"), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "id: ") || lines[1] != "event: chat" || !strings.HasPrefix(lines[2], "data: ") {
				t.Fatalf("event frame %q, want id, event and data lines", frame)
			}
			cursor := strings.TrimPrefix(lines[0], "id: ")
			if _, err := r.Codec.Decode(cursor); err != nil {
				t.Errorf("id line %q is not a cursor of this relay: %v", cursor, err)
			}
			if ev.LastEventID != cursor || ev.Type != "chat" {
				t.Errorf("parsed event %+v", ev)
			}
			env := []byte(strings.TrimPrefix(lines[2], "data: "))
			if got, want := objectKeys(t, env), sorted("id", "room", "event", "data", "from", "client", "ts"); !slices.Equal(got, want) {
				t.Errorf("envelope keys %v, want %v", got, want)
			}
			got := relaytest.Event{Data: string(env)}.Envelope(t)
			if got.ID == nil || *got.ID != *p.ID || got.Room != room || got.Event != "chat" ||
				string(got.Data) != `{"text":"hi","n":[1,2]}` || string(got.From) != "null" || got.Client != nil {
				t.Errorf("envelope %s, want id %s in room %s from nobody", env, *p.ID, room)
			}
			if got.TS < before || got.TS > after {
				t.Errorf("ts %d not within the publish [%d, %d]", got.TS, before, after)
			}
		})
	}
}

// TestStreamParsedByReferenceClient reads a stream with r3labs/sse, the
// parser we did not write: retry, connected, then events, with the
// stream's headers.
func TestStreamParsedByReferenceClient(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{RetryMin: retryMin, RetryMax: retryMax}})
	s := r.Subscribe(t, "/v1/rooms/ns-1:lobby/events", relaytest.StreamOptions{})
	first := s.Next(t)
	if first.Retry == "" || first.Event != "" || first.Data != "" {
		t.Fatalf("first block %+v, want a retry field alone", first)
	}
	checkRetry(t, first.Retry)
	c := s.Connected(t)
	if !slices.Equal(c.Rooms, []string{"ns-1:lobby"}) || len(c.Client) < 8 {
		t.Errorf("connected %+v", c)
	}
	checkStreamHeaders(t, s.Header())

	var ids []string
	for i := range 3 {
		ids = append(ids, r.PublishJSON(t, "ns-1:lobby", map[string]any{"data": i}))
	}
	for i, id := range ids {
		ev := s.Expect(t, "message")
		env := ev.Envelope(t)
		if ev.EventID(t) != id || env.Room != "ns-1:lobby" || string(env.Data) != strconv.Itoa(i) {
			t.Errorf("event %d: %s, want id %s", i, ev.Data, id)
		}
		if ev.ID == "" || ev.ID == id {
			t.Errorf("event %d: SSE id %q, want the cursor, not the event id", i, ev.ID)
		}
	}
}

// TestStreamCanonicalRooms checks that default:x and x are one room, and
// that a multi-room stream names its rooms canonically.
func TestStreamCanonicalRooms(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	s := r.Subscribe(t, "/v1/stream?room=default:x&room=y,ns:z&room=x", relaytest.StreamOptions{})
	if c := s.Connected(t); !slices.Equal(c.Rooms, []string{"ns:z", "x", "y"}) {
		t.Errorf("rooms %v, want [ns:z x y]", c.Rooms)
	}
	id := r.PublishJSON(t, "default:x", map[string]any{"data": "to x"})
	if env := s.Expect(t, "message").Envelope(t); *env.ID != id || env.Room != "x" {
		t.Errorf("envelope %+v, want room x", env)
	}
}

// TestStreamHeartbeat checks that an idle stream carries ": ping" comments.
func TestStreamHeartbeat(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: 20 * time.Millisecond}})
	s := r.OpenRaw(t, "/v1/rooms/quiet/events", nil)
	s.Frame(t) // retry
	if f := s.Frame(t); !strings.HasPrefix(f, "event: roomcast:connected\n") {
		t.Fatalf("frame %q, want roomcast:connected", f)
	}
	if f := s.Frame(t); !strings.HasPrefix(f, "id: ") || strings.Contains(f, "data:") {
		t.Fatalf("frame %q, want the id-only frame that sets the first cursor", f)
	}
	for range 2 {
		if f := s.Frame(t); f != ": ping\n\n" {
			t.Fatalf("frame %q, want a ping comment", f)
		}
	}
}
