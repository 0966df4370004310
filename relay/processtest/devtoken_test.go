package processtest

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestDevTokenWiring checks when the binary hands out development tokens
// and that it accepts the tokens it hands out.
func TestDevTokenWiring(t *testing.T) {
	const secret = "ROOMCAST_JWT_SECRET=a test HS256 secret of 32 bytes or more"
	cases := []struct {
		name   string
		env    []string
		status int
		warns  bool
	}{
		{"open mode", nil, http.StatusOK, false},
		{"open mode, turned off", []string{"ROOMCAST_DEV_TOKENS=false"}, http.StatusNotFound, false},
		{"a key is configured", []string{secret}, http.StatusNotFound, false},
		{"a key is configured, enabled on purpose", []string{secret, "ROOMCAST_DEV_TOKENS=true"}, http.StatusOK, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, addr := startRelay(t, append([]string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_LOG_FORMAT=json"}, c.env...))
			resp, err := http.Post("http://"+addr+"/v1/dev/token", "application/json", strings.NewReader(`{"name":"Alice"}`))
			if err != nil {
				t.Fatal(err)
			}
			var got struct{ Token, User, Name string }
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if resp.StatusCode != c.status || err != nil {
				t.Fatalf("POST /v1/dev/token: status %d (%v), want %d", resp.StatusCode, err, c.status)
			}
			if warned := strings.Contains(p.Stderr.String(), "DEV TOKENS"); warned != c.warns {
				t.Errorf("warning logged: %v, want %v", warned, c.warns)
			}
			if c.status != http.StatusOK {
				return
			}
			if got.Name != "Alice" || !strings.HasPrefix(got.User, "dev-") {
				t.Errorf("answer %+v", got)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tickets", nil)
			req.Header.Set("Authorization", "Bearer "+got.Token)
			tr, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			tr.Body.Close()
			if tr.StatusCode != http.StatusCreated {
				t.Errorf("a ticket for the development token: status %d, want 201", tr.StatusCode)
			}
		})
	}
}

// devTokenFor asks the relay at addr for a development token.
func devTokenFor(t *testing.T, addr, name string) string {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/v1/dev/token", "application/json", strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/dev/token: status %d (%v)", resp.StatusCode, err)
	}
	return got.Token
}

// ticketStatus is the status of POST /v1/tickets with token.
func ticketStatus(t *testing.T, addr, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDevTokenSurvivesRestart restarts an open-mode relay with the
// in-memory backbone: the development token the demo holds still works,
// because the key is kept in the user's cache directory (or the file
// configured), readable by the user alone.
func TestDevTokenSurvivesRestart(t *testing.T) {
	cases := []struct {
		name string
		env  func(dir string) []string
		file func(dir string) string
	}{
		{"the cache directory", func(dir string) []string { return []string{"XDG_CACHE_HOME=" + dir} },
			func(dir string) string { return filepath.Join(dir, "roomcast", "dev-token-key") }},
		{"a configured file", func(dir string) []string {
			return []string{"ROOMCAST_DEV_TOKEN_KEY_FILE=" + filepath.Join(dir, "keys", "dev")}
		}, func(dir string) string { return filepath.Join(dir, "keys", "dev") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			env := append([]string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_LOG_FORMAT=json"}, c.env(dir)...)
			first, addr := startRelay(t, env)
			token := devTokenFor(t, addr, "Alice")
			first.Signal(t, syscall.SIGTERM)
			if code := first.Wait(t, waitFor); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			_, addr = startRelay(t, env)
			if s := ticketStatus(t, addr, token); s != http.StatusCreated {
				t.Errorf("a ticket for the token issued before the restart: status %d, want 201", s)
			}
			st, err := os.Stat(c.file(dir))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
			}
		})
	}
}

// TestDevTokenKeyFileUnusedWithKeys: a keyed relay signs development tokens
// with its JWT secret and writes no key file.
func TestDevTokenKeyFileUnusedWithKeys(t *testing.T) {
	dir := t.TempDir()
	_, addr := startRelay(t, []string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_LOG_FORMAT=json", "XDG_CACHE_HOME=" + dir,
		"ROOMCAST_JWT_SECRET=a test HS256 secret of 32 bytes or more", "ROOMCAST_DEV_TOKENS=true"})
	devTokenFor(t, addr, "Alice")
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a keyed relay wrote %v in the cache directory", entries)
	}
}

// TestDevTokenKeyUnwritable: a key that cannot be kept does not stop the
// relay; it says so and signs with a key of its own.
func TestDevTokenKeyUnwritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, addr := startRelay(t, []string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_LOG_FORMAT=json",
		"ROOMCAST_DEV_TOKEN_KEY_FILE=" + filepath.Join(blocker, "key")})
	if s := ticketStatus(t, addr, devTokenFor(t, addr, "Alice")); s != http.StatusCreated {
		t.Errorf("ticket: status %d, want 201", s)
	}
	p.Stderr.AwaitMatch(t, regexp.MustCompile(`not kept across restarts`))
}
