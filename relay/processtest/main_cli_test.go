package processtest

// The command line as a new user meets it: messages for bad settings,
// help, version, and the commands beside the relay, through the binary.

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// TestConfigurationMessages: a bad setting is named as the user gave it,
// alone with a hint rather than inside the whole usage, and values that
// could never work are refused before the relay listens.
func TestConfigurationMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		env        []string
		args       []string
		namespaces string // a namespace file the relay is given, when set
		code       int
		want       []string // in stderr
		notWant    []string // not in stderr
	}{
		{name: "address from the environment", env: []string{"ROOMCAST_ADDR=nonsense"}, code: 2,
			want: []string{`ROOMCAST_ADDR "nonsense"`}, notWant: []string{"-addr"}},
		{name: "address flag", args: []string{"-addr", "nonsense"}, code: 2, want: []string{`-addr "nonsense"`}},
		{name: "port above 65535", args: []string{"-addr", "127.0.0.1:70000"}, code: 2, want: []string{`-addr "127.0.0.1:70000"`, "0 to 65535"}},
		{name: "port above 65535 from the environment", env: []string{"ROOMCAST_ADDR=:99999"}, code: 2, want: []string{"ROOMCAST_ADDR", "0 to 65535"}},
		{name: "retry range from the environment", env: []string{"ROOMCAST_RETRY_MIN=10s"}, code: 2,
			want: []string{"-retry-max (5s) is below ROOMCAST_RETRY_MIN (10s)"}},
		{name: "short secret from the environment", env: []string{"ROOMCAST_JWT_SECRET=short"}, code: 2,
			want: []string{"ROOMCAST_JWT_SECRET must be at least 32 bytes"}, notWant: []string{"-jwt-secret"}},
		{name: "bad value without the usage", args: []string{"-heartbeat", "banana"}, code: 2,
			want: []string{"-heartbeat", "roomcast -h lists every flag"}, notWant: []string{"-write-coalesce", "Usage:"}},
		{name: "unknown flag without the usage", args: []string{"-bogus"}, code: 2,
			want: []string{"-bogus", "roomcast -h"}, notWant: []string{"-write-coalesce"}},
		{name: "unknown command lists the commands", args: []string{"serve"}, code: 2,
			want:    []string{`unknown command "serve"`, "roomcast pub", "roomcast sub", "roomcast token", "roomcast bench", "roomcast healthcheck"},
			notWant: []string{"-write-coalesce"}},
		{name: "origin with a trailing slash", env: []string{"ROOMCAST_ALLOWED_ORIGINS=http://host:8095/"}, code: 2,
			want: []string{"ROOMCAST_ALLOWED_ORIGINS", `"http://host:8095/" can never match`, `"http://host:8095"`}},
		{name: "origin without a scheme", env: []string{"ROOMCAST_ALLOWED_ORIGINS=https://ok.example,host:8095"}, code: 2,
			want: []string{"ROOMCAST_ALLOWED_ORIGINS", `"host:8095" is not an origin`, "scheme://host[:port]"}},
		{name: "origin with an upper-case scheme", args: []string{"-allowed-origins", "HTTP://Host:8095"}, code: 2,
			want: []string{"-allowed-origins", `"http://host:8095"`}},
		{name: "origin with the default port", args: []string{"-allowed-origins", "https://app.example:443"}, code: 2,
			want: []string{`"https://app.example"`}},
		// Origins a browser writes otherwise were accepted and never matched.
		{name: "origin with an international name", args: []string{"-allowed-origins", "https://bücher.example"}, code: 2,
			want: []string{`"https://bücher.example" is not an origin`, "ASCII form (xn--"}},
		{name: "origin with an uncompressed IPv6 address", args: []string{"-allowed-origins", "http://[0:0:0:0:0:0:0:1]:3000"}, code: 2,
			want: []string{`"http://[::1]:3000"`}},
		{name: "origin with an IPv4-mapped IPv6 address", args: []string{"-allowed-origins", "http://[::ffff:127.0.0.1]"}, code: 2,
			want: []string{`"http://[::ffff:7f00:1]"`}},
		{name: "origin with a short IPv4 address", args: []string{"-allowed-origins", "http://127.1:3000"}, code: 2,
			want: []string{`"http://127.1:3000" is not an origin`, "IPv4"}},
		{name: "origin with a trailing dot after an IPv4 address", args: []string{"-allowed-origins", "http://127.0.0.1.:3000"}, code: 2,
			want: []string{`"http://127.0.0.1:3000"`}},
		{name: "origin with a zero-padded port", args: []string{"-allowed-origins", "http://localhost:03000"}, code: 2,
			want: []string{`"http://localhost:3000"`}},
		{name: "origin with a wildcard", args: []string{"-allowed-origins", "https://*.app.example"}, code: 2,
			want: []string{`"https://*.app.example" is not an origin`, "no wildcards"}},
		// Allowed hosts too: browsers send the Host header in those forms.
		{name: "host with an international name", args: []string{"-allowed-hosts", "bücher.example"}, code: 2,
			want: []string{"-allowed-hosts", `"bücher.example"`, "ASCII form (xn--"}},
		{name: "host with an uncompressed IPv6 address", args: []string{"-allowed-hosts", "[0:0::1]:8080"}, code: 2,
			want: []string{`"[::1]:8080"`}},
		{name: "host with a zero-padded port", args: []string{"-allowed-hosts", "app.example:08080"}, code: 2,
			want: []string{`"app.example:8080"`}},
		{name: "host with a short IPv4 address", args: []string{"-allowed-hosts", "127.1"}, code: 2,
			want: []string{"IPv4"}},
		{name: "join and leave events without presence", code: 1,
			namespaces: "[namespaces.chat]\npresence = false\njoin_leave_events = true\n",
			want:       []string{"[namespaces.chat]", "join_leave_events = true needs presence = true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := tt.env
			if tt.namespaces != "" {
				file := filepath.Join(t.TempDir(), "namespaces.toml")
				if err := os.WriteFile(file, []byte(tt.namespaces), 0o600); err != nil {
					t.Fatal(err)
				}
				env = append(env, "ROOMCAST_CONFIG="+file)
			}
			args := tt.args
			if !hasFlag(args, "-addr") && !strings.Contains(strings.Join(env, " "), "ROOMCAST_ADDR") {
				args = append([]string{"-addr", "127.0.0.1:0"}, args...)
			}
			p := start(t, env, args...)
			code := p.Wait(t, waitFor)
			stderr := p.Stderr.String()
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr has %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "roomcast listening") {
				t.Error("it listened anyway")
			}
		})
	}
}

