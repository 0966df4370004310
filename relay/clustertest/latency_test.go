package clustertest

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// Delivery latency, publish request sent to event read by a stream on A,
// for publishes on A itself and on B, measured in the same run and
// interleaved so both see the same conditions. The numbers are logged, not
// asserted: wall-clock limits make flaky tests. Run with -v to see them
// (docs/benchmarks.md records them).
func TestDeliveryLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measures for about 5 s")
	}
	// Not parallel: the measurement runs before the other tests start.
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	s := open(t, a, roomPath("latency"), server())

	const perPath = 500
	const rate = 100 // events per second per path
	sent := make(map[string]time.Time, 2*perPath)
	from := make(map[string]string, 2*perPath)
	tick := time.NewTicker(time.Second / (2 * rate))
	defer tick.Stop()
	for i := range 2 * perPath {
		<-tick.C
		n := []*node{a, b}[i%2]
		data := fmt.Sprintf("latency %d", i)
		start := time.Now()
		ans := do(t, http.MethodPost, n.url+roomPath("latency"), server(), data)
		if ans.status != http.StatusAccepted {
			t.Fatalf("publish %d on %s: %d %s", i, n.name, ans.status, ans.body)
		}
		sent[data], from[data] = start, n.name
	}
	lat := map[string][]time.Duration{}
	for range 2 * perPath {
		f := s.next(t)
		data := f.text(t)
		lat[from[data]] = append(lat[from[data]], f.At.Sub(sent[data]))
	}
	for _, name := range []string{"A", "B"} {
		d := lat[name]
		if len(d) != perPath {
			t.Fatalf("%d events published on %s arrived, want %d", len(d), name, perPath)
		}
		slices.Sort(d)
		kind := "single-instance (publish on A)"
		if name == "B" {
			kind = "cross-instance (publish on B)"
		}
		t.Logf("%s: n=%d p50=%s p99=%s max=%s", kind, len(d), pct(d, 50), pct(d, 99), d[len(d)-1])
	}
}

// pct returns the p-th percentile of sorted d (nearest rank).
func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p+99)/100 - 1
	return d[max(i, 0)].Round(time.Microsecond)
}
