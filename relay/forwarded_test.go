package relay_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// rawResponse is an answer to a request written byte for byte.
type rawResponse struct {
	status int
	body   string
}

// sendRaw writes a request of method and path to r with exactly the header
// lines given (Host first when lines has none) and body, and reads the
// answer.
func sendRaw(t *testing.T, r *relaytest.Relay, method, path string, lines []string, body string) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.HTTP.Listener.Addr().String(), relaytest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var req strings.Builder
	req.WriteString(method + " " + path + " HTTP/1.1\r\n")
	hasHost := false
	for _, l := range lines {
		hasHost = hasHost || strings.HasPrefix(strings.ToLower(l), "host:")
	}
	if !hasHost {
		req.WriteString("Host: relay.test\r\n")
	}
	for _, l := range lines {
		req.WriteString(l + "\r\n")
	}
	if body != "" {
		req.WriteString("Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	req.WriteString("Connection: close\r\n\r\n" + body)
	if _, err := c.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(relaytest.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, body: string(b)}
}

// TestForwardedClientAddress: behind a trusted proxy the client's address
// is the right-most hop of every X-Forwarded-For line together that is not
// a trusted proxy's, so a line the client wrote decides nothing; headers
// the relay was not told to read (Fly-Client-IP by default, Forwarded)
// are ignored. Each case is sent byte for byte; the address the relay
// settled on is observed through the anonymous publish limit (one publish
// per address): a publish as the expected address uses it up, and then
// the case's request must be refused.
func TestForwardedClientAddress(t *testing.T) {
	t.Parallel()
	const peer = "127.0.0.1"
	tests := []struct {
		name   string
		header string // ClientIPHeader
		lines  []string
		want   string
	}{
		{"one list, client then proxy", "", []string{"X-Forwarded-For: 198.51.100.7, 10.0.0.2"}, "198.51.100.7"},
		{"the client's line, then the proxy's (HAProxy option forwardfor)", "",
			[]string{"X-Forwarded-For: 203.0.113.66", "X-Forwarded-For: 198.51.100.7"}, "198.51.100.7"},
		{"lines of any case are one header", "",
			[]string{"x-forwarded-for: 203.0.113.66", "X-FORWARDED-FOR: 198.51.100.7"}, "198.51.100.7"},
		{"a forged list, then trusted hops", "",
			[]string{"X-Forwarded-For: 203.0.113.66, 198.51.100.7", "X-Forwarded-For: 10.0.0.2, 10.0.0.3"}, "198.51.100.7"},
		{"a hop with a port", "", []string{"X-Forwarded-For: 198.51.100.7:4711"}, "198.51.100.7"},
		{"an IPv6 hop in brackets with a port", "", []string{"X-Forwarded-For: [2001:db8::7]:4711"}, "2001:db8::7"},
		{"an IPv4-mapped IPv6 hop", "", []string{"X-Forwarded-For: ::ffff:198.51.100.7"}, "198.51.100.7"},
		{"blank elements and lines", "", []string{"X-Forwarded-For: 198.51.100.7, ,", "X-Forwarded-For:"}, "198.51.100.7"},
		{"an unreadable hop where the client should be", "", []string{"X-Forwarded-For: 198.51.100.7, unknown"}, peer},
		{"every hop trusted: the left-most", "", []string{"X-Forwarded-For: 10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"Fly-Client-IP is not read unless configured", "", []string{"Fly-Client-IP: 203.0.113.66"}, peer},
		{"Forwarded is never read", "", []string{"Forwarded: for=203.0.113.66"}, peer},
		{"Fly-Client-IP when configured", relay.HeaderFlyClientIP,
			[]string{"Fly-Client-IP: 198.51.100.7", "X-Forwarded-For: 203.0.113.66"}, "198.51.100.7"},
		{"a repeated Fly-Client-IP is not believed", relay.HeaderFlyClientIP,
			[]string{"Fly-Client-IP: 203.0.113.66", "Fly-Client-IP: 198.51.100.7"}, peer},
		{"X-Forwarded-For is not read when Fly-Client-IP is", relay.HeaderFlyClientIP,
			[]string{"X-Forwarded-For: 203.0.113.66"}, peer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := startLimited(t, relay.Limits{PublishRate: 0.001, PublishBurst: 1, ClientIPHeader: tt.header,
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}})
			const path = "/v1/rooms/public:lobby/events"
			// Use up the expected address's one publish, naming it the
			// plainest way.
			as := []string{}
			switch {
			case tt.want == peer:
			case tt.header == relay.HeaderFlyClientIP:
				as = []string{"Fly-Client-IP: " + tt.want}
			default:
				as = []string{"X-Forwarded-For: " + tt.want}
			}
			if got := sendRaw(t, r, http.MethodPost, path, as, `{}`); got.status != http.StatusAccepted {
				t.Fatalf("publish as %s: %d %s", tt.want, got.status, got.body)
			}
			if got := sendRaw(t, r, http.MethodPost, path, tt.lines, `{}`); got.status != http.StatusTooManyRequests {
				t.Errorf("%q: %d %s; want 429: the client is %s, whose publish is spent", tt.lines, got.status, got.body, tt.want)
			}
			// Another address still may: the 429 above was the address's.
			other := "X-Forwarded-For: 192.0.2.99"
			if tt.header == relay.HeaderFlyClientIP {
				other = "Fly-Client-IP: 192.0.2.99"
			}
			if tt.want != "192.0.2.99" {
				if got := sendRaw(t, r, http.MethodPost, path, []string{other}, `{}`); got.status != http.StatusAccepted {
					t.Errorf("publish as another address: %d %s", got.status, got.body)
				}
			}
		})
	}
}

// TestIPv6ClientsCountedByNetwork: an IPv6 client's network (its /64,
// what one subscriber or one cloud machine is handed) is one address for
// the limits: rotating through its own 2^64 addresses gets a client
// nothing, while another network keeps its own allowance. Connection
// slots are keyed the same way (one function names the caller).
func TestIPv6ClientsCountedByNetwork(t *testing.T) {
	t.Parallel()
	r := startLimited(t, relay.Limits{PublishRate: 0.001, PublishBurst: 1, MaxConnsPerIP: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	const path = "/v1/rooms/public:lobby/events"
	for _, tt := range []struct {
		client string
		status int
	}{
		{"2001:db8:1:2::1", http.StatusAccepted},
		{"2001:db8:1:2::2", http.StatusTooManyRequests},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", http.StatusTooManyRequests},
		{"[2001:db8:1:2::3]:4711", http.StatusTooManyRequests},
		{"2001:db8:1:3::1", http.StatusAccepted},
	} {
		if got := sendRaw(t, r, http.MethodPost, path, []string{"X-Forwarded-For: " + tt.client}, `{}`); got.status != tt.status {
			t.Errorf("publish as %s: %d %s, want %d", tt.client, got.status, got.body, tt.status)
		}
	}
	// A stream from one address of a network takes the network's one slot.
	r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{
		Header: map[string]string{"X-Forwarded-For": "2001:db8:5:6::1"}}).Connected(t)
	wantRateLimited(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events",
		Header: http.Header{"X-Forwarded-For": {"2001:db8:5:6::2"}}}), "too_many_connections")
}

