package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// TestTakeAll: several allowances are spent together or not at all, the
// wait is the longest one, and instances sharing the Redis share them.
func TestTakeAll(t *testing.T) {
	t.Parallel()
	a := sharedBackbone(t, Options{})
	b := sharedBackbone(t, Options{Prefix: a.opts.Prefix})
	ctx := context.Background()
	// A slow refill: nothing comes back while the test runs.
	total := rooms.RateLimit{Key: "publish:*|{ip:1}", Rate: 0.01, Burst: 3}
	ns := func(name string) rooms.RateLimit {
		return rooms.RateLimit{Key: "publish:" + name + "|{ip:1}", Rate: 0.01, Burst: 2}
	}
	take := func(bb *Backbone, limits ...rooms.RateLimit) (bool, time.Duration) {
		t.Helper()
		ok, wait, err := bb.TakeAll(ctx, limits)
		if err != nil {
			t.Fatal(err)
		}
		return ok, wait
	}
	if ok, _ := take(a, ns("x"), total); !ok {
		t.Fatal("first take refused")
	}
	if ok, _ := take(b, ns("x"), total); !ok {
		t.Fatal("second take refused")
	}
	// x is spent: a third take spends nothing of the total either.
	ok, wait := take(a, ns("x"), total)
	if ok || wait < 90*time.Second || wait > 100*time.Second {
		t.Fatalf("third take to x: ok %v, wait %s; want refused, about 100 s", ok, wait)
	}
	if ok, _ := take(b, ns("y"), total); !ok {
		t.Fatal("the refused take spent the total")
	}
	// The total is spent now, whatever the namespace.
	if ok, _ := take(a, ns("z"), total); ok {
		t.Fatal("a fourth publish was allowed past a total of 3")
	}
	if ok, _ := take(b, ns("z")); !ok {
		t.Fatal("the refused take spent z's allowance")
	}
	// Rates too slow for an interval in int64 microseconds, and rates
	// that are not numbers, still limit: one request, then none.
	for _, rate := range []float64{1e-300, 0, -1} {
		slow := rooms.RateLimit{Key: "slow|" + strconv.FormatFloat(rate, 'g', -1, 64), Rate: rate, Burst: 1}
		if ok, _ := take(a, slow); !ok {
			t.Fatalf("rate %g: the first request refused", rate)
		}
		if ok, _ := take(b, slow); ok {
			t.Errorf("rate %g: a second request allowed", rate)
		}
	}
	if ok, wait, err := a.TakeAll(ctx, nil); !ok || wait != 0 || err != nil {
		t.Errorf("nothing to take: %v %s %v", ok, wait, err)
	}
}
