// Package sub is the `roomcast sub ROOM` command: it prints a room's events
// and resumes after disconnects.
package sub

import (
	"context"
	"fmt"
	"io"
)

// Main runs the command with args (after "sub") and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "roomcast sub: not implemented yet")
	return 2
}
