package relay_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

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

// TestMultiRoomPollAddedRoomAcrossPages: a poll that adds a room to its
// cursor starts that room at its head, past a two-room event whose copy
// through the older room the answer has not reached yet (more history
// than one answer holds). The next poll, from that answer's cursor, must
// answer the event through the older room.
func TestMultiRoomPollAddedRoomAcrossPages(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Hub: rooms.HubOptions{PollLimit: 3}})
	c0 := poll(t, r, "/v1/poll?room=z").Cursor
	var want []string
	for i := range 5 {
		want = append(want, r.PublishJSON(t, "z", map[string]any{"data": i}))
	}
	// The room added later is named first: counted as held from the
	// start, it would be the one to answer the event.
	want = append(want, publishRooms(t, r, "a", "z"))

	var got []string
	cursor := c0
	for range 4 {
		a := poll(t, r, "/v1/poll?room=a,z&timeout=0&cursor="+cursor)
		got = append(got, envelopeIDs(t, a.Events)...)
		cursor = a.Cursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("polled %v, want %v", got, want)
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
