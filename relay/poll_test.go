package relay_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"fmt"
	"net/url"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// pollAnswer is the body of a poll.
type pollAnswer struct {
	Events     []json.RawMessage `json:"events"`
	Cursor     string            `json:"cursor"`
	Reset      bool              `json:"reset"`
	Client     string            `json:"client"`
	Connection string            `json:"connection"`
}

func poll(t *testing.T, r *relaytest.Relay, path string) pollAnswer {
	t.Helper()
	resp := r.Get(t, path)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", path, resp.Status, resp.Body)
	}
	var a pollAnswer
	resp.JSON(t, &a)
	if a.Events == nil || a.Cursor == "" {
		t.Fatalf("GET %s: answer %s lacks events or cursor", path, resp.Body)
	}
	return a
}

// TestPoll walks a poller through its life: a first poll gives the tail,
// a poll behind answers at once, a poll at the tail times out with the
// cursor it was given.
func TestPoll(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	resp := r.Get(t, "/v1/rooms/p/poll")
	if got, want := objectKeys(t, resp.Body), sorted("events", "cursor", "client", "connection"); !slices.Equal(got, want) {
		t.Errorf("first answer keys %v, want %v", got, want)
	}
	if obj := resp.Object(t); string(obj["events"]) != "[]" {
		t.Errorf("first answer events %s, want []", obj["events"])
	}
	var first pollAnswer
	resp.JSON(t, &first)

	ids := []string{r.PublishJSON(t, "p", map[string]any{"data": 1}), r.PublishJSON(t, "p", map[string]any{"data": 2})}
	// The default hold (25 s) is longer than the client's deadline: an
	// answer at all means it came at once.
	behind := poll(t, r, "/v1/rooms/p/poll?cursor="+first.Cursor)
	if got := envelopeIDs(t, behind.Events); !slices.Equal(got, ids) || behind.Reset {
		t.Errorf("events %v reset %v, want %v", got, behind.Reset, ids)
	}
	if behind.Cursor == first.Cursor {
		t.Error("the cursor did not move past the events")
	}

	for _, timeout := range []string{"0", "0.05"} {
		idle := poll(t, r, "/v1/rooms/p/poll?timeout="+timeout+"&cursor="+behind.Cursor)
		if len(idle.Events) != 0 || idle.Cursor != behind.Cursor {
			t.Errorf("timeout %s: events %s cursor %q, want none and the cursor given", timeout, idle.Events, idle.Cursor)
		}
	}
}

// TestPollHeld checks that a held poll answers as soon as an event arrives.
func TestPollHeld(t *testing.T) {
	entered := make(chan struct{}, 1)
	r := relaytest.Start(t, relaytest.Options{Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, "/poll") && req.URL.Query().Has("cursor") {
				entered <- struct{}{}
			}
			h.ServeHTTP(w, req)
		})
	}})
	tail := poll(t, r, "/v1/rooms/held/poll?client=held-client")

	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	start := time.Now()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v1/rooms/held/poll?timeout=30&client=held-client&proof="+tail.Connection+"&cursor="+tail.Cursor, nil)
		resp, err := r.Client().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, b, err}
	}()
	<-entered
	id := r.PublishJSON(t, "held", map[string]any{"data": "wake up"})
	res := <-done
	if res.err != nil || res.status != http.StatusOK {
		t.Fatalf("held poll: %v, status %d: %s", res.err, res.status, res.body)
	}
	if elapsed := time.Since(start); elapsed >= 30*time.Second {
		t.Errorf("the held poll answered after its timeout (%s)", elapsed)
	}
	var a pollAnswer
	if err := json.Unmarshal(res.body, &a); err != nil {
		t.Fatal(err)
	}
	if got := envelopeIDs(t, a.Events); !slices.Equal(got, []string{id}) {
		t.Fatalf("held poll got %v, want %s", got, id)
	}
	next := poll(t, r, "/v1/rooms/held/poll?timeout=0&cursor="+a.Cursor)
	if len(next.Events) != 0 {
		t.Errorf("the held poll's cursor did not move past its event: %s", next.Events)
	}
}

