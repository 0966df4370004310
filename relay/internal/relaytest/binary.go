package relaytest

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// CleanEnv is the test's environment without any roomcast setting, so that
// the host's cannot leak into a roomcast binary a test runs, plus extra.
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ROOMCAST_") || k == "PORT" || k == "REDIS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// Listening is the JSON "roomcast listening" log line of the binary.
type Listening struct{ Addr, Backbone, Version string }

var listeningRE = regexp.MustCompile(`\{[^\n]*"msg":"roomcast listening"[^\n]*\}`)

// AwaitListening waits until the binary logging to o says it is listening
// and returns what that line says.
func (o *Output) AwaitListening(t testing.TB) Listening {
	t.Helper()
	var line Listening
	if err := json.Unmarshal([]byte(o.AwaitMatch(t, listeningRE)[0]), &line); err != nil {
		t.Fatal(err)
	}
	return line
}

// FreePort returns a TCP port that nothing listens on, on any interface,
// for a process the test starts to bind. It is drawn below the kernel's
// ephemeral range (32768 and up on Linux): a port taken from that range
// and released can be handed out again at once, as the source port of any
// connection the tests make meanwhile, and the process then fails to bind
// it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port
	}
	t.Fatal("relaytest: no free port between 20000 and 32000")
	return 0
}

// FreeAddr is a loopback address on a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}
