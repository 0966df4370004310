//go:build !unix

package app

import (
	"io/fs"
	"os"
)

// openKeyFile opens a key file.
func openKeyFile(path string) (*os.File, error) { return os.Open(path) }

// private accepts any owner and mode where they are not Unix's: the user's
// cache directory (%LocalAppData%) is the user's own.
func private(string, fs.FileInfo) error { return nil }