// TestHelpHidesSecrets: -h printed each flag's default, which for the
// credentials is the value of their environment variable: the JWT secret,
// the API key, the cursor key, the metrics token, a token and a Redis
// password went to the terminal (or a CI log) of anyone asking for help.
func TestHelpHidesSecrets(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{
		"ROOMCAST_JWT_SECRET":    "jwt-secret-that-is-32-bytes-long-0",
		"ROOMCAST_API_KEY":       "api-key-secret-1",
		"ROOMCAST_CURSOR_KEY":    "cursor-key-secret-2",
		"ROOMCAST_METRICS_TOKEN": "metrics-token-secret-3",
		"ROOMCAST_TOKEN":         "user-token-secret-4",
		"ROOMCAST_REDIS_URL":     "redis://:redis-password-secret-5@127.0.0.1:1",
	}
	var env []string
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	for _, cmd := range [][]string{{"-h"}, {"token", "-h"}, {"pub", "-h"}, {"sub", "-h"}, {"bench", "-h"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			t.Parallel()
			p := start(t, env, cmd...)
			if code := p.Wait(t, waitFor); code != 0 {
				t.Errorf("exit %d; stderr:\n%s", code, p.Stderr.String())
			}
			out := p.Stdout.String() + p.Stderr.String()
			if !strings.Contains(out, "Usage") {
				t.Fatalf("no usage printed:\n%s", out)
			}
			for k, v := range secrets {
				if strings.Contains(out, v) || strings.Contains(out, "redis-password") && k == "ROOMCAST_REDIS_URL" {
					t.Errorf("the usage shows %s's value:\n%s", k, out)
				}
			}
		})
	}
}

