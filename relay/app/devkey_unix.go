//go:build unix

package app

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// openKeyFile opens a key file without blocking on a FIFO.
func openKeyFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// private tells whether fi, a key file or its directory, is owned by this
// user (or root) and not open to others: readable by none for a file,
// writable by none (unless sticky, as /tmp) for a directory. Otherwise
// someone else could know the key, or put theirs in its place.
func private(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && st.Uid != uint32(os.Geteuid()) && st.Uid != 0 {
		return fmt.Errorf("%s belongs to another user (uid %d)", path, st.Uid)
	}
	perm := fi.Mode().Perm()
	if fi.IsDir() {
		if perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("%s is writable by others (mode %v): anyone could put a key of theirs in it", path, fi.Mode())
		}
		return nil
	}
	if perm&0o077 != 0 {
		return fmt.Errorf("%s is open to others (mode %v, want 0600)", path, perm)
	}
	return nil
}
