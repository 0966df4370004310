//go:build !unix

package relaytest

import (
	"os"
	"os/exec"
)

// terminate is the nearest to SIGTERM: without Unix signals, a kill.
var terminate = os.Kill

// newGroup does nothing: without process groups, only the process itself
// is killed.
func newGroup(*exec.Cmd) {}

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