// TestHelpAndVersion: the ways a user asks what the binary is and does.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"--version"}, []string{"roomcast " + testVersion + "\n"}},
		{[]string{"-version"}, []string{"roomcast " + testVersion + "\n"}},
		{[]string{"version"}, []string{"roomcast " + testVersion + "\n"}},
		{[]string{"help"}, []string{"roomcast pub", "roomcast sub", "roomcast token", "roomcast bench", "roomcast healthcheck", "roomcast -h"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			p := start(t, nil, tt.args...)
			if code := p.Wait(t, waitFor); code != 0 {
				t.Errorf("exit %d; stderr:\n%s", code, p.Stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(p.Stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, p.Stdout.String())
				}
			}
			if strings.Contains(p.Stdout.String()+p.Stderr.String(), "-write-coalesce") {
				t.Errorf("printed the relay's flags:\n%s", p.Stdout.String()+p.Stderr.String())
			}
		})
	}
}

// A preflight from an origin the relay does not allow is refused as such,
// not as a method the route lacks; an allowed one still gets its 204.
func TestPreflightFromDisallowedOrigin(t *testing.T) {
	t.Parallel()
	_, addr := startRelay(t, nil, "-allowed-origins", "https://app.example")
	tests := []struct {
		origin string
		status int
		code   string
	}{
		{"https://evil.example", http.StatusForbidden, "forbidden"},
		{"https://app.example", http.StatusNoContent, ""},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(http.MethodOptions, "http://"+addr+"/v1/rooms/lobby/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", tt.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		if tt.code != "" {
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Errorf("preflight from %s: %s, body not JSON: %v", tt.origin, resp.Status, err)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status || body.Error.Code != tt.code ||
			tt.code != "" && !strings.Contains(body.Error.Message, "origin "+tt.origin+" are not allowed") {
			t.Errorf("preflight from %s: %s %+v, want %d %q naming the origin", tt.origin, resp.Status, body, tt.status, tt.code)
		}
		if allow := resp.Header.Get("Access-Control-Allow-Origin"); (tt.code == "") != (allow == tt.origin) {
			t.Errorf("preflight from %s: Access-Control-Allow-Origin %q", tt.origin, allow)
		}
	}
}

// The start-up log says where the demo is, reachable from this machine
// even when the relay listens on every interface.
func TestListeningLogNamesDemo(t *testing.T) {
	t.Parallel()
	port := strconv.Itoa(relaytest.FreePort(t))
	for _, tt := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"-addr", "127.0.0.1:" + port}},
		{[]string{"PORT=" + port, "ROOMCAST_OPEN=true", "ROOMCAST_ALLOWED_HOSTS=127.0.0.1"}, nil},
	} {
		p := start(t, tt.env, tt.args...)
		var line struct{ Demo string }
		raw := p.Stderr.AwaitMatch(t, regexp.MustCompile(`\{[^\n]*"msg":"roomcast listening"[^\n]*\}`))[0]
		if err := json.Unmarshal([]byte(raw), &line); err != nil {
			t.Fatal(err)
		}
		want := "http://127.0.0.1:" + port + "/"
		if line.Demo != want {
			t.Errorf("%v %v: demo %q, want %q", tt.env, tt.args, line.Demo, want)
		}
		resp, err := http.Get(line.Demo)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %s %s", line.Demo, resp.Status, resp.Header.Get("Content-Type"))
		}
		p.Signal(t, syscall.SIGTERM)
		if code := p.Wait(t, waitFor); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	}
}

