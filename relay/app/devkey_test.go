package app

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLoadOrCreateKeyConcurrently: relays started at once agree on one key.
func TestLoadOrCreateKeyConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dev-token-key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := loadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i, k := range keys {
		if len(k) != devKeySize || !bytes.Equal(k, keys[0]) {
			t.Fatalf("key %d is %x, key 0 %x", i, k, keys[0])
		}
	}
	again, err := loadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Errorf("read again: %x, %v", again, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want the key alone", len(entries))
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", st.Mode().Perm())
	}
}

func TestLoadOrCreateKeyRefusesAShortKey(t *testing.T) {
	for _, content := range []string{"", "not base64!", "c2hvcnQ"} {
		path := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if k, err := loadOrCreateKey(path); err == nil {
			t.Errorf("%q: key %x, want an error", content, k)
		}
	}
}

// TestLoadOrCreateKeyRefusesAKeyOthersCouldKnow: a key file others can
// read or write, in a directory others can write (a shared XDG_CACHE_HOME:
// anyone could have put a key of theirs there first, and then mint tokens
// for any user), is refused; so are files that are not files (a FIFO would
// block start-up, /dev/zero exhaust memory).
func TestLoadOrCreateKeyRefusesAKeyOthersCouldKnow(t *testing.T) {
	good, err := loadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(base64.RawURLEncoding.EncodeToString(good) + "\n")
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the key file's path
	}{
		{"readable by others", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "key")
			mustWrite(t, path, content, 0o644)
			return path
		}},
		{"writable by the group", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "key")
			mustWrite(t, path, content, 0o620)
			return path
		}},
		{"in a directory anyone can write", func(t *testing.T, dir string) string {
			shared := filepath.Join(dir, "shared")
			if err := os.Mkdir(shared, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(shared, 0o777); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(shared, "key")
			mustWrite(t, path, content, 0o600)
			return path
		}},
		{"missing, in a directory anyone can write", func(t *testing.T, dir string) string {
			shared := filepath.Join(dir, "shared")
			if err := os.Mkdir(shared, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(shared, 0o777); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(shared, "key")
		}},
		{"a FIFO", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "key")
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"a link to /dev/zero", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "key")
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"a huge file", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "key")
			mustWrite(t, path, append(content, bytes.Repeat([]byte{' '}, 1<<20)...), 0o600)
			return path
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.setup(t, t.TempDir())
			done := make(chan struct{})
			var key []byte
			var err error
			go func() {
				defer close(done)
				key, err = loadOrCreateKey(path)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("loadOrCreateKey blocked")
			}
			if err == nil {
				t.Errorf("key %x, want an error", key)
			}
		})
	}
}

// TestLoadOrCreateKeyRefusesAnotherUsersFile: a key file or directory
// another user owns could hold a key that user knows.
func TestLoadOrCreateKeyRefusesAnotherUsersFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: only root can give a file to another user")
	}
	const nobody = 65534
	for _, what := range []string{"file", "directory"} {
		t.Run(what, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "roomcast")
			path := filepath.Join(dir, "key")
			if _, err := loadOrCreateKey(path); err != nil {
				t.Fatal(err)
			}
			target := path
			if what == "directory" {
				target = dir
			}
			if err := os.Chown(target, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			if k, err := loadOrCreateKey(path); err == nil {
				t.Errorf("key %x from a %s of another user, want an error", k, what)
			}
		})
	}
}

func mustWrite(t *testing.T, path string, content []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}
