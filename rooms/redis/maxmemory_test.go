package redis

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// When Redis runs out of memory under noeviction, a publish fails with
// ErrBackboneDown (a 503 at the edge) rather than losing history, and
// everything it did accept stays readable.
func TestMaxMemoryRefusesPublish(t *testing.T) {
	srv := redistest.NewServer(t)
	admin := srv.Client()
	defer admin.Close()
	ctx := context.Background()
	b := openBackbone(t, srv.URL(), Options{HistorySize: 100000})
	if _, err := b.Epoch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	// A little above what the server uses now: it fills after a few
	// hundred large events.
	if err := admin.ConfigSet(ctx, "maxmemory", "4mb").Err(); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(strings.Repeat("x", 32<<10))
	var accepted []rooms.Published
	var refused error
	for range 2000 {
		p, err := b.Publish(ctx, rooms.Message{Channels: []string{"full"}, Event: "message", Data: data}, "")
		if err != nil {
			refused = err
			break
		}
		accepted = append(accepted, p)
	}
	if refused == nil {
		t.Fatal("2000 events of 32 KiB fit in 4 MB")
	}
	if !errors.Is(refused, rooms.ErrBackboneDown) || !strings.Contains(refused.Error(), "OOM") {
		t.Fatalf("publish refused with %v, want ErrBackboneDown from an OOM", refused)
	}
	if errors.Is(refused, rooms.ErrOutcomeUnknown) {
		t.Fatalf("Redis refused the publish, yet its outcome is called unknown: %v", refused)
	}
	h, err := b.Since(ctx, "full", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != len(accepted) || h.Events[len(h.Events)-1].Seq != accepted[len(accepted)-1].Seq {
		t.Errorf("history holds %d events, %d were accepted", len(h.Events), len(accepted))
	}
}
