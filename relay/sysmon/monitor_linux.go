//go:build linux

package sysmon

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// monitorPolicy keeps the Go runtime's monitor thread (sysmon), and only
// it, under SCHED_BATCH.
//
// Why: whenever the relay wakes from idle, the first system call resets
// the monitor to waking every 20 µs, and each wake-up preempts whatever
// thread is writing streams. On one core at one event per write the
// monitor took 13% of the relay's CPU, and without its preemptions a
// delivery costs 7-20% less CPU and p99 is about 1 ms lower; see
// docs/operations.md. Under
// SCHED_BATCH its wake-ups wait for the running thread's time slice
// instead of cutting it short, and it keeps its fair share of the CPU, so
// its duties (preempting long-running goroutines, taking processors back
// from blocked system calls) are delayed by at most a slice, far below the
// 10 ms it allows them.
//
// A thread inherits its creator's policy, and the monitor itself starts
// threads (when a goroutine blocks in a system call), so sweep puts any
// other thread found under SCHED_BATCH back to SCHED_OTHER.
type monitorPolicy struct {
	tid  int
	seen map[int]bool // threads already checked: a policy is only inherited at creation
}

// batchRuntimeMonitor moves the monitor thread to SCHED_BATCH, keeping its
// nice value. The monitor is the first thread the runtime starts, before
// any package is initialised, so it has the lowest thread id after the
// process's own.
func batchRuntimeMonitor() (*monitorPolicy, error) {
	tid, err := runtimeMonitorThread()
	if err != nil {
		return nil, err
	}
	if err := setPolicy(tid, unix.SCHED_BATCH); err != nil {
		return nil, fmt.Errorf("runtime monitor thread %d: SCHED_BATCH: %w", tid, err)
	}
	m := &monitorPolicy{tid: tid, seen: map[int]bool{tid: true}}
	if err := m.sweep(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *monitorPolicy) thread() int { return m.tid }

// keep sweeps every interval until ctx ends: a thread the monitor started
// runs under SCHED_BATCH until the next sweep.
func (m *monitorPolicy) keep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = m.sweep()
		}
	}
}

// sweep returns every thread but the monitor that is under SCHED_BATCH to
// SCHED_OTHER, looking at each thread once.
func (m *monitorPolicy) sweep() error {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("runtime monitor: %w", err)
	}
	alive := make(map[int]bool, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		alive[tid] = true
		if m.seen[tid] {
			continue
		}
		m.seen[tid] = true
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil || attr.Policy != unix.SCHED_BATCH {
			continue // ended, or not inherited
		}
		_ = setPolicy(tid, unix.SCHED_NORMAL)
	}
	for tid := range m.seen {
		if !alive[tid] {
			delete(m.seen, tid)
		}
	}
	return nil
}

// setPolicy changes a thread's scheduling policy, keeping its nice value
// (sched_setattr would otherwise set it to 0: refused when the process
// runs niced without privilege, and wrong when it has it).
func setPolicy(tid int, policy uint32) error {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	attr.Policy = policy
	return unix.SchedSetAttr(tid, attr, 0)
}

// runtimeMonitorThread is the thread created first after the process's
// own: the lowest id above the process id, counting past a wrap of the id
// space.
func runtimeMonitorThread() (int, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("runtime monitor: %w", err)
	}
	pid := os.Getpid()
	const idSpace = 1 << 22 // the kernel's largest pid_max
	best, bestDist := 0, idSpace
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == pid {
			continue
		}
		if d := (tid - pid + idSpace) % idSpace; d < bestDist {
			best, bestDist = tid, d
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("runtime monitor: no thread besides the main one")
	}
	return best, nil
}
