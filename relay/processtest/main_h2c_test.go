package processtest

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// h2cClient speaks HTTP/2 without TLS only, as a proxy in front of the
// relay would, and counts the connections it opens.
func h2cClient(t *testing.T, dials *atomic.Int64) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestH2CStreams: with -h2c, streams share one HTTP/2 connection without
// TLS, each gets every event, and one idle past the write timeout stays
// open (an HTTP/2 write deadline left set would reset the stream when it
// passed).
func TestH2CStreams(t *testing.T) {
	t.Parallel()
	for _, compress := range []string{"polls", "all"} {
		t.Run("compress="+compress, func(t *testing.T) {
			t.Parallel()
			testH2CStreams(t, compress)
		})
	}
}

func testH2CStreams(t *testing.T, compress string) {
	_, addr := startRelay(t, nil, "-h2c", "-heartbeat", "1s", "-write-timeout", "200ms", "-compress", compress)
	var dials atomic.Int64
	client := h2cClient(t, &dials)
	events := "http://" + addr + "/v1/rooms/h2/events"
	const n = 20
	streams := make([]*stream, n)
	for i := range streams {
		streams[i] = openStreamWith(t, client, events, nil)
		if streams[i].resp.ProtoMajor != 2 {
			t.Fatalf("stream %d over %s, want HTTP/2", i, streams[i].resp.Proto)
		}
		streams[i].connected(t)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("%d streams took %d connections, want 1", n, d)
	}
	// Three heartbeats, a second apart, are idle gaps well past the
	// 200 ms write timeout.
	streams[0].pings(t, 3)
	p := post(t, events, "over h2c")
	for _, s := range streams {
		s.event(t, p, "over h2c")
	}
}

// TestH2COff: without -h2c an HTTP/2 request without TLS is not served.
func TestH2COff(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil)
	var dials atomic.Int64
	resp, err := h2cClient(t, &dials).Get("http://" + addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("HTTP/2 without TLS answered %s over %s, want it refused", resp.Status, resp.Proto)
	}
	// HTTP/1.1 still works.
	resp, err = http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		t.Fatalf("HTTP/1.1 health check: %s over %s", resp.Status, resp.Proto)
	}
}
