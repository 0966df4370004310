package rooms_test

import (
	"context"
	"errors"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestHistoryPagesBackAndAuthorizes(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{Namespaces: &rooms.Namespaces{Named: map[string]rooms.NamespaceOptions{"vip": {}}, Strict: true}}, memory.Options{})
	ctx := context.Background()
	var seqs []uint64
	for range 5 {
		seqs = append(seqs, e.send("vip:a"))
	}
	page, err := e.hub.History(ctx, rooms.HistoryRequest{Identity: rooms.Identity{User: "u"}, Channel: "vip:a", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 2 || page.Events[0].Seq != seqs[3] || page.Events[1].Seq != seqs[4] || page.Before == "" {
		t.Fatalf("newest page: %d events, before %q", len(page.Events), page.Before)
	}
	older, err := e.hub.History(ctx, rooms.HistoryRequest{Identity: rooms.Identity{User: "u"}, Channel: "vip:a", Limit: 10, Before: page.Before})
	if err != nil {
		t.Fatal(err)
	}
	if len(older.Events) != 3 || older.Events[2].Seq != seqs[2] || older.Before != "" {
		t.Fatalf("oldest page: %d events, before %q", len(older.Events), older.Before)
	}
	// An id of another history reads as nothing.
	gone, err := e.hub.History(ctx, rooms.HistoryRequest{Identity: rooms.Identity{User: "u"}, Channel: "vip:a", Limit: 10, Before: rooms.FormatEventID("0000dead", seqs[4])})
	if err != nil || len(gone.Events) != 0 {
		t.Fatalf("another epoch's id: %d events, %v", len(gone.Events), err)
	}
	if _, err := e.hub.History(ctx, rooms.HistoryRequest{Channel: "nope:a", Limit: 1}); !errors.Is(err, rooms.ErrUnknownNamespace) {
		t.Fatalf("an unknown namespace's history: %v, want ErrUnknownNamespace", err)
	}
}
