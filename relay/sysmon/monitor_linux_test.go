//go:build linux

package sysmon

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBatchRuntimeMonitor(t *testing.T) {
	want, err := runtimeMonitorThread()
	if err != nil {
		t.Fatal(err)
	}
	// A niced monitor stays niced: raising a thread's nice needs no
	// privilege.
	before, err := unix.SchedGetAttr(want, 0)
	if err != nil {
		t.Fatal(err)
	}
	before.Nice = 3
	if err := unix.SchedSetAttr(want, before, 0); err != nil {
		t.Fatal(err)
	}
	m, err := batchRuntimeMonitor()
	if err != nil {
		t.Fatal(err)
	}
	if tid := m.thread(); tid != want || tid == os.Getpid() {
		t.Fatalf("moved thread %d, want the monitor %d (process %d)", tid, want, os.Getpid())
	}
	attr, err := unix.SchedGetAttr(want, 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Policy != unix.SCHED_BATCH || attr.Nice != 3 {
		t.Fatalf("monitor thread %d: policy %d nice %d, want SCHED_BATCH (%d) nice 3", want, attr.Policy, attr.Nice, unix.SCHED_BATCH)
	}
	checkOnlyMonitorBatched(t, m)
}

// TestSweepUndoesInheritedBatch: a thread started under SCHED_BATCH, as one
// the monitor starts would be, is put back to SCHED_OTHER by the sweep; the
// monitor keeps SCHED_BATCH.
func TestSweepUndoesInheritedBatch(t *testing.T) {
	batched := make(chan int)
	release := make(chan struct{})
	go func() {
		// Locked and never unlocked: the thread ends with the goroutine
		// instead of going back to the runtime with a changed policy.
		runtime.LockOSThread()
		tid := unix.Gettid()
		if err := setPolicy(tid, unix.SCHED_BATCH); err != nil {
			t.Error(err)
		}
		batched <- tid
		<-release
	}()
	tid := <-batched
	defer close(release)
	// The sweep checks each thread once, when it first sees it: as the
	// monitor's new threads, this one is new to a new policy keeper.
	m, err := batchRuntimeMonitor()
	if err != nil {
		t.Fatal(err)
	}
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if attr.Policy != unix.SCHED_NORMAL {
		t.Fatalf("thread %d still has policy %d after the sweep", tid, attr.Policy)
	}
	checkOnlyMonitorBatched(t, m)
}

// checkOnlyMonitorBatched fails unless the monitor is the one thread under
// SCHED_BATCH, among those m's last sweep saw (one the monitor started
// since is the next sweep's).
func checkOnlyMonitorBatched(t *testing.T, m *monitorPolicy) {
	t.Helper()
	monitor := m.thread()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		tid, _ := strconv.Atoi(e.Name())
		if !m.seen[tid] {
			continue
		}
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // the thread ended
		}
		if isMonitor := tid == monitor; isMonitor != (a.Policy == unix.SCHED_BATCH) {
			t.Errorf("thread %d (monitor: %v) has policy %d", tid, isMonitor, a.Policy)
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
