package relaytest

import (
	"encoding/json"
	"os"
	"regexp"
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
