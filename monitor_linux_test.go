//go:build linux

package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBatchRuntimeMonitor(t *testing.T) {
	tid, err := batchRuntimeMonitor()
	if err != nil {
		t.Fatal(err)
	}
	if tid == os.Getpid() {
		t.Fatalf("moved the main thread (%d)", tid)
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Policy != unix.SCHED_BATCH {
		t.Fatalf("policy of thread %d = %d, want SCHED_BATCH (%d)", tid, attr.Policy, unix.SCHED_BATCH)
	}
	// Every other thread keeps the default policy.
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		other, _ := strconv.Atoi(e.Name())
		if other == tid {
			continue
		}
		a, err := unix.SchedGetAttr(other, 0)
		if err != nil {
			continue // the thread ended
		}
		if a.Policy != unix.SCHED_NORMAL {
			t.Errorf("thread %d has policy %d, want SCHED_NORMAL", other, a.Policy)
		}
	}
}

func TestRuntimeMonitorThreadWakesWhileBusy(t *testing.T) {
	tid, err := runtimeMonitorThread()
	if err != nil {
		t.Fatal(err)
	}
	// The monitor is the thread that keeps waking up, on its own, while
	// a goroutine runs without blocking: it checks on it every 20 µs to
	// 10 ms.
	switches := func() int {
		b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no voluntary_ctxt_switches in status")
		return 0
	}
	before := switches()
	spin := 0
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		spin++
	}
	if woke := switches() - before; woke < 10 {
		t.Fatalf("thread %d woke %d times while a goroutine ran for 300 ms (spun %d): not the runtime monitor", tid, woke, spin)
	}
}
