package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// devKeySize is the size of a generated development-token key: HS256's
// minimum (RFC 7518).
const devKeySize = 32

// defaultDevKeyFile is where the open-mode development-token key is kept
// when -dev-token-key-file is empty: the user's cache directory, so that
// `go run .` started again accepts the tokens the demo already holds.
func defaultDevKeyFile() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "roomcast", "dev-token-key"), nil
}

// loadOrCreateKey returns the key kept in the file at path, creating the
// file (mode 0600, its directory 0700) with a random key when it does not
// exist. A file or directory that another user owns or can write, or that
// others can read, is refused: its key could be known. The file appears
// whole or not at all: the key is written to a
// temporary file that is then linked into place, so that relays started
// together agree on one key and none reads a half-written one.
func loadOrCreateKey(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// A directory others can write could hold a key one of them made.
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	if key, err := readKey(path); !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key := make([]byte, devKeySize)
	_, _ = rand.Read(key)
	tmp, err := os.CreateTemp(dir, ".dev-token-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.RawURLEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	// CreateTemp makes the file 0600. Link, unlike Rename, never replaces
	// a key another relay has put there meanwhile: that one is used.
	if err := os.Link(tmp.Name(), path); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		return readKey(path)
	}
	return key, nil
}

// maxKeyFile bounds what is read of a key file: a key is 44 bytes.
const maxKeyFile = 4096

// readKey reads a key file: one line of unpadded base64url, at least 32
// bytes once decoded, in a regular file that is the user's alone.
func readKey(path string) ([]byte, error) {
	f, err := openKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if err := private(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	key, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(b) > maxKeyFile || len(key) < devKeySize {
		return nil, fmt.Errorf("%s does not hold a key of %d or more bytes in base64url (delete it to have a new one made)", path, devKeySize)
	}
	return key, nil
}

// privateDir checks that dir is the user's alone (see private).
func privateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	return private(dir, fi)
}
