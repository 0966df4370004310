package relay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// metric scrapes /metrics and returns the value of the sample name, and
// whether it was there.
func metric(t *testing.T, r *relaytest.Relay, name string) (float64, bool) {
	t.Helper()
	resp := r.Scrape(t, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.Status)
	}
	sc := bufio.NewScanner(bytes.NewReader(resp.Body))
	for sc.Scan() {
		sample, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || sample != name {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics %s: %v", name, err)
		}
		return v, true
	}
	return 0, false
}

// TestRateBucketsAreBoundedGlobally: the in-memory rate-limit buckets are
// keyed by caller, and callers behind a trusted proxy (or with IPv6
// addresses) are many; one publish from each new address must not grow
// them past ROOMCAST_MAX_RATE_BUCKETS, and a new caller is served again
// once buckets refill (issue 12, item 2).
func TestRateBucketsAreBoundedGlobally(t *testing.T) {
	const maxBuckets = 20
	o := relaytest.Options{Relay: relay.Options{Limits: relay.Limits{
		MaxRateBuckets: maxBuckets,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}}}
	r := startMetered(t, o)
	from := func(i int) http.Header {
		return http.Header{"X-Forwarded-For": {fmt.Sprintf("10.%d.%d.1", i/256, i%256)}}
	}
	publish := func(i int) int {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
			Header: from(i), Body: []byte(`{"event":"e","data":"x"}`)}).Status
	}
	for i := range 200 {
		status := publish(i)
		if status != http.StatusAccepted && status != http.StatusOK && status != http.StatusTooManyRequests {
			t.Fatalf("publish from address %d: status %d", i, status)
		}
		if i%20 == 19 {
			n, ok := metric(t, r, "roomcast_rate_buckets")
			if !ok {
				t.Fatal("no roomcast_rate_buckets gauge")
			}
			if n > maxBuckets {
				t.Fatalf("after %d addresses published, %v rate buckets kept, bound %d", i+1, n, maxBuckets)
			}
		}
	}
	relaytest.Eventually(t, "a new address is served once buckets refill", func() bool {
		s := publish(1000)
		return s == http.StatusAccepted || s == http.StatusOK
	})
}

// TestIPv6CallersAreCountedByNetwork: an anonymous IPv6 client owns its
// whole /64 and can send from any address in it; per-address bounds count
// the /64, so rotating addresses does not make it a new caller, while a
// client in another /64 is one.
func TestIPv6CallersAreCountedByNetwork(t *testing.T) {
	o := relaytest.Options{Relay: relay.Options{Limits: relay.Limits{
		MaxIdempotencyKeysPerCaller: 1,
		TrustedProxies:              []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}}}
	r := startMetered(t, o)
	publish := func(from, key string) *relaytest.Response {
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
			Header: http.Header{"X-Forwarded-For": {from}, "Idempotency-Key": {key}},
			Body:   []byte(`{"event":"e","data":"x"}`)})
	}
	if resp := publish("2001:db8:1:2::1", "k1"); resp.Status >= 300 {
		t.Fatalf("first key: %d %s", resp.Status, resp.Body)
	}
	resp := publish("2001:db8:1:2:ffff:1234:5678:9abc", "k2")
	if resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "limit_exceeded" {
		t.Fatalf("a second key from another address of the same /64: %d %s, want 429 limit_exceeded", resp.Status, resp.Body)
	}
	if resp := publish("2001:db8:1:3::1", "k3"); resp.Status >= 300 {
		t.Fatalf("a key from another /64: %d %s", resp.Status, resp.Body)
	}
	if resp := publish("192.0.2.7", "k4"); resp.Status >= 300 {
		t.Fatalf("a key from an IPv4 address: %d %s", resp.Status, resp.Body)
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

// TestIdempotencyKeysBoundedUnderRacingRetries: publishes racing with the
// same new key, some refused by a rate and one stored, must leave the key
// counted: a caller storing keys past its bound only had to send, beside
// each publish, copies of it that its rate refuses, when a refused copy
// that had held the key first took it back.
func TestIdempotencyKeysBoundedUnderRacingRetries(t *testing.T) {
	const copies = 8
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true, Publish: rooms.PublishAnyone},
		// A rate spent at once: every publish there past the first is
		// refused, after its key was held.
		Named: map[string]rooms.NamespaceOptions{"spent": {Anonymous: true, Publish: rooms.PublishAnyone,
			PublishRate: 0.001, PublishBurst: 1}},
	}
	o := relaytest.Options{
		Relay: relay.Options{Namespaces: ns, Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1000,
			PublishCallerRate: 1e6, PublishCallerBurst: 1e6}},
		Hub: rooms.HubOptions{Namespaces: ns},
	}
	r := startMetered(t, o)
	send := func(room, key string) int {
		req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/rooms/"+room+"/events", strings.NewReader(`{"event":"e","data":"x"}`))
		if err != nil {
			t.Error(err)
			return 0
		}
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := send("spent:r", ""); s != http.StatusAccepted {
		t.Fatalf("spending the namespace's rate: %d", s)
	}
	for i := range 200 {
		key := fmt.Sprintf("retry-%d", i)
		statuses := make(chan int, copies+1)
		for j := range copies + 1 {
			room := "spent:r"
			if j == copies/2 {
				room = "lobby"
			}
			go func() { statuses <- send(room, key) }()
		}
		for range copies + 1 {
			<-statuses
		}
	}
	// Every key the backbone stored for the caller is one it counts.
	g := gauges(t, r)
	if counted, stored := g["roomcast_idempotency_keys"], g["roomcast_backbone_idempotency_keys"]; counted < stored || stored == 0 {
		t.Fatalf("%v keys counted against the caller, %v stored", counted, stored)
	}
}
