package relay_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

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
