package processtest

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// hostRequest sends method path to addr with Host host and Origin origin
// ("" for none) and returns the status and the JSON error code, if any.
func hostRequest(t *testing.T, method, addr, path, host, origin, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error struct{ Code string } }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// TestOpenModeDNSRebinding: a page of another site whose name resolves to
// the loopback address of an open relay (DNS rebinding) sends its own name
// as Host and as Origin, which the same-origin check alone would take for
// the relay's own page. Open mode on loopback answers only to loopback
// names; the Origin must match the scheme too.
func TestOpenModeDNSRebinding(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil)
	_, port, _ := net.SplitHostPort(addr)
	const events = "/v1/rooms/lobby/events"
	tests := []struct {
		name, method, path, host, origin string
		status                           int
		code                             string
	}{
		{"rebound page publishes", http.MethodPost, events, "attacker.example:" + port, "http://attacker.example:" + port, 421, "host_not_allowed"},
		{"rebound page asks for a dev token", http.MethodPost, "/v1/dev/token", "attacker.example:" + port, "http://attacker.example:" + port, 421, "host_not_allowed"},
		{"rebound page reads history", http.MethodGet, "/v1/rooms/lobby/history", "attacker.example", "", 421, "host_not_allowed"},
		{"localhost page publishes", http.MethodPost, events, "localhost:" + port, "http://localhost:" + port, 202, ""},
		{"127.0.0.1 page publishes", http.MethodPost, events, "127.0.0.1:" + port, "http://127.0.0.1:" + port, 202, ""},
		{"[::1] page publishes", http.MethodPost, events, "[::1]:" + port, "http://[::1]:" + port, 202, ""},
		{"https page on the http relay", http.MethodPost, events, "localhost:" + port, "https://localhost:" + port, 403, "forbidden"},
		{"page on another port", http.MethodPost, events, "localhost:" + port, "http://localhost:1", 403, "forbidden"},
		{"health probe by any name", http.MethodGet, "/readyz", "10.0.0.1:" + port, "", 200, ""},
	}
	for _, tt := range tests {
		body := ""
		if tt.method == http.MethodPost {
			body = `{"name":"Mallory","data":1}`
			if tt.path == events {
				body = `{"data":1}`
			}
		}
		status, code := hostRequest(t, tt.method, addr, tt.path, tt.host, tt.origin, body)
		if status != tt.status || code != tt.code {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, code, tt.status, tt.code)
		}
	}
}

// TestDevTokensDNSRebinding: a relay with keys that hands out development
// tokens trusts whoever reaches it as much as an open one: on loopback it
// answers only to loopback names, so a rebound page can neither mint a
// token (signed with the real JWT secret) nor use one.
func TestDevTokensDNSRebinding(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, []string{"ROOMCAST_JWT_SECRET=a test HS256 secret of 32 bytes or more", "ROOMCAST_DEV_TOKENS=true"})
	_, port := splitPort(t, addr)
	for _, tt := range []struct {
		name, host, origin string
		status             int
		code               string
	}{
		{"rebound page asks for a dev token", "attacker.example:" + port, "http://attacker.example:" + port, 421, "host_not_allowed"},
		{"rebound request without Origin", "attacker.example", "", 421, "host_not_allowed"},
		{"localhost page asks for a dev token", "localhost:" + port, "http://localhost:" + port, 200, ""},
	} {
		status, code := hostRequest(t, http.MethodPost, addr, "/v1/dev/token", tt.host, tt.origin, `{"name":"Mallory"}`)
		if status != tt.status || code != tt.code {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, code, tt.status, tt.code)
		}
	}
}

func splitPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// TestOpenOnPurposeAllowedHosts: a relay run open on purpose off loopback
// answers to ROOMCAST_ALLOWED_HOSTS only, loopback names included.
func TestOpenOnPurposeAllowedHosts(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(relaytest.FreePort(t))
	_, _ = startRelay(t, []string{"PORT=" + port, "ROOMCAST_OPEN=true", "ROOMCAST_ALLOWED_HOSTS=relay.example, *.relay.example"})
	addr := "127.0.0.1:" + port
	for _, tt := range []struct {
		host   string
		status int
	}{
		{"relay.example", http.StatusAccepted},
		{"eu.relay.example:" + port, http.StatusAccepted},
		{"127.0.0.1:" + port, http.StatusMisdirectedRequest},
		{"localhost", http.StatusMisdirectedRequest},
		{"attacker.example", http.StatusMisdirectedRequest},
	} {
		if status, _ := hostRequest(t, http.MethodPost, addr, "/v1/rooms/lobby/events", tt.host, "", `{"data":1}`); status != tt.status {
			t.Errorf("Host %s: %d, want %d", tt.host, status, tt.status)
		}
	}
}

// TestSlowBodiesOnEveryListener: the binary bounds the time to receive a
// request body on the relay's listener and on the debug listener alike: a
// request whose body never comes is answered and its connection closed.
func TestSlowBodiesOnEveryListener(t *testing.T) {
	t.Parallel()
	p, addr := startRelay(t, []string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_READ_BODY_TIMEOUT=300ms", "ROOMCAST_DEBUG_ADDR=127.0.0.1:0"})
	debug := p.Stderr.AwaitMatch(t, regexp.MustCompile(`"msg":"debug listener","addr":"([^"]+)"`))[1]
	for _, tc := range []struct{ addr, path string }{
		{addr, "/v1/rooms/lobby/events"},
		{debug, "/debug/pprof/symbol"},
	} {
		c, err := net.DialTimeout("tcp", tc.addr, waitFor)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST "+tc.path+" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitFor))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("POST %s without its body: no answer: %v", tc.path, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("POST %s without its body: answered %s, and the connection is still open (%v)", tc.path, resp.Status, err)
		}
	}
}
