package processtest

// The README's commands, extracted from it and run as written (with
// `go run .` standing for the binary under test), so that the document
// cannot drift from what works.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// docBlocks returns the fenced blocks of language lang in the section of
// the markdown file whose heading starts with heading ("": the whole file).
func docBlocks(t *testing.T, file, heading, lang string) []string {
	t.Helper()
	doc, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	section := "\n" + string(doc)
	if heading != "" {
		var ok bool
		if _, section, ok = strings.Cut(section, "\n"+heading); !ok {
			t.Fatalf("%s has no section %q", file, heading)
		}
		if end := regexp.MustCompile(`\n#{1,2} `).FindStringIndex(section); end != nil {
			section = section[:end[0]]
		}
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)\n```"+lang+"\n(.*?)\n```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// shell runs script with bash in dir, `go run .` meaning the binary (and
// `go run ./cmd/roomcast-bench` the load generator beside it), and
// the relay's address given by env (ROOMCAST_ADDR, ROOMCAST_URL). Its
// process group is killed when the test ends.
func shell(t *testing.T, dir string, env []string, script string) *proc {
	t.Helper()
	script = strings.ReplaceAll(script, "go run ./cmd/roomcast-bench", strconv.Quote(benchBinary))
	script = strings.ReplaceAll(script, "go run .", strconv.Quote(binary))
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = relaytest.CleanEnv(env...)
	return relaytest.StartProcess(t, cmd, relaytest.ProcessOptions{Name: "script:\n" + script, Group: true})
}

// TestREADMEKeyedRun runs the README's keyed relay as written: the keys
// file, the relay with the example namespaces, Alice's subscription with a
// minted token, Bob's publish and the backend's.
func TestREADMEKeyedRun(t *testing.T) {
	t.Parallel()
	blocks := docBlocks(t, "README.md", "## Identity, rooms and limits", "sh")
	if len(blocks) != 4 {
		t.Fatalf("want 4 sh blocks (keys, relay, subscriber, publishers), found %d", len(blocks))
	}
	dir := t.TempDir()
	// The commands run from the repository's root, where docs/ is.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(wd, "docs"), filepath.Join(dir, "docs")); err != nil {
		t.Fatal(err)
	}
	addr := relaytest.FreeAddr(t)
	env := []string{"ROOMCAST_ADDR=" + addr, "ROOMCAST_URL=http://" + addr}

	if code := shell(t, dir, env, blocks[0]).Wait(t, waitFor); code != 0 {
		t.Fatalf("keys block: exit %d", code)
	}
	relay := shell(t, dir, env, blocks[1])
	relay.Stderr.AwaitListening(t)
	if strings.Contains(relay.Stderr.String(), "OPEN MODE") {
		t.Fatal("the README's keyed relay runs open")
	}
	sub := shell(t, dir, env, blocks[2])
	sub.Stderr.AwaitCount(t, "roomcast:connected", 1)
	pub := shell(t, dir, env, blocks[3])
	if code := pub.Wait(t, waitFor); code != 0 {
		t.Fatalf("publish block: exit %d", code)
	}
	sub.Stdout.AwaitMatch(t, regexp.MustCompile(`(?m)^message chat:general Bob: hi Alice\nmessage news:today -: maintenance at 18:00\n`))

	// What the README says terminal 2 prints is what it printed.
	doc, _ := os.ReadFile("README.md")
	for _, line := range strings.Split(strings.TrimSpace(sub.Stdout.String()), "\n") {
		if !strings.Contains(strings.ReplaceAll(string(doc), "\n", " "), "`"+line+"`") {
			t.Errorf("the README does not show the subscriber's line %q", line)
		}
	}
}

// TestREADMEBench: the README's bench command succeeds against the relay
// as `go run .` starts it, publish limits included.
func TestREADMEBench(t *testing.T) {
	t.Parallel()
	var cmd string
	for _, b := range docBlocks(t, "README.md", "## Performance", "sh") {
		for _, line := range strings.Split(b, "\n") {
			if strings.HasPrefix(line, "go run ./cmd/roomcast-bench") {
				cmd, _, _ = strings.Cut(line, "#")
			}
		}
	}
	if cmd == "" {
		t.Fatal("the README's Performance section has no `go run ./cmd/roomcast-bench` command")
	}
	_, addr := startRelay(t, nil)
	bench := shell(t, t.TempDir(), []string{"ROOMCAST_URL=http://" + addr}, cmd)
	if code := bench.Wait(t, 2*time.Minute); code != 0 || !strings.Contains(bench.Stdout.String(), "result          OK") {
		t.Errorf("exit %d; report:\n%s", code, bench.Stdout.String())
	}
}

// TestREADMEGoVersion: the Go version the README asks for is go.mod's.
func TestREADMEGoVersion(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	doc, _ := os.ReadFile("README.md")
	if !strings.Contains(string(doc), "It needs Go "+string(m[1])+" or newer") {
		t.Errorf("the README does not say it needs Go %s (go.mod)", m[1])
	}
}

// TestAPIRateLimitExample runs docs/api.md's rate-limit example against a
// relay with the example namespaces: the burst is accepted and the rest of
// the fifty refused, as the document says, however fast curl is.
func TestAPIRateLimitExample(t *testing.T) {
	t.Parallel()
	var cmd string
	for _, b := range docBlocks(t, "docs/api.md", "## Limits", "console") {
		for _, line := range strings.Split(b, "\n") {
			if strings.HasPrefix(line, "$ curl --no-progress-meter --parallel") {
				cmd = strings.TrimPrefix(line, "$ ")
			}
		}
	}
	if cmd == "" {
		t.Fatal("docs/api.md's Limits section has no parallel curl example")
	}
	const secret = "a JWT secret of 32 bytes or more, for this test"
	_, addr := startRelay(t, []string{"ROOMCAST_JWT_SECRET=" + secret, "ROOMCAST_CONFIG=docs/namespaces.example.toml"}, "-addr", "127.0.0.1:0")
	tok := start(t, []string{"ROOMCAST_JWT_SECRET=" + secret}, "token", "-name", "Alice", "alice")
	if code := tok.Wait(t, waitFor); code != 0 {
		t.Fatalf("roomcast token: exit %d", code)
	}
	alice := strings.TrimSpace(tok.Stdout.String())

	curl := shell(t, t.TempDir(), []string{"ALICE=" + alice}, strings.ReplaceAll(cmd, "localhost:8080", addr))
	if code := curl.Wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d", code)
	}
	counts := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\d+) (\d{3})$`).FindAllStringSubmatch(curl.Stdout.String(), -1) {
		counts[m[2]], _ = strconv.Atoi(m[1])
	}
	if counts["202"] < 10 || counts["429"] < 1 || counts["202"]+counts["429"] != 50 {
		t.Errorf("statuses %v, want the burst of 10 (or a few more) accepted and the rest of 50 refused:\n%s", counts, curl.Stdout.String())
	}
}
