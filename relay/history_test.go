package relay_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// TestHistory pages a room's retained events back from the newest, oldest
// first within a page.
func TestHistory(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	var ids []string
	for i := range 5 {
		ids = append(ids, r.PublishJSON(t, "h", map[string]any{"data": i}))
	}
	r.PublishJSON(t, "elsewhere", map[string]any{})
	type page struct {
		Events []json.RawMessage `json:"events"`
		Before *string           `json:"before"`
	}
	get := func(path string) page {
		t.Helper()
		resp := r.Get(t, path)
		if resp.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.Status, resp.Body)
		}
		if got, want := objectKeys(t, resp.Body), sorted("events", "before"); !slices.Equal(got, want) {
			t.Errorf("keys %v, want %v", got, want)
		}
		var p page
		resp.JSON(t, &p)
		return p
	}
	if all := get("/v1/rooms/h/history"); !slices.Equal(envelopeIDs(t, all.Events), ids) || all.Before != nil {
		t.Errorf("whole history %v before %v, want %v", envelopeIDs(t, all.Events), all.Before, ids)
	}
	path := "/v1/rooms/h/history?limit=2"
	for _, want := range [][]string{ids[3:], ids[1:3], ids[:1]} {
		p := get(path)
		if got := envelopeIDs(t, p.Events); !slices.Equal(got, want) {
			t.Fatalf("GET %s: %v, want %v", path, got, want)
		}
		if p.Before == nil {
			if want[0] != ids[0] {
				t.Fatalf("GET %s: no before, but older events remain", path)
			}
			break
		}
		path = "/v1/rooms/h/history?limit=2&before=" + *p.Before
	}
	if obj := r.Get(t, "/v1/rooms/never/history").Object(t); string(obj["events"]) != "[]" || string(obj["before"]) != "null" {
		t.Errorf("history of an unknown room: %v", obj)
	}
}

// A namespace's history_size rules its rooms' history.
func TestNamespaceRetention(t *testing.T) {
	t.Parallel()
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone},
		Named:   map[string]rooms.NamespaceOptions{"brief": {Anonymous: true, Publish: rooms.PublishAnyone, HistorySize: 3}},
	}
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Namespaces: ns}, Hub: rooms.HubOptions{Namespaces: ns}})
	var ids []string
	for range 10 {
		ids = append(ids, r.PublishJSON(t, "brief:x", map[string]any{"data": 1}))
		r.PublishJSON(t, "x", map[string]any{"data": 1})
	}
	for room, want := range map[string][]string{"brief:x": ids[7:], "x": nil} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodGet, Path: "/v1/rooms/" + room + "/history?limit=100"})
		var h struct{ Events []struct{ ID string } }
		resp.JSON(t, &h)
		if want == nil {
			if len(h.Events) != 10 {
				t.Errorf("%s keeps %d of 10 events", room, len(h.Events))
			}
			continue
		}
		var got []string
		for _, e := range h.Events {
			got = append(got, e.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s keeps %v, want the newest 3 %v", room, got, want)
		}
	}
}
