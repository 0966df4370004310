package redis

import (
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/backbonetest"
)

// TestConformance runs the Backbone conformance suite against the shared
// Redis, each subtest under a key prefix of its own.
func TestConformance(t *testing.T) {
	t.Parallel()
	backbonetest.Run(t, func(t *testing.T, cfg backbonetest.Config) rooms.Backbone {
		return sharedBackbone(t, Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge})
	})
}
