package sentineltest

import (
	"context"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/internal/backbonetest"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// The Backbone contract holds through Sentinel: a primary, a replica and
// three sentinels, the backbone finding the primary through them.
func TestConformanceThroughSentinel(t *testing.T) {
	top := redistest.NewTopology(t, redistest.TopologyOptions{})
	backbonetest.Run(t, func(t *testing.T, cfg backbonetest.Config) rooms.Backbone {
		return sentinelBackbone(t, top, redis.Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge})
	})
}

// sentinelBackbone opens a backbone through top's sentinels, closed when
// the test ends.
func sentinelBackbone(t testing.TB, top *redistest.Topology, o redis.Options) *redis.Backbone {
	t.Helper()
	o.SentinelMaster = redistest.SentinelMaster
	if o.OpTimeout == 0 {
		o.OpTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), redistest.TopologyWait)
	defer cancel()
	b, err := redis.New(ctx, top.URL(), o)
	if err != nil {
		t.Fatalf("redis.New through sentinels: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
