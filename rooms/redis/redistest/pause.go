//go:build unix

package redistest

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

	"github.com/roomcast/roomcast/rooms/roomstest"
)

// Pause stops the server's process (SIGSTOP) and returns once it is
// stopped: connections stay open and what clients send waits, unread,
// until Resume, as with a server stalled past its callers' timeouts.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP, 'T')
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT, 0)
}

// signal sends sig to the server and, when state is not 0, waits until
// /proc shows the process in that state.
func (s *Server) signal(sig syscall.Signal, state byte) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v to a stopped server", sig)
	}
	pid := s.cmd.Process.Pid
	if err := syscall.Kill(pid, sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
	if state == 0 {
		return
	}
	reached := func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true // no /proc: the signal is as good as delivered
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(stat, ')')
		return i >= 0 && i+2 < len(stat) && stat[i+2] == state
	}
	if roomstest.Poll(startTimeout, reached) != nil {
		s.t.Fatalf("redistest: redis-server did not reach state %c after %v", state, sig)
	}
}
