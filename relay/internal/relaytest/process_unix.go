//go:build unix

package relaytest

import (
	"os/exec"
	"syscall"
)

// terminate is the signal that asks a process to stop (and the relay to
// drain).
const terminate = syscall.SIGTERM

func newGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

func killGroup(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
