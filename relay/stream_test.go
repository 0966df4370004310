package relay_test

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"bufio"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
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

// TestTokenLifetime: a stream whose token expires within 30 s is warned at
// once; a refresh with a fresh token of the same user keeps it open past
// the old expiry, while an unrefreshed twin is closed at exp with
// token_expired.
func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	short := relaytest.Token(t, "alice", 3*time.Second, nil)
	refreshed := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(short)})
	conn := refreshed.Connected(t).Connection
	twin := r.Subscribe(t, "/v1/rooms/team-1/events", relaytest.StreamOptions{Header: relaytest.BearerMap(short)})
	twin.Connected(t)
	for _, s := range []*relaytest.Stream{refreshed, twin} {
		ev := s.Expect(t, "roomcast:token-expiring")
		var d struct {
			ExpiresAt  int64  `json:"expires_at"`
			Connection string `json:"connection"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.ExpiresAt == 0 || d.Connection == "" {
			t.Errorf("token-expiring data %s", ev.Data)
		}
	}

	// Refreshing needs the same user's token, sent as bearer.
	refresh := func(h http.Header) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/" + conn + "/token", Header: h})
	}
	wantError(t, refresh(userHeader(t, "mallory")), http.StatusForbidden, "forbidden")
	wantError(t, refresh(nil), http.StatusUnauthorized, "unauthenticated")
	wantError(t, refresh(server()), http.StatusForbidden, "forbidden")
	wantError(t, refresh(relaytest.Bearer(relaytest.Token(t, "alice", -time.Hour, nil))), http.StatusUnauthorized, "invalid_token")
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/connections/nope/token", Header: userHeader(t, "alice")}), http.StatusNotFound, "unknown_connection")
	if resp := refresh(userHeader(t, "alice")); resp.Status != http.StatusNoContent {
		t.Fatalf("refresh: status %d: %s", resp.Status, resp.Body)
	}

	// The twin is closed at the old exp ...
	closing := twin.Expect(t, "roomcast:closing")
	checkClosingReason(t, closing, rooms.CloseTokenExpired)
	twin.WaitEnded(t)
	// ... and the refreshed stream is still there afterwards.
	id := publishAs(t, r, "team-1", userHeader(t, "bob"), `{"data":"after the old exp"}`)
	if got := refreshed.NextEvent(t); got.Event != "message" || got.EventID(t) != id {
		t.Fatalf("refreshed stream got %q %s, want the event published after the old exp", got.Event, got.Data)
	}
}

// checkClosingReason requires roomcast:closing data with reason and a
// reconnect delay.
func checkClosingReason(t *testing.T, ev relaytest.Event, reason string) {
	t.Helper()
	var d struct {
		Reason      string `json:"reason"`
		Message     string `json:"message"`
		ReconnectMS *int   `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("closing data %q: %v", ev.Data, err)
	}
	if d.Reason != reason || d.Message == "" || d.ReconnectMS == nil {
		t.Errorf("closing %s, want reason %q with a message and reconnect_ms", ev.Data, reason)
	}
}

// TestTokenExpiryResume: an unrefreshed stream is closed at exp with
// token_expired and, re-authenticated with a fresh ticket, resumes without
// losing what was published meanwhile.
func TestTokenExpiryResume(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	short := relaytest.Token(t, "alice", 3*time.Second, nil)
	s := r.Subscribe(t, "/v1/rooms/team-1/events?ticket="+mustTicket(t, r, short), relaytest.StreamOptions{})
	s.Connected(t)
	s.Expect(t, "roomcast:token-expiring")
	bob := userHeader(t, "bob")
	seen := publishAs(t, r, "team-1", bob, `{"data":"seen"}`)
	expectIDs(t, s, []string{seen})
	checkClosingReason(t, s.Expect(t, "roomcast:closing"), rooms.CloseTokenExpired)
	s.WaitEnded(t)
	last := s.LastEventID()

	missed := []string{publishAs(t, r, "team-1", bob, `{"data":"missed 1"}`), publishAs(t, r, "team-1", bob, `{"data":"missed 2"}`)}
	// The expired token no longer gets a ticket; a fresh one does.
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(short)}), http.StatusUnauthorized, "invalid_token")
	resumed := r.Subscribe(t, "/v1/rooms/team-1/events?ticket="+mustTicket(t, r, relaytest.Token(t, "alice", time.Hour, nil)),
		relaytest.StreamOptions{LastEventID: last})
	resumed.Connected(t)
	expectIDs(t, resumed, missed)
}

const (
	testLifetime      = time.Second
	lifetimeRetryMin  = 100 * time.Millisecond
	lifetimeRetryMax  = 300 * time.Millisecond
	lifetimeCloseSlop = 2 * time.Second // scheduling under -race
)

// startLifetime runs a relay whose streams live testLifetime.
func startLifetime(t *testing.T, compress string) *relaytest.Relay {
	return relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		MaxStreamLifetime: testLifetime,
		RetryMin:          lifetimeRetryMin,
		RetryMax:          lifetimeRetryMax,
		Compress:          compress,
	}})
}