// TestPollReset checks that a cursor older than retention is answered with
// reset and the oldest retained events.
func TestPollReset(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Memory: memory.Options{HistorySize: 3}})
	old := poll(t, r, "/v1/rooms/short/poll")
	var ids []string
	for i := range 6 {
		ids = append(ids, r.PublishJSON(t, "short", map[string]any{"data": i}))
	}
	a := poll(t, r, "/v1/rooms/short/poll?cursor="+old.Cursor)
	if !a.Reset {
		t.Error("reset not set for a cursor older than retention")
	}
	if got := envelopeIDs(t, a.Events); !slices.Equal(got, ids[3:]) {
		t.Errorf("events %v, want the retained %v", got, ids[3:])
	}
	if next := poll(t, r, "/v1/rooms/short/poll?timeout=0&cursor="+a.Cursor); next.Reset || len(next.Events) != 0 {
		t.Errorf("after the reset: reset %v events %s, want neither", next.Reset, next.Events)
	}
}

// TestPollMultiRoom checks /v1/poll: several rooms, a multi-room event once.
func TestPollMultiRoom(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	first := poll(t, r, "/v1/poll?room=a&room=b")
	ids := []string{r.PublishJSON(t, "a", map[string]any{}), r.PublishJSON(t, "b", map[string]any{})}
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/events", Header: contentType("application/json"),
		Body: []byte(`{"rooms":["a","b","c"]}`)})
	var p relaytest.Published
	resp.JSON(t, &p)
	ids = append(ids, *p.ID, r.PublishJSON(t, "c", map[string]any{}))
	a := poll(t, r, "/v1/poll?room=a,b&cursor="+first.Cursor)
	if got := envelopeIDs(t, a.Events); !slices.Equal(got, ids[:3]) {
		t.Errorf("events %v, want %v", got, ids[:3])
	}
}

// TestFreedChannelsDoNotExpireQuietCursors: the embedded backbone frees a
// channel with history a retention age after it emptied; freeing many
// (here enough names to reach every bucket of names it summarises) must not
// answer a quiet room's cursor with cursor_expired — that room lost nothing
// — while a cursor of a freed room from before its events still is one.
func TestFreedChannelsDoNotExpireQuietCursors(t *testing.T) {
	const many = 1 << 15
	o := relaytest.Options{
		Memory: memory.Options{HistoryAge: 300 * time.Millisecond},
		Relay: relay.Options{Limits: relay.Limits{PublishRate: 1e6, PublishBurst: 1e6,
			PublishCallerRate: 1e6, PublishCallerBurst: 1e6}},
	}
	r := startMetered(t, o)
	baseline := gauges(t, r)["roomcast_backbone_channels"]
	quiet := firstCursor(t, r, "/v1/rooms/quiet/poll?timeout=0")
	gone := firstCursor(t, r, "/v1/rooms/gone/poll?timeout=0")
	r.PublishJSON(t, "gone", map[string]string{"event": "e", "data": "lost to retention"})
	for i := 0; i < many; i += rooms.MaxEventRooms {
		names := make([]string, rooms.MaxEventRooms)
		for j := range names {
			names[j] = fmt.Sprintf("busy-%d", i+j)
		}
		body, _ := json.Marshal(map[string]any{"rooms": names, "event": "e", "data": "x"})
		if resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/events", Body: body,
			Header: http.Header{"Content-Type": {"application/json"}}}); resp.Status >= 300 {
			t.Fatalf("publish: %d %s", resp.Status, resp.Body)
		}
	}
	relaytest.Eventually(t, "every channel with history is freed", func() bool {
		return gauges(t, r)["roomcast_backbone_channels"] <= baseline
	})
	var a struct {
		Events []json.RawMessage
		Reset  bool
	}
	r.Get(t, "/v1/rooms/quiet/poll?timeout=0&cursor="+url.QueryEscape(quiet)).JSON(t, &a)
	if a.Reset || len(a.Events) != 0 {
		t.Errorf("the quiet room's cursor, after other rooms were freed: reset %v, %d events; want neither", a.Reset, len(a.Events))
	}
	a.Reset = false
	r.Get(t, "/v1/rooms/gone/poll?timeout=0&cursor="+url.QueryEscape(gone)).JSON(t, &a)
	if !a.Reset {
		t.Errorf("a cursor from before a freed room's events: no reset; its events were lost")
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
