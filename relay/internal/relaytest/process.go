package relaytest

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// Process is a program a test started: the relay's binary, a script, a
// proxy. Its output is read while it runs; it is killed when the test
// ends, and a race report in its output fails the test.
type Process struct {
	Cmd *exec.Cmd
	// Stdout and Stderr are what it writes; the same Output when it was
	// started with ProcessOptions.Combined.
	Stdout, Stderr *Output

	group bool
	done  chan struct{}
	code  int
}

// ProcessOptions configure StartProcess.
type ProcessOptions struct {
	// Name says which process a message is about ("roomcast -addr ...",
	// "instance B").
	Name string
	// Combined writes stdout and stderr to one Output, in order.
	Combined bool
	// Group starts the process in a process group of its own and kills
	// the whole group: for a shell script whose children would otherwise
	// outlive the test.
	Group bool
	// Summary, when set, shortens the output a failed test logs (see
	// Output.Summary).
	Summary func(string) string
}

// StartProcess starts cmd with its output in Outputs. When the test ends
// the process is killed if it still runs, its stderr is checked for race
// reports, and, if the test failed, its output is logged.
func StartProcess(t testing.TB, cmd *exec.Cmd, o ProcessOptions) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Stdout: &Output{Summary: o.Summary}, group: o.Group, done: make(chan struct{}), code: -1}
	p.Stderr = p.Stdout
	if !o.Combined {
		p.Stderr = &Output{Summary: o.Summary}
	}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if o.Group {
		newGroup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", o.Name, err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		CheckRaces(t, o.Name, p.Stderr.String())
		if !t.Failed() {
			return
		}
		out := func(o *Output) string {
			if o.Summary != nil {
				return o.Summary(o.String())
			}
			return o.String()
		}
		if o.Combined {
			t.Logf("%s output:\n%s", o.Name, out(p.Stdout))
		} else {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", o.Name, out(p.Stdout), out(p.Stderr))
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode is the process's exit code once Done is closed (-1 when a
// signal ended it), and -1 before.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
		return p.code
	default:
		return -1
	}
}

// Wait returns the exit code, failing the test if the process does not
// exit within limit.
func (p *Process) Wait(t testing.TB, limit time.Duration) int {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.code
	case <-timer.C:
		t.Fatalf("still running after %s; stderr:\n%s", limit, p.Stderr.String())
		return -1
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Kill ends the process (its group, if started with Group) with SIGKILL,
// as a crash would, and waits until it is gone. Killing an exited process
// does nothing.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	if p.group {
		killGroup(p.Cmd)
	} else {
		_ = p.Cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends SIGTERM, as a platform replacing the process does, and waits
// up to Wait for it to exit, after which it is killed and the test fails.
// It returns the exit code.
func (p *Process) Stop(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	default:
	}
	_ = p.Cmd.Process.Signal(terminate)
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.code
	case <-timer.C:
		p.Kill()
		t.Errorf("still running %s after SIGTERM; killed", Wait)
		return -1
	}
}