// checkLifetimeClosing requires roomcast:closing with reason max_lifetime,
// a message and a reconnect delay within the retry range.
func checkLifetimeClosing(t *testing.T, ev relaytest.Event) {
	t.Helper()
	var d struct {
		Reason      string `json:"reason"`
		Message     string `json:"message"`
		ReconnectMS *int64 `json:"reconnect_ms"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("closing data %q: %v", ev.Data, err)
	}
	if ev.Event != "roomcast:closing" || d.Reason != rooms.CloseMaxLifetime || d.Message == "" || d.ReconnectMS == nil ||
		time.Duration(*d.ReconnectMS)*time.Millisecond < lifetimeRetryMin || time.Duration(*d.ReconnectMS)*time.Millisecond > lifetimeRetryMax {
		t.Fatalf("event %q %s, want roomcast:closing reason max_lifetime with reconnect_ms in [%d, %d]",
			ev.Event, ev.Data, lifetimeRetryMin.Milliseconds(), lifetimeRetryMax.Milliseconds())
	}
}

// TestMaxStreamLifetime: a stream is told roomcast:closing, reason
// max_lifetime, after about MaxStreamLifetime (less a jitter of up to a
// tenth) and then ends; without the option streams stay.
func TestMaxStreamLifetime(t *testing.T) {
	r := startLifetime(t, "")
	raw := r.OpenRaw(t, "/v1/rooms/life/events", nil)
	raw.Frame(t)
	if _, hello := raw.EventFrame(t); hello.Type != "roomcast:connected" {
		t.Fatalf("first event %+v", hello)
	}
	opened := time.Now()
	frame, closing := raw.EventFrame(t)
	lived := time.Since(opened)
	if closing.HasID {
		t.Errorf("roomcast:closing carries an id: %q", frame)
	}
	checkLifetimeClosing(t, relaytest.Event{Event: closing.Type, Data: closing.Data})
	if lived < testLifetime*9/10-50*time.Millisecond || lived > testLifetime+lifetimeCloseSlop {
		t.Errorf("the stream lived %s, want about %s", lived, testLifetime)
	}
	if err := raw.WaitEnded(t); err != io.EOF {
		t.Errorf("after roomcast:closing the stream ended with %v, want a clean end", err)
	}
	relaytest.Eventually(t, "the connection is gone", func() bool { return r.Hub.Connections() == 0 })

	// Without a lifetime the stream outlives it.
	forever := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Heartbeat: 300 * time.Millisecond}})
	s := forever.OpenRaw(t, "/v1/rooms/life/events", nil)
	s.Frame(t)
	s.EventFrame(t)
	s.Frame(t) // the id-only frame that sets the first cursor
	deadline := time.Now().Add(testLifetime + 500*time.Millisecond)
	for time.Now().Before(deadline) {
		if f := s.Frame(t); f != ": ping\n\n" {
			t.Fatalf("frame %q on a stream without a lifetime, want only heartbeats", f)
		}
	}
}

// TestMaxStreamLifetimeResume: a client that resumes with its last id, as
// EventSource does, loses and repeats nothing published around the cut,
// for single- and multi-room streams, compressed or not.
func TestMaxStreamLifetimeResume(t *testing.T) {
	plain := startLifetime(t, "")
	zipped := startLifetime(t, relay.CompressAll) // Go's client accepts gzip
	cases := []struct {
		name  string
		relay *relaytest.Relay
		path  string
		rooms []string
	}{
		{"single room", plain, "/v1/rooms/cut/events", []string{"cut"}},
		{"multi room", plain, "/v1/stream?room=cut-a&room=cut-b", []string{"cut-a", "cut-b"}},
		{"gzip", zipped, "/v1/rooms/cut/events", []string{"cut"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.relay
			s := r.Subscribe(t, tc.path, relaytest.StreamOptions{Reconnect: true})
			s.Connected(t)
			// Publish steadily until the client has been cut and has come
			// back twice, so that events go out before, during and after
			// each cut, and then some more: the last ones come after the
			// last roomcast:closing.
			var ids []string
			publish := func() {
				room := tc.rooms[len(ids)%len(tc.rooms)]
				ids = append(ids, r.PublishJSON(t, room, map[string]any{"data": len(ids)}))
				time.Sleep(5 * time.Millisecond)
			}
			deadline := time.Now().Add(3*testLifetime + 2*lifetimeCloseSlop)
			for s.Connects() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("the stream reconnected %d times in %s", s.Connects()-1, 3*testLifetime+2*lifetimeCloseSlop)
				}
				publish()
			}
			for range 10 {
				publish()
			}

			var got []string
			closings := 0
			for len(got) < len(ids) {
				ev := s.NextEvent(t)
				switch ev.Event {
				case "roomcast:closing":
					checkLifetimeClosing(t, ev)
					closings++
				case "roomcast:connected":
				case "message":
					got = append(got, ev.EventID(t))
				default:
					t.Fatalf("unexpected %q %s", ev.Event, ev.Data)
				}
			}
			if !slices.Equal(got, ids) {
				t.Fatalf("across %d cuts the client got\n%v\nwant\n%v", closings, got, ids)
			}
			if closings < 2 {
				t.Errorf("%d roomcast:closing before the third connection's events", closings)
			}
		})
	}
}

// rawOpening opens a multi-room stream resuming from cursor ("" for none)
// and returns it with its connection id and the cursor of its opening
// id-only frame, the first resume point its client holds.
func rawOpening(t *testing.T, r *relaytest.Relay, path, cursor string) (*relaytest.RawStream, string, string) {
	t.Helper()
	h := http.Header{}
	if cursor != "" {
		h.Set("Last-Event-ID", cursor)
	}
	s := r.OpenRaw(t, path, h)
	var connection, opening string
	for opening == "" {
		f := s.Frame(t)
		for _, ev := range relaytest.Parse([]byte(f)).Events {
			if ev.Type == "roomcast:connected" {
				var c relaytest.Connected
				if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
					t.Fatal(err)
				}
				connection = c.Connection
			}
		}
		// The first id seen is the opening frame's.
		for _, line := range strings.Split(f, "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				opening = id
			}
		}
	}
	return s, connection, opening
}

// eventIDsUntil reads s's events (system events skipped) up to and
// including the one with envelope id last, and returns their ids.
func eventIDsUntil(t *testing.T, s *relaytest.RawStream, last string) []string {
	t.Helper()
	var ids []string
	for {
		_, ev := s.EventFrame(t)
		if strings.HasPrefix(ev.Type, "roomcast:") {
			continue
		}
		var env struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
			t.Fatalf("event %q: %v", ev.Data, err)
		}
		ids = append(ids, env.ID)
		if env.ID == last {
			return ids
		}
	}
}

// publishRooms publishes to several rooms at once and returns the id.
func publishRooms(t *testing.T, r *relaytest.Relay, rooms ...string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"rooms": rooms, "data": "x"})
	if err != nil {
		t.Fatal(err)
	}
	p := r.Publish(t, "/v1/events", "application/json", b, nil)
	return *p.ID
}

// TestMultiRoomResumeAfterJoinedRoom: a room joined after a two-room event
// was published to it and to a room the stream already held holds no copy
// of that event for the stream, so the event is delivered through the
// older room. A cursor written before that delivery (the resumed stream's
// opening frame) has the older room behind the event and the joined room
// past it; resuming from it must still bring the event, once.
func TestMultiRoomResumeAfterJoinedRoom(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	first, connection, c0 := rawOpening(t, r, "/v1/stream?room=z", "")
	// The event names the room joined later first, so that a joined
	// room counted as held from the start would be the one to deliver it.
	ev := publishRooms(t, r, "a", "z")
	changeRoom(t, r, http.MethodPut, connection, "a")
	first.Close()

	second, _, c1 := rawOpening(t, r, "/v1/stream", c0)
	if got := eventIDsUntil(t, second, ev); len(got) != 1 {
		t.Fatalf("resumed from before the event: %v, want it once", got)
	}
	second.Close()

	third, _, _ := rawOpening(t, r, "/v1/stream", c1)
	marker := r.PublishJSON(t, "z", map[string]any{"data": "marker"})
	if got := eventIDsUntil(t, third, marker); len(got) != 2 || got[0] != ev {
		t.Fatalf("resumed from the opening cursor of a stream that had not written %s yet: %v, want it, then %s", ev, got, marker)
	}
}

// TestMultiRoomResumeFromBeforeJoin: a stream joins a room, the room's
// events reach it, and the client drops before it read roomcast:joined.
// Resumed from its cursor of before the join, the session brings the room
// back: the events published to it since the join must come too, once
// (the room restarted at its head, and they were lost).
func TestMultiRoomResumeFromBeforeJoin(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	before := r.PublishJSON(t, "a", map[string]any{"data": "before the join"})
	first, connection, c0 := rawOpening(t, r, "/v1/stream?room=z", "")
	changeRoom(t, r, http.MethodPut, connection, "a")
	want := []string{
		r.PublishJSON(t, "a", map[string]any{"data": 1}),
		publishRooms(t, r, "a", "z"),
		r.PublishJSON(t, "z", map[string]any{"data": 2}),
		r.PublishJSON(t, "a", map[string]any{"data": 3}),
	}
	if got := eventIDsUntil(t, first, want[len(want)-1]); !slices.Equal(got, want) {
		t.Fatalf("live: %v, want %v", got, want)
	}
	first.Close()

	for range 2 { // the resumed stream saves the session again: the join point must survive
		again, _, _ := rawOpening(t, r, "/v1/stream", c0)
		marker := r.PublishJSON(t, "a", map[string]any{"data": "marker"})
		want = append(want, marker)
		if got := eventIDsUntil(t, again, marker); !slices.Equal(got, want) || slices.Contains(got, before) {
			t.Fatalf("resumed from before the join: %v, want %v", got, want)
		}
		again.Close()
	}
}

// framesUntil reads s's events up to and including the one with envelope
// id last and returns them as envelope ids, "left:<room>" for a
// roomcast:left and "joined:<room>" for a roomcast:joined (other system
// events skipped).
func framesUntil(t *testing.T, s *relaytest.RawStream, last string) []string {
	t.Helper()
	var got []string
	for {
		_, ev := s.EventFrame(t)
		switch ev.Type {
		case "roomcast:left", "roomcast:joined":
			var d struct {
				Room string `json:"room"`
			}
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				t.Fatalf("%s %q: %v", ev.Type, ev.Data, err)
			}
			got = append(got, strings.TrimPrefix(ev.Type, "roomcast:")+":"+d.Room)
			continue
		}
		if strings.HasPrefix(ev.Type, "roomcast:") {
			continue
		}
		var env struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil {
			t.Fatalf("event %q: %v", ev.Data, err)
		}
		got = append(got, env.ID)
		if env.ID == last {
			return got
		}
	}
}

// TestMultiRoomResumeFromBeforeLeave: a stream holds rooms a and z, gets
// a's events, leaves a, and the client drops before it read the
// roomcast:left. Resumed from its cursor of before those events, the saved
// session no longer has a: the resumed stream must still bring a's events
// up to the leave, then roomcast:left, then nothing more of a — what the
// dropped stream sent (a's events were lost, and roomcast:left never came).
func TestMultiRoomResumeFromBeforeLeave(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	first, connection, _ := rawOpening(t, r, "/v1/stream?room=z&room=a", "")
	// The cursor the client resumes from: written with both rooms held,
	// before any of the events below.
	start := r.PublishJSON(t, "z", map[string]any{"data": "start"})
	var cursor string
	for cursor == "" {
		_, ev := first.EventFrame(t)
		if strings.Contains(ev.Data, start) {
			cursor = ev.LastEventID
		}
	}
	want := []string{
		r.PublishJSON(t, "a", map[string]any{"data": 1}),
		publishRooms(t, r, "a", "z"),
		r.PublishJSON(t, "z", map[string]any{"data": 2}),
		publishRooms(t, r, "z", "a"),
		r.PublishJSON(t, "a", map[string]any{"data": 3}),
	}
	changeRoom(t, r, http.MethodDelete, connection, "a")
	after := []string{
		r.PublishJSON(t, "a", map[string]any{"data": "after the leave"}),
		publishRooms(t, r, "a", "z"),
	}
	last := r.PublishJSON(t, "z", map[string]any{"data": "last"})
	want = append(want, "left:a", after[1], last)
	if got := framesUntil(t, first, last); !slices.Equal(got, want) {
		t.Fatalf("live: %v, want %v", got, want)
	}
	first.Close()

	for range 2 { // the resumed stream saves the session again: the left room must survive
		again, _, _ := rawOpening(t, r, "/v1/stream", cursor)
		marker := r.PublishJSON(t, "z", map[string]any{"data": "marker"})
		want = append(want, marker)
		if got := framesUntil(t, again, marker); !slices.Equal(got, want) {
			t.Fatalf("resumed from before the leave: %v, want %v", got, want)
		}
		again.Close()
	}
}

// TestMultiRoomResumeFromBeforeLeaveAndRejoin: as
// TestMultiRoomResumeFromBeforeLeave, but the room is joined again after
// the leave: the resumed stream must bring the room's events up to the
// leave, roomcast:left, roomcast:joined and the events since the join —
// none of those published to it while it was not held.
func TestMultiRoomResumeFromBeforeLeaveAndRejoin(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	first, connection, _ := rawOpening(t, r, "/v1/stream?room=z&room=a", "")
	start := r.PublishJSON(t, "z", map[string]any{"data": "start"})
	var cursor string
	for cursor == "" {
		_, ev := first.EventFrame(t)
		if strings.Contains(ev.Data, start) {
			cursor = ev.LastEventID
		}
	}
	want := []string{
		r.PublishJSON(t, "a", map[string]any{"data": 1}),
		publishRooms(t, r, "a", "z"),
	}
	changeRoom(t, r, http.MethodDelete, connection, "a")
	gap := r.PublishJSON(t, "a", map[string]any{"data": "while not held"})
	bothInGap := publishRooms(t, r, "a", "z")
	changeRoom(t, r, http.MethodPut, connection, "a")
	want = append(want, "left:a", bothInGap, "joined:a",
		r.PublishJSON(t, "a", map[string]any{"data": 2}),
		publishRooms(t, r, "a", "z"))
	last := r.PublishJSON(t, "z", map[string]any{"data": "last"})
	want = append(want, last)
	if got := framesUntil(t, first, last); !slices.Equal(got, want) {
		t.Fatalf("live: %v, want %v", got, want)
	}
	first.Close()

	again, _, _ := rawOpening(t, r, "/v1/stream", cursor)
	marker := r.PublishJSON(t, "a", map[string]any{"data": "marker"})
	want = append(want, marker)
	if got := framesUntil(t, again, marker); !slices.Equal(got, want) || slices.Contains(got, gap) {
		t.Fatalf("resumed from before the leave: %v, want %v", got, want)
	}
	again.Close()
}

// TestMultiRoomResumeFromBeforeLeaveNamespace: leaving the last room of a
// namespace leaves the namespace's broadcasts too. A resume from a cursor
// written before the leave must bring the broadcasts up to the leave (the
// session no longer has a room of the namespace, and they were lost).
func TestMultiRoomResumeFromBeforeLeaveNamespace(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	first, connection, _ := rawOpening(t, r, "/v1/stream?room=z&room=ns:a", "")
	start := r.PublishJSON(t, "z", map[string]any{"data": "start"})
	var cursor string
	for cursor == "" {
		_, ev := first.EventFrame(t)
		if strings.Contains(ev.Data, start) {
			cursor = ev.LastEventID
		}
	}
	broadcast := func() string {
		p := r.Publish(t, "/v1/namespaces/ns/events", "application/json", []byte(`{"data":"to the namespace"}`), nil)
		return *p.ID
	}
	want := []string{broadcast(), r.PublishJSON(t, "ns:a", map[string]any{"data": 1}), broadcast()}
	changeRoom(t, r, http.MethodDelete, connection, "ns:a")
	after := broadcast()
	last := r.PublishJSON(t, "z", map[string]any{"data": "last"})
	want = append(want, "left:ns:a", last)
	if got := framesUntil(t, first, last); !slices.Equal(got, want) {
		t.Fatalf("live: %v, want %v", got, want)
	}
	first.Close()

	again, _, _ := rawOpening(t, r, "/v1/stream", cursor)
	marker := r.PublishJSON(t, "z", map[string]any{"data": "marker"})
	want = append(want, marker)
	if got := framesUntil(t, again, marker); !slices.Equal(got, want) || slices.Contains(got, after) {
		t.Fatalf("resumed from before the leave: %v, want %v", got, want)
	}
	again.Close()
}

// TestUserStreams: private messages reach every connection of their user
// and nobody else's, stamped with the sender, retained for resume; the
// multi-room stream of a user carries them too.
func TestUserStreams(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	aliceToken := relaytest.Token(t, "alice", time.Hour, nil)
	tab1 := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken)})
	tab1.Connected(t)
	tab2 := r.Subscribe(t, "/v1/users/me/events?ticket="+mustTicket(t, r, aliceToken), relaytest.StreamOptions{})
	tab2.Connected(t)
	multi := r.Subscribe(t, "/v1/stream?room=team-1", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken)})
	multi.Connected(t)
	bobs := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bobs.Connected(t)
	first := poll(t, r, "/v1/users/me/poll?timeout=0&access_token=ignored&ticket="+mustTicket(t, r, aliceToken))

	carol := relaytest.Bearer(relaytest.Token(t, "carol", time.Hour, relaytest.Claims{"name": "Carol"}))
	resp := postJSON(t, r, "/v1/users/alice/events", carol, `{"event":"dm","data":"hi alice","from":{"user":"bob"}}`)
	if resp.Status != http.StatusAccepted {
		t.Fatalf("private message: status %d: %s", resp.Status, resp.Body)
	}
	var p relaytest.Published
	resp.JSON(t, &p)
	if p.ID == nil || p.Event != "dm" {
		t.Fatalf("answer %s, want an id and event dm", resp.Body)
	}
	for name, s := range map[string]*relaytest.Stream{"tab 1": tab1, "tab 2": tab2, "multi-room stream": multi} {
		ev := s.Expect(t, "dm")
		env := ev.Envelope(t)
		if ev.EventID(t) != *p.ID || string(env.Data) != `"hi alice"` || string(env.From) != `{"user":"carol","name":"Carol"}` {
			t.Errorf("%s got %s", name, ev.Data)
		}
	}
	later := poll(t, r, "/v1/users/me/poll?timeout=5&cursor="+first.Cursor+"&ticket="+mustTicket(t, r, aliceToken))
	if len(later.Events) != 1 || !strings.Contains(string(later.Events[0]), `"hi alice"`) {
		t.Errorf("user poll got %s", later.Events)
	}
	// Bob's stream hears only what is his.
	postJSON(t, r, "/v1/users/bob/events", carol, `{"data":"hi bob"}`)
	if got := bobs.Expect(t, "message").Envelope(t); string(got.Data) != `"hi bob"` {
		t.Errorf("bob got %s first", got.Data)
	}

	// Retained: a resume from before it gets it back.
	last := tab1.LastEventID()
	tab1.Close()
	missed := postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"while away"}`)
	var mp relaytest.Published
	missed.JSON(t, &mp)
	resumed := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(aliceToken), LastEventID: last})
	resumed.Connected(t)
	expectIDs(t, resumed, []string{*mp.ID})
	hist := r.Do(t, relaytest.Request{Path: "/v1/rooms/team-1/history", Header: relaytest.Bearer(aliceToken)})
	if strings.Contains(string(hist.Body), "while away") {
		t.Error("a private message leaked into a room's history")
	}

	// Anonymous callers cannot send private messages; nobody can use
	// somebody else's user stream through a resume cursor.
	wantError(t, postJSON(t, r, "/v1/users/alice/events", nil, `{}`), http.StatusUnauthorized, "unauthenticated")
	wantError(t, postJSON(t, r, "/v1/users/"+strings.Repeat("u", 300)+"/events", carol, `{}`), http.StatusBadRequest, "invalid_user")
	// A user id that is not UTF-8 names nobody a token can be: tokens
	// are JSON, whose sub would read U+FFFD.
	wantError(t, postJSON(t, r, "/v1/users/al%FFice/events", carol, `{}`), http.StatusBadRequest, "invalid_user")
	spy := r.Subscribe(t, "/v1/stream", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "mallory", time.Hour, nil)), LastEventID: multi.LastEventID()})
	spy.Connected(t)
	postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"secret"}`)
	mine := postJSON(t, r, "/v1/users/mallory/events", server(), `{"data":"for mallory"}`)
	var mm relaytest.Published
	mine.JSON(t, &mm)
	for _, ev := range spy.UntilEventID(t, *mm.ID) {
		if strings.Contains(ev.Data, "secret") {
			t.Errorf("mallory got alice's message through her cursor: %s", ev.Data)
		}
	}
}

// expectIDs reads events and fails unless their envelope ids are want, in order.
func expectIDs(t *testing.T, s *relaytest.Stream, want []string) {
	t.Helper()
	for i, id := range want {
		if got := s.NextEvent(t); got.EventID(t) != id {
			t.Fatalf("event %d: %q %s, want id %s", i, got.Event, got.Data, id)
		}
	}
}

// serverClose ends a live connection from the server side, as a proxy
// timeout or a redeploy would.
func serverClose(t *testing.T, r *relaytest.Relay, connection string) {
	t.Helper()
	conn, err := r.Hub.Lookup(connection)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(rooms.CloseReason{Code: "test", Message: "closed by the test", ReconnectMS: 0})
}

// TestResumeSingleRoom checks that a client resuming a single-room stream
// gets every missed event in order exactly once, then live events, whether
// it names its cursor in the header, in the query, or reconnects by itself.
func TestResumeSingleRoom(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	for _, mode := range []string{"header", "query", "reconnect"} {
		t.Run(mode, func(t *testing.T) {
			room := "resume-" + mode
			path := "/v1/rooms/" + room + "/events"
			publish := func(n int) []string {
				var ids []string
				for i := range n {
					ids = append(ids, r.PublishJSON(t, room, map[string]any{"data": i}))
				}
				return ids
			}
			gate := make(chan struct{})
			first := r.Subscribe(t, path, relaytest.StreamOptions{Reconnect: mode == "reconnect", ReconnectGate: gate})
			conn := first.Connected(t).Connection
			expectIDs(t, first, publish(2))
			cursor := first.LastEventID()

			resumed := first
			if mode == "reconnect" {
				serverClose(t, r, conn)
				first.Expect(t, "roomcast:closing")
				relaytest.Eventually(t, "the client is away", func() bool { return first.Disconnects() == 1 })
			} else {
				first.Close()
			}
			missed := publish(5)
			switch mode {
			case "header":
				resumed = r.Subscribe(t, path, relaytest.StreamOptions{LastEventID: cursor})
			case "query":
				resumed = r.Subscribe(t, path+"?lastEventId="+url.QueryEscape(cursor), relaytest.StreamOptions{})
			case "reconnect":
				gate <- struct{}{}
			}
			resumed.Connected(t)
			expectIDs(t, resumed, missed)
			expectIDs(t, resumed, publish(2))
		})
	}
}

// TestResumeMultiRoomSession checks that a multi-room stream reconnecting
// to its original URL gets back the rooms it joined later, with what it
// missed in all of them, once each.
func TestResumeMultiRoomSession(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	gate := make(chan struct{})
	s := r.Subscribe(t, "/v1/stream?room=a&client=session-client", relaytest.StreamOptions{Reconnect: true, ReconnectGate: gate})
	c := s.Connected(t)
	join := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/b"})
	if join.Status != http.StatusNoContent {
		t.Fatalf("join: status %d: %s", join.Status, join.Body)
	}
	s.Expect(t, "roomcast:joined")
	expectIDs(t, s, []string{r.PublishJSON(t, "b", map[string]any{}), r.PublishJSON(t, "a", map[string]any{})})

	serverClose(t, r, c.Connection)
	s.Expect(t, "roomcast:closing")
	relaytest.Eventually(t, "the client is away", func() bool { return s.Disconnects() == 1 })
	missed := []string{r.PublishJSON(t, "b", map[string]any{}), r.PublishJSON(t, "a", map[string]any{})}
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/events", Header: contentType("application/json"),
		Body: []byte(`{"rooms":["a","b"]}`)})
	var p relaytest.Published
	resp.JSON(t, &p)
	missed = append(missed, *p.ID, r.PublishJSON(t, "b", map[string]any{}))
	gate <- struct{}{}

	back := s.Connected(t)
	if !slices.Equal(back.Rooms, []string{"a", "b"}) || back.Client != "session-client" {
		t.Errorf("after the reconnect: %+v, want rooms [a b]", back)
	}
	expectIDs(t, s, missed)
	expectIDs(t, s, []string{r.PublishJSON(t, "b", map[string]any{}), r.PublishJSON(t, "a", map[string]any{})})
}

// TestResumeAbruptDrop drops the TCP connection under a multi-room stream
// while events are published; r3labs/sse reconnects on its own, and every
// event arrives exactly once, in order, whatever the timing.
func TestResumeAbruptDrop(t *testing.T) {
	// The drop comes from the test server's side, which can only cut the
	// connections net/http still tracks: keep the stream off the shared
	// writer. TestHijackedDrop covers a hijacked stream whose client drops.
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{DisableHijack: true}})
	s := r.Subscribe(t, "/v1/stream?room=x&room=y", relaytest.StreamOptions{Reconnect: true})
	s.Connected(t)
	var ids []string
	for i := range 40 {
		ids = append(ids, r.PublishJSON(t, []string{"x", "y"}[i%2], map[string]any{"data": i}))
		if i == 10 {
			r.HTTP.CloseClientConnections()
			// The publisher's idle connection went too; forget it
			// rather than have a POST, which is not retried, fail on it.
			r.Client().CloseIdleConnections()
		}
	}
	var got []string
	for len(got) < len(ids) {
		ev := s.NextEvent(t)
		switch ev.Event {
		case "roomcast:connected":
		case "message":
			got = append(got, ev.EventID(t))
		default:
			t.Fatalf("unexpected %q %s", ev.Event, ev.Data)
		}
	}
	if !slices.Equal(got, ids) {
		t.Errorf("got %v, want %v", got, ids)
	}
	if s.Connects() < 2 {
		t.Errorf("the stream connected %d times, want a reconnect", s.Connects())
	}
}

// TestResumeRefused checks that cursors that cannot be honoured restore
// nothing and are answered with roomcast:reset and live events.
func TestResumeRefused(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	// A session in rooms a and b, and a single-room cursor.
	s := r.Subscribe(t, "/v1/stream?room=a", relaytest.StreamOptions{})
	c := s.Connected(t)
	if resp := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/b"}); resp.Status != http.StatusNoContent {
		t.Fatalf("join: %d %s", resp.Status, resp.Body)
	}
	s.Expect(t, "roomcast:joined")
	session := s.LastEventID()
	single := r.Subscribe(t, "/v1/rooms/a/events", relaytest.StreamOptions{})
	single.Connected(t)
	r.PublishJSON(t, "a", map[string]any{})
	single.NextEvent(t)
	singleCursor := single.LastEventID()
	// A relay with the same key but another history.
	other := relaytest.Start(t, relaytest.Options{})
	o := other.Subscribe(t, "/v1/rooms/a/events", relaytest.StreamOptions{})
	o.Connected(t)
	other.PublishJSON(t, "a", map[string]any{})
	o.NextEvent(t)
	foreign := o.LastEventID()

	cases := []struct {
		name, path, cursor, reason string
		rooms                      []string
	}{
		{"forged session cursor", "/v1/stream?room=a", relaytest.Tamper(session), "cursor_invalid", []string{"a"}},
		{"garbage on a multi-room stream", "/v1/stream?room=a", "garbage", "cursor_invalid", []string{"a"}},
		{"single-room cursor on a multi-room stream", "/v1/stream?room=a", singleCursor, "cursor_invalid", []string{"a"}},
		{"session cursor on a single-room stream", "/v1/rooms/a/events", session, "cursor_invalid", []string{"a"}},
		{"forged single-room cursor", "/v1/rooms/a/events", relaytest.Tamper(singleCursor), "cursor_invalid", []string{"a"}},
		{"cursor of another history", "/v1/rooms/a/events", foreign, "history_lost", []string{"a"}},
		{"oversized cursor", "/v1/rooms/a/events", strings.Repeat("A", 4096), "cursor_invalid", []string{"a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := r.Subscribe(t, tc.path, relaytest.StreamOptions{LastEventID: tc.cursor})
			if c := s.Connected(t); !slices.Equal(c.Rooms, tc.rooms) {
				t.Errorf("rooms %v, want %v: the cursor restored something", c.Rooms, tc.rooms)
			}
			reset := s.Expect(t, "roomcast:reset")
			var data map[string]string
			if err := json.Unmarshal([]byte(reset.Data), &data); err != nil || data["reason"] != tc.reason || len(data) != 1 {
				t.Errorf("reset data %s, want reason %s", reset.Data, tc.reason)
			}
			if reset.ID == "" || reset.ID == tc.cursor {
				t.Errorf("reset id %q, want a fresh cursor", reset.ID)
			}
			r.PublishJSON(t, "b", map[string]any{})
			live := r.PublishJSON(t, "a", map[string]any{})
			expectIDs(t, s, []string{live})
		})
	}
}

// TestResumeExpired checks that a cursor older than retention gets a
// reset for its room, then live events.
func TestResumeExpired(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Memory: memory.Options{HistorySize: 3}})
	s := r.Subscribe(t, "/v1/rooms/short/events", relaytest.StreamOptions{})
	s.Connected(t)
	expectIDs(t, s, []string{r.PublishJSON(t, "short", map[string]any{})})
	cursor := s.LastEventID()
	s.Close()
	for i := range 10 {
		r.PublishJSON(t, "short", map[string]any{"data": i})
	}
	back := r.Subscribe(t, "/v1/rooms/short/events", relaytest.StreamOptions{LastEventID: cursor})
	back.Connected(t)
	reset := back.Expect(t, "roomcast:reset")
	if reset.Data != `{"reason":"cursor_expired","room":"short"}` {
		t.Errorf("reset data %s", reset.Data)
	}
	expectIDs(t, back, []string{r.PublishJSON(t, "short", map[string]any{})})
}

// TestResumeCursorSize checks that the cursor of a 64-room stream stays
// within 1 KiB.
func TestResumeCursorSize(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	q := url.Values{}
	for i := range 64 {
		q.Add("room", "room-with-a-longish-name-"+strconv.Itoa(i))
	}
	s := r.Subscribe(t, "/v1/stream?"+q.Encode(), relaytest.StreamOptions{})
	if c := s.Connected(t); len(c.Rooms) != 64 {
		t.Fatalf("%d rooms", len(c.Rooms))
	}
	for i := range 64 {
		r.PublishJSON(t, "room-with-a-longish-name-"+strconv.Itoa(i), map[string]any{})
	}
	for range 64 {
		s.NextEvent(t)
	}
	if n := len(s.LastEventID()); n == 0 || n > 1024 {
		t.Errorf("cursor of 64 rooms is %d bytes, want at most 1024", n)
	}
}

// deadlineWrites records, for one response, what happens while its write
// deadline is set: "D" set, "W" a write, "F" a flush, "C" cleared.
type deadlineWrites struct {
	http.ResponseWriter
	mu  sync.Mutex
	log []string
}

func (d *deadlineWrites) note(s string) {
	d.mu.Lock()
	d.log = append(d.log, s)
	d.mu.Unlock()
}

func (d *deadlineWrites) Write(p []byte) (int, error) {
	d.note("W")
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWrites) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.note("C")
	} else {
		d.note("D")
	}
	return http.NewResponseController(d.ResponseWriter).SetWriteDeadline(t)
}

func (d *deadlineWrites) FlushError() error {
	d.note("F")
	return http.NewResponseController(d.ResponseWriter).Flush()
}

func (d *deadlineWrites) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// windows returns what happened within each deadline.
func (d *deadlineWrites) windows() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	var cur strings.Builder
	open := false
	for _, e := range d.log {
		switch e {
		case "D":
			cur.Reset()
			open = true
		case "C":
			if open {
				out = append(out, cur.String())
			}
			open = false
		default:
			if open {
				cur.WriteString(e)
			}
		}
	}
	return out
}

// TestGzipStreamWritesUnderDeadlineOnly: a gzipped HTTP/2 stream holds
// its write deadline only while it hands one batch of compressed bytes to
// the connection (one write, one flush), never while it compresses. The
// compressor wrote to the connection itself, under the deadline, in
// several writes: a 200 ms deadline then ran out on a loaded machine while
// the stream opened (the compressor's first use allocates about a
// megabyte), and HTTP/2 reset the stream with INTERNAL_ERROR
// (TestH2CStreams, compress=all).
func TestGzipStreamWritesUnderDeadlineOnly(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var streams []*deadlineWrites
	r := relaytest.Start(t, relaytest.Options{
		H2C:   true,
		Relay: relay.Options{Compress: relay.CompressAll},
		Wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/events") {
					d := &deadlineWrites{ResponseWriter: w}
					mu.Lock()
					streams = append(streams, d)
					mu.Unlock()
					w = d
				}
				next.ServeHTTP(w, req)
			})
		},
	})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v1/rooms/gz/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("stream over %s, Content-Encoding %q: want HTTP/2, gzip", resp.Proto, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(t, "/v1/rooms/gz/events", "text/plain", []byte(strings.Repeat("compressible ", 200)), nil)
	body := bufio.NewReader(zr)
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, "compressible compressible") {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(streams) != 1 {
		t.Fatalf("%d streams seen, want 1", len(streams))
	}
	w := streams[0].windows()
	if len(w) < 2 {
		t.Fatalf("deadlines %q: want one per batch, at least the opening and the event", w)
	}
	for i, win := range w {
		if win != "WF" {
			t.Errorf("batch %d: %q under the write deadline, want one write and one flush (WF)", i, win)
		}
	}
}