// The demo URL of the start-up log answered 421 host_not_allowed when the
// relay has a Host allow-list without 127.0.0.1 (ROOMCAST_ALLOWED_HOSTS
// with a key), and an open relay on another loopback address (127.0.0.2)
// answered no request at all by that address. The URL is now a host the
// relay answers to, and the open relay answers to its own address.
func TestListeningLogDemoIsAnswered(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  []string
		addr string // the relay's host
		args []string
		want string // the demo URL's host, without the port
		host string // the Host header a browser at the demo URL sends
	}{
		{"keyed with allowed hosts", []string{"ROOMCAST_API_KEY=" + strings.Repeat("k", 32)}, "127.0.0.1",
			[]string{"-allowed-hosts", "*.relay.test,relay.test"}, "relay.test", "relay.test"},
		{"open on another loopback address", nil, "127.0.0.2", nil, "127.0.0.2", "127.0.0.2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := strconv.Itoa(relaytest.FreePort(t))
			p := start(t, tt.env, append([]string{"-addr", tt.addr + ":" + port}, tt.args...)...)
			var line struct{ Demo string }
			raw := p.Stderr.AwaitMatch(t, regexp.MustCompile(`\{[^\n]*"msg":"roomcast listening"[^\n]*\}`))[0]
			if err := json.Unmarshal([]byte(raw), &line); err != nil {
				t.Fatal(err)
			}
			if want := "http://" + tt.want + ":" + port + "/"; line.Demo != want {
				t.Errorf("demo %q, want %q", line.Demo, want)
			}
			// What a browser at the demo URL asks, sent to the relay's
			// address (relay.test resolves nowhere).
			req, err := http.NewRequest(http.MethodGet, "http://"+tt.addr+":"+port+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host + ":" + port
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET the demo with Host %s: %s", req.Host, resp.Status)
			}
			p.Signal(t, syscall.SIGTERM)
			if code := p.Wait(t, waitFor); code != 0 {
				t.Errorf("exit %d after SIGTERM", code)
			}
		})
	}
}

// TestCommandUsageErrors: every command answers a bad flag with the error
// and a hint, not with its whole usage; -h still prints the usage.
func TestCommandUsageErrors(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"sub", "pub", "token", "bench", "healthcheck"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			p := start(t, nil, cmd, "-bogus")
			code := p.Wait(t, waitFor)
			stderr := p.Stderr.String()
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code == 0 || len(lines) != 2 || !strings.Contains(lines[0], "-bogus") || lines[1] != "roomcast "+cmd+" -h lists its flags" {
				t.Errorf("roomcast %s -bogus: exit %d, stderr:\n%s\nwant the error and the hint alone", cmd, code, stderr)
			}
			p = start(t, nil, cmd, "-h")
			if code := p.Wait(t, waitFor); code != 0 || !strings.Contains(p.Stderr.String(), "Usage: roomcast "+cmd) {
				t.Errorf("roomcast %s -h: exit %d, stderr:\n%s", cmd, code, p.Stderr.String())
			}
		})
	}
}

// TestBenchCommand: `roomcast bench` runs the load generator beside the
// binary (roomcast-bench, a binary of its own), with the arguments, the
// output and the exit code passed through; without one it says where the
// load generator is and how to build it.
func TestBenchCommand(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, roomcast string, args ...string) (code int, stdout, stderr string) {
		t.Helper()
		out, errOut := relaytest.NewOutput(), relaytest.NewOutput()
		cmd := exec.Command(roomcast, args...)
		// No roomcast-bench on PATH either.
		cmd.Env = relaytest.CleanEnv("PATH=" + t.TempDir())
		cmd.Stdout, cmd.Stderr = out, errOut
		err := cmd.Run()
		if exit, ok := errors.AsType[*exec.ExitError](err); ok {
			return exit.ExitCode(), out.String(), errOut.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, out.String(), errOut.String()
	}
	t.Run("beside", func(t *testing.T) {
		dir := t.TempDir()
		roomcast := filepath.Join(dir, "roomcast")
		copyFile(t, binary, roomcast, 0o755)
		fake := "#!/bin/sh\necho \"bench got: $*\"\necho oops >&2\nexit 3\n"
		if err := os.WriteFile(filepath.Join(dir, "roomcast-bench"), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := run(t, roomcast, "bench", "-n", "5", "-rate", "2")
		if code != 3 || stdout != "bench got: -n 5 -rate 2\n" || stderr != "oops\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("missing", func(t *testing.T) {
		roomcast := filepath.Join(t.TempDir(), "roomcast")
		copyFile(t, binary, roomcast, 0o755)
		code, stdout, stderr := run(t, roomcast, "bench", "-h")
		if code != 1 || stdout != "" {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
		for _, want := range []string{"no roomcast-bench beside this binary", "/roomcast-bench", "go build -o " + filepath.Join(filepath.Dir(roomcast), "roomcast-bench") + " ./cmd/roomcast-bench"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
	})
}

// copyFile copies the file at from to to, with mode.
func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
