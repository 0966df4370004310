//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// batchRuntimeMonitor moves the Go runtime's monitor thread (sysmon) to
// SCHED_BATCH and returns its thread id.
//
// Why: whenever the relay wakes from idle, the first system call resets
// the monitor to waking every 20 µs, and each wake-up preempts whatever
// thread is writing streams. On one core at one event per write that cost
// a quarter of the relay's CPU (the monitor itself 13%, the rest the
// writers' lost caches) and 2 ms of p99; see docs/benchmarks.md. Under
// SCHED_BATCH its wake-ups wait for the running thread's time slice
// instead of cutting it short, and it keeps its fair share of the CPU, so
// its duties (preempting long-running goroutines, taking processors back
// from blocked system calls) are delayed by at most a slice, far below the
// 10 ms it allows them.
//
// The monitor is the first thread the runtime starts, before any package
// is initialised, so it has the lowest thread id after the process's own.
func batchRuntimeMonitor() (int, error) {
	tid, err := runtimeMonitorThread()
	if err != nil {
		return 0, err
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		return 0, fmt.Errorf("sched_setattr(%d, SCHED_BATCH): %w", tid, err)
	}
	return tid, nil
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
