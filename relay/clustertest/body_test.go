package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// streamStatus opens a stream on url and returns its status, closing it at
// once.
func streamStatus(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer{body: b}.errorCode()
}

// TestSlowBodiesCountAcrossInstances: requests still sending their bodies
// hold connection slots of their address on every instance sharing Redis,
// as streams do: two slow bodies on two instances fill an address's limit
// of two, a third is refused and answered at once, and a stream from that
// address is refused until the slow bodies go.
func TestSlowBodiesCountAcrossInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, "-max-conns-per-ip", "2", "-read-body-timeout", "1m")
	a, b := c.nodes[0], c.nodes[1]
	type result struct {
		i      int
		status int
		code   string
		err    error
	}
	// A publisher allowed to publish there: its handler reads the body
	// (a refused one is answered before its body is read).
	publisher := userToken(t, "publisher", nil)
	var conns []net.Conn
	results := make(chan result, 3)
	for i, n := range []*node{a, b, a} {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(n.url, "http://"), waitFor)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
		head := "POST /v1/rooms/lobby/events HTTP/1.1\r\nHost: relay.test\r\nAuthorization: Bearer " + publisher +
			"\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(waitFor))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				results <- result{i: i, err: err}
				return
			}
			defer resp.Body.Close()
			var e struct{ Error struct{ Code string } }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			results <- result{i: i, status: resp.StatusCode, code: e.Error.Code}
		}()
	}
	first := <-results
	if first.err != nil || first.status != http.StatusTooManyRequests || first.code != "too_many_connections" {
		t.Fatalf("three slow bodies from an address allowed two: first answer %d %q %v, want 429 too_many_connections",
			first.status, first.code, first.err)
	}
	alice := bearer(userToken(t, "alice", nil))
	if status, code := streamStatus(t, b.url+"/v1/rooms/lobby/events", alice); status != http.StatusTooManyRequests || code != "too_many_connections" {
		t.Fatalf("a stream while two slow bodies hold the address's slots: %d %q, want 429 too_many_connections", status, code)
	}
	for i, conn := range conns {
		if i != first.i {
			conn.Close()
		}
	}
	for range len(conns) - 1 {
		<-results
	}
	relaytest.Eventually(t, "the slow bodies' slots are given back", func() bool {
		status, _ := streamStatus(t, b.url+"/v1/rooms/lobby/events", alice)
		return status == http.StatusOK
	})
}
