package pub

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// -file sends a file's events as one batch: each reaches its target, the
// results are printed in order, and a refused event makes the exit 1.
func TestFileSendsABatch(t *testing.T) {
	r := startRelay(t, 1000)
	alice := relaytest.Token(t, "alice", time.Hour, nil)
	env := map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_TOKEN": alice}
	lobby := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{})
	lobby.Expect(t, "roomcast:connected")

	dir := t.TempDir()
	ndjson := filepath.Join(dir, "events.ndjson")
	if err := os.WriteFile(ndjson, []byte("{\"room\":\"lobby\",\"event\":\"a\",\"data\":1}\n{\"room\":\"lobby\",\"event\":\"b\",\"data\":2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := pub(t, env, "", "-file", ndjson)
	if code != 0 || strings.Count(stdout, `"id":"`) != 2 {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and two ids", code, stdout, stderr)
	}
	if ev := lobby.Expect(t, "a"); !strings.Contains(ev.Data, `"data":1,`) {
		t.Errorf("first event data %q", ev.Data)
	}
	if ev := lobby.Expect(t, "b"); !strings.Contains(ev.Data, `"data":2,`) {
		t.Errorf("second event data %q", ev.Data)
	}

	// A JSON array from stdin, one event refused: exit 1, the reason said.
	code, stdout, stderr = pub(t, env, `[{"room":"lobby","event":"c","data":3},{"room":"lobby","event":"roomcast:x"}]`, "-file", "-")
	if code != 1 || !strings.Contains(stdout, `"results"`) || !strings.Contains(stderr, "event 2: reserved_event") || !strings.Contains(stderr, "1 of 2 events") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and event 2's reserved_event", code, stdout, stderr)
	}
	lobby.Expect(t, "c")

	if code, _, stderr := pub(t, env, "", "-file", ndjson, "lobby", "x"); code != 2 || !strings.Contains(stderr, "no ROOM or DATA") {
		t.Errorf("-file with ROOM DATA: exit %d, %q", code, stderr)
	}
	if code, _, stderr := pub(t, env, "", "-event", "x", "-file", ndjson); code != 2 || !strings.Contains(stderr, "-event does not go with -file") {
		t.Errorf("-file with -event: exit %d, %q", code, stderr)
	}
	if code, _, stderr := pub(t, env, "", "-file", filepath.Join(dir, "missing")); code != 2 || !strings.Contains(stderr, "-file") {
		t.Errorf("a missing file: exit %d, %q", code, stderr)
	}
}
