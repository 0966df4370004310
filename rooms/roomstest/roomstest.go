// Package roomstest is what the tests of every layer share, from rooms up:
// one bound on waits, one Eventually, and one way to choose a port for a
// server that cannot be told to pick its own. It imports nothing of the
// project, so that rooms' own tests may use it.
package roomstest

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Wait bounds every wait of the tests for something they expect: long
// enough for a slow race-enabled run on a loaded machine, short enough that
// a hang fails the test in good time.
const Wait = 10 * time.Second

// Eventually polls cond, backing off from 1 ms to 50 ms between calls,
// until it holds, failing the test after Wait with what it waited for.
// It is for state with no event to wait on; where a channel, a stream or
// an output can be awaited, await that instead.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if err := Poll(Wait, cond); err != nil {
		t.Fatalf("timed out after %s waiting until %s", Wait, what)
	}
}

// ErrTimeout is what Poll returns when its condition never held.
var ErrTimeout = errors.New("roomstest: condition did not hold in time")

// Poll is Eventually for callers without a testing.TB (a TestMain, a
// helper reporting its own error): it returns ErrTimeout after limit.
func Poll(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(delay)
	}
	return nil
}

// FreePort returns a TCP port that nothing listens on, on any interface,
// for a server the test starts that cannot bind port 0 and say which port
// it got (redis-server, a Sentinel, a cluster node with its bus on port +
// 10000, HAProxy, nginx). Servers that can — the relay, an httptest server
// — should bind 0 and be asked.
//
// The port is drawn below the kernel's ephemeral range (32768 and up on
// Linux), and low enough that its +10000 bus port is below it too: a port
// taken from that range and released can be handed out again at once, as
// the source port of any connection the tests make meanwhile, and the
// server then fails to bind it. Another test process may still take the
// port first: start servers with StartOnFreePort, which retries.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 10000 + rand.IntN(12000)
		if free(port) && free(port+10000) {
			return port
		}
	}
	t.Fatal("roomstest: no free port between 10000 and 22000")
	return 0
}

func free(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// StartOnFreePort calls start with FreePorts until it succeeds, trying
// another port when start's error says the port was taken meanwhile
// ("address already in use", as the kernel and redis-server say it), and
// fails the test on any other error. It returns the port start succeeded
// on.
func StartOnFreePort(t testing.TB, start func(port int) error) int {
	t.Helper()
	var err error
	for range 5 {
		port := FreePort(t)
		if err = start(port); err == nil {
			return port
		}
		if !AddrInUse(err) {
			break
		}
	}
	t.Fatalf("roomstest: starting a server on a free port: %v", err)
	return 0
}

// AddrInUse reports whether err says an address was already in use.
func AddrInUse(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "address already in use")
}

// EventuallyOK polls check as Eventually polls its condition, until check
// returns nil, failing the test after Wait with check's last error: what
// was seen instead of what was awaited.
func EventuallyOK(t testing.TB, what string, check func() error) {
	t.Helper()
	var err error
	if Poll(Wait, func() bool { err = check(); return err == nil }) != nil {
		t.Fatalf("timed out after %s waiting until %s: %v", Wait, what, err)
	}
}
