package processtest

// docs/integrate.md's programs, extracted from the page and run against
// the real relay: each must mint a token the relay accepts and publish.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// need fails the test under CI, where every tool is installed by .ci/run,
// and skips it loudly elsewhere.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (.ci/run installs it): %v", what, err)
	}
	t.Skipf("SKIPPED: %s is missing (.ci/run installs it): %v", what, err)
}

func TestIntegrateSnippets(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		lang, file string
		// prepare checks what the program needs and readies dir; it
		// returns the command that runs the program there.
		prepare func(t *testing.T, dir string) *exec.Cmd
	}{
		{"js", "roomcast.mjs", func(t *testing.T, dir string) *exec.Cmd {
			modules := filepath.Join(wd, ".ci", "integrate", "node_modules")
			_, err := exec.LookPath("node")
			if err == nil {
				_, err = os.Stat(filepath.Join(modules, "jsonwebtoken", "package.json"))
			}
			need(t, "node with .ci/integrate's jsonwebtoken (npm ci --prefix .ci/integrate)", err)
			if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
				t.Fatal(err)
			}
			return exec.Command("node", "roomcast.mjs")
		}},
		{"python", "roomcast.py", func(t *testing.T, _ string) *exec.Cmd {
			// Debian's interpreter, which python3-jwt installs PyJWT for.
			python := "/usr/bin/python3"
			out, err := exec.Command(python, "-c", "import jwt").CombinedOutput()
			if err != nil {
				err = &exec.ExitError{Stderr: out}
			}
			need(t, "Debian's python3-jwt", err)
			return exec.Command(python, "roomcast.py")
		}},
		{"go", "main.go", func(t *testing.T, dir string) *exec.Cmd {
			sum, err := os.ReadFile("go.sum")
			if err != nil {
				t.Fatal(err)
			}
			mod := "module example.com/backend\n\ngo 1.26\n\nrequire github.com/golang-jwt/jwt/v5 " + modVersion(t, "github.com/golang-jwt/jwt/v5") + "\n"
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
				t.Fatal(err)
			}
			return exec.Command("go", "run", ".")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.lang, func(t *testing.T) {
			t.Parallel()
			blocks := docBlocks(t, "docs/integrate.md", "", tt.lang)
			if len(blocks) != 1 {
				t.Fatalf("docs/integrate.md has %d %s blocks, want 1", len(blocks), tt.lang)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(blocks[0]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := tt.prepare(t, dir)

			const secret = "the JWT secret of this test, 32 bytes or more"
			const apiKey = "the API key of this test"
			_, addr := startRelay(t, []string{"ROOMCAST_JWT_SECRET=" + secret, "ROOMCAST_API_KEY=" + apiKey,
				"ROOMCAST_CONFIG=docs/namespaces.example.toml"}, "-addr", "127.0.0.1:0")
			base := "http://" + addr
			cmd.Dir = dir
			cmd.Env = relaytest.CleanEnv("ROOMCAST_URL="+base, "ROOMCAST_JWT_SECRET="+secret, "ROOMCAST_API_KEY="+apiKey)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", cmd, err, stdout.String(), stderr.String())
				}
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("%s still running after 2 minutes; stderr: %s", cmd, stderr.String())
			}
			token := strings.TrimSpace(stdout.String())

			checkAlice(t, base, token, true)
		})
	}
}

// checkAlice requires token to be Alice's, allowed into chat:general
// (members only), whose history holds the notice published as support and
// then Alice's "thanks" (published here first when publish is set).
func checkAlice(t *testing.T, base, token string, publish bool) {
	t.Helper()
	// The token is Alice's: she may publish in chat (members only)
	// and read its history, which holds the program's notice.
	if publish {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/rooms/chat:general/events", strings.NewReader("thanks"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish with the program's token: %s", resp.Status)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/rooms/chat:general/history", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var history struct {
		Events []struct {
			Event string
			Data  json.RawMessage
			From  *struct{ User, Name string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&history); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("history with the program's token: %s (%v)", resp.Status, err)
	}
	var got []string
	for _, e := range history.Events {
		from := "-"
		if e.From != nil {
			from = e.From.User + "/" + e.From.Name
		}
		got = append(got, e.Event+" "+from+" "+string(e.Data))
	}
	want := []string{`notice support/Support {"text":"welcome, Alice"}`, `message alice/Alice "thanks"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestIntegrateCommandLine runs docs/integrate.md's sh block with the
// binary for roomcast.
func TestIntegrateCommandLine(t *testing.T) {
	t.Parallel()
	blocks := docBlocks(t, "docs/integrate.md", "", "sh")
	if len(blocks) != 1 {
		t.Fatalf("docs/integrate.md has %d sh blocks, want 1", len(blocks))
	}
	const secret = "the JWT secret of this test, 32 bytes or more"
	const apiKey = "the API key of this test"
	_, addr := startRelay(t, []string{"ROOMCAST_JWT_SECRET=" + secret, "ROOMCAST_API_KEY=" + apiKey,
		"ROOMCAST_CONFIG=docs/namespaces.example.toml"}, "-addr", "127.0.0.1:0")
	base := "http://" + addr
	script := regexp.MustCompile(`(?m)^roomcast |\$\(roomcast `).ReplaceAllStringFunc(blocks[0], func(m string) string {
		return strings.Replace(m, "roomcast", "go run .", 1)
	})
	sh := shell(t, t.TempDir(), []string{"ROOMCAST_URL=" + base, "ROOMCAST_JWT_SECRET=" + secret, "ROOMCAST_API_KEY=" + apiKey}, script)
	sh.Stderr.AwaitCount(t, "roomcast:connected", 1)
	tok := start(t, []string{"ROOMCAST_JWT_SECRET=" + secret}, "token", "alice")
	if code := tok.Wait(t, waitFor); code != 0 {
		t.Fatalf("roomcast token: exit %d", code)
	}
	checkAlice(t, base, strings.TrimSpace(tok.Stdout.String()), false)
}

// modVersion is the version of module path that go.mod requires.
func modVersion(t *testing.T, path string) string {
	t.Helper()
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == path {
			return f[1]
		}
	}
	t.Fatalf("go.mod does not require %s", path)
	return ""
}