// TestForwardedProto: a state-changing request from a page of the relay's
// own origin passes the Origin check only if the scheme matches too: https
// only over TLS or when a trusted proxy says so in X-Forwarded-Proto (its
// own line or element: the right-most).
func TestForwardedProto(t *testing.T) {
	t.Parallel()
	trusting := func(proxy string) *relaytest.Relay {
		return startSecured(t, func(o *relaytest.Options) {
			o.Relay.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(proxy)}
		})
	}
	trusted, untrusted := trusting("127.0.0.1/32"), trusting("10.0.0.0/8")
	tests := []struct {
		name  string
		r     *relaytest.Relay
		lines []string
		want  int
	}{
		{"https page, no proxy's word", trusted, []string{"Origin: https://relay.test"}, http.StatusForbidden},
		{"https page, proxy says https", trusted, []string{"Origin: https://relay.test", "X-Forwarded-Proto: https"}, http.StatusAccepted},
		{"https page on the default port", trusted, []string{"Origin: https://relay.test:443", "X-Forwarded-Proto: https"}, http.StatusAccepted},
		{"proxy's line after the client's", trusted, []string{"Origin: https://relay.test", "X-Forwarded-Proto: https", "X-Forwarded-Proto: http"}, http.StatusForbidden},
		{"proxy's element after the client's", trusted, []string{"Origin: https://relay.test", "X-Forwarded-Proto: http, https"}, http.StatusAccepted},
		{"an untrusted peer's word", untrusted, []string{"Origin: https://relay.test", "X-Forwarded-Proto: https"}, http.StatusForbidden},
		{"http page over http", untrusted, []string{"Origin: http://relay.test"}, http.StatusAccepted},
		{"http page on the default port", untrusted, []string{"Origin: http://relay.test:80"}, http.StatusAccepted},
		{"http page behind a proxy that says https", trusted, []string{"Origin: http://relay.test", "X-Forwarded-Proto: https"}, http.StatusForbidden},
		{"another port", untrusted, []string{"Origin: http://relay.test:8080"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := sendRaw(t, tt.r, http.MethodPost, "/v1/rooms/public:lobby/events", tt.lines, `{}`)
			if got.status != tt.want {
				t.Errorf("%q: %d %s, want %d", tt.lines, got.status, got.body, tt.want)
			}
		})
	}
}

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
