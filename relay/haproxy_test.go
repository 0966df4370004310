package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// haproxySource is the address HAProxy connects to the relay from, the only
// one the relay trusts; clients reach HAProxy from 127.0.0.1.
const haproxySource = "127.0.0.2"

// startHAProxy runs Debian's haproxy in front of backend (host:port) with
// "option forwardfor", which adds an X-Forwarded-For line of its own after
// the client's. It returns the address to send requests to. Without
// haproxy the test fails under CI=true and is skipped, loudly, elsewhere.
func startHAProxy(t *testing.T, backend string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("haproxy is not installed (apt-get install haproxy); CI=true makes this a failure")
		}
		fmt.Fprintln(os.Stderr, "!!! SKIPPING "+t.Name()+": haproxy is not installed (CI=true makes this a failure)")
		t.Skip("haproxy is not installed")
	}
	dir := t.TempDir()
	var addr string
	// HAProxy cannot bind port 0 and say which port it got: a free port
	// below the ephemeral range, another if someone took it first.
	roomstest.StartOnFreePort(t, func(port int) error {
		addr = "127.0.0.1:" + strconv.Itoa(port)
		cfg := filepath.Join(dir, "haproxy.cfg")
		conf := `global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend relay
  bind ` + addr + `
  option forwardfor
  default_backend relay
backend relay
  server relay ` + backend + ` source ` + haproxySource + `
`
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		// -db: stay in the foreground, so that the test owns the process.
		p := relaytest.StartProcess(t, exec.Command(bin, "-db", "-f", cfg), relaytest.ProcessOptions{Name: "haproxy", Combined: true})
		var exited bool
		roomstest.Eventually(t, "haproxy listens on "+addr+" or exits", func() bool {
			select {
			case <-p.Done():
				exited = true
				return true
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		if exited {
			return fmt.Errorf("haproxy exited: %s", p.Stdout.String())
		}
		return nil
	})
	return addr
}

// postThrough sends an anonymous publish to addr with extra header lines
// written as given, and returns the status.
func postThrough(t *testing.T, addr string, lines ...string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, relaytest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST /v1/rooms/public:lobby/events HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
	for _, l := range lines {
		req += l + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n{}"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(relaytest.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestBehindHAProxy: behind a real HAProxy with "option forwardfor", the
// X-Forwarded-For line a client sends itself does not name it: the line
// HAProxy adds does. Anonymous publishes are limited to one per address,
// so a client that names itself anew in each request still gets one.
func TestBehindHAProxy(t *testing.T) {
	t.Parallel()
	r := startLimited(t, relay.Limits{PublishRate: 0.001, PublishBurst: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix(haproxySource + "/32")}})
	proxy := startHAProxy(t, r.HTTP.Listener.Addr().String())

	if got := postThrough(t, proxy, "X-Forwarded-For: 203.0.113.1"); got != http.StatusAccepted {
		t.Fatalf("first publish through HAProxy: %d", got)
	}
	for i := 2; i < 5; i++ {
		spoofed := "203.0.113." + strconv.Itoa(i)
		if got := postThrough(t, proxy, "X-Forwarded-For: "+spoofed); got != http.StatusTooManyRequests {
			t.Errorf("publish claiming to be %s through HAProxy: %d, want 429 (the client is 127.0.0.1, whose publish is spent)", spoofed, got)
		}
	}
	if got := postThrough(t, proxy, "X-Forwarded-For: 203.0.113.9, 10.0.0.1", "x-forwarded-for: 203.0.113.10"); got != http.StatusTooManyRequests {
		t.Errorf("publish with two forged lines through HAProxy: %d, want 429", got)
	}
	// The relay trusts HAProxy only: straight to the relay, the forged
	// header is the peer's word, and not believed either.
	if got := postThrough(t, r.HTTP.Listener.Addr().String(), "X-Forwarded-For: 203.0.113.11"); got != http.StatusTooManyRequests {
		t.Errorf("publish straight to the relay with a forged header: %d, want 429", got)
	}
}
