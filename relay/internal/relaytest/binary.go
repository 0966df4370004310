package relaytest

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/rooms/roomstest"
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

// FreePort is roomstest.FreePort: a port below the ephemeral range for a
// server that cannot bind port 0 and report it.
func FreePort(t testing.TB) int {
	t.Helper()
	return roomstest.FreePort(t)
}

// FreeAddr is a loopback address on a FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}
