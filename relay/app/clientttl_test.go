package app

import (
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/config"
)

// TestClientTTLOutlivesRenewals: a client id's binding outlives the longest
// gap between its renewals, so that no one can claim the id of a live
// stream (renewed at its heartbeats) or poller (renewed at its polls).
func TestClientTTLOutlivesRenewals(t *testing.T) {
	for _, c := range []struct {
		heartbeat, pollMax, session time.Duration
	}{
		{15 * time.Second, 55 * time.Second, 5 * time.Second},
		{5 * time.Minute, 55 * time.Second, 5 * time.Second},
		{15 * time.Second, 10 * time.Minute, 5 * time.Second},
	} {
		ttl := clientTTL(config.Config{Heartbeat: c.heartbeat, PollMax: c.pollMax, PollSessionTTL: c.session})
		// A stream renews at the first heartbeat after a quarter of it.
		if gap := ttl/4 + c.heartbeat; gap >= ttl {
			t.Errorf("%+v: TTL %s, a stream renews up to %s apart", c, ttl, gap)
		}
		// A poller renews at its first poll after a quarter of it; the
		// next poll may come a whole hold and a parked session later.
		if gap := ttl/4 + c.pollMax + c.session; gap >= ttl {
			t.Errorf("%+v: TTL %s, a poller renews up to %s apart", c, ttl, gap)
		}
		if ttl < 2*time.Minute {
			t.Errorf("%+v: TTL %s, below the documented 2 minutes", c, ttl)
		}
	}
}
