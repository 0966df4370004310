package relaytest

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Output is a writer that a test reads while something else — a process's
// stdout or stderr, a command's log — writes to it. It is safe for
// concurrent use, and its zero value is ready to use; the Await methods
// wake on every write and fail the test after Wait.
type Output struct {
	// Summary, when set, shortens what a timed-out wait prints of the
	// output (a long log, say); by default all of it is printed.
	Summary func(string) string

	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // made on first use; holds one wake-up at most
}

// NewOutput returns an empty Output.
func NewOutput() *Output { return new(Output) }

// changedLocked returns the channel that a write wakes. o.mu must be held.
func (o *Output) changedLocked() chan struct{} {
	if o.changed == nil {
		o.changed = make(chan struct{}, 1)
	}
	return o.changed
}

// Write appends p and wakes a waiting Await.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case o.changedLocked() <- struct{}{}:
	default:
	}
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Lines returns the complete lines written so far, without their newlines.
func (o *Output) Lines() []string {
	s := o.String()
	s = s[:strings.LastIndexByte(s, '\n')+1]
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// Await waits until cond holds for the output, failing the test after Wait
// with what it waited for.
func (o *Output) Await(t testing.TB, what string, cond func(string) bool) {
	t.Helper()
	o.mu.Lock()
	changed := o.changedLocked()
	o.mu.Unlock()
	deadline := time.NewTimer(Wait)
	defer deadline.Stop()
	for !cond(o.String()) {
		select {
		case <-changed:
		case <-deadline.C:
			s := o.String()
			if o.Summary != nil {
				s = o.Summary(s)
			}
			t.Fatalf("timed out waiting for %s; output:\n%s", what, s)
		}
	}
}

// AwaitMatch waits until the output matches re and returns the leftmost
// match and its submatches.
func (o *Output) AwaitMatch(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	o.Await(t, re.String(), func(s string) bool {
		m = re.FindStringSubmatch(s)
		return m != nil
	})
	return m
}

// AwaitCount waits until substr occurs n times in the output.
func (o *Output) AwaitCount(t testing.TB, substr string, n int) {
	t.Helper()
	o.Await(t, fmt.Sprintf("%d× %q", n, substr), func(s string) bool { return strings.Count(s, substr) >= n })
}

// AwaitLines waits until the output holds n complete lines and returns
// the lines written by then (n or more).
func (o *Output) AwaitLines(t testing.TB, n int) []string {
	t.Helper()
	o.Await(t, fmt.Sprintf("%d lines", n), func(string) bool { return len(o.Lines()) >= n })
	return o.Lines()
}
