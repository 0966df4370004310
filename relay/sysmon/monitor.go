// Package sysmon moves the Go runtime's monitor thread (sysmon) to
// SCHED_BATCH while a process runs, so that its wake-ups stop preempting
// the threads doing the work: the relay's stream writers, the load
// generator's readers. Linux only; elsewhere BatchWhile says it is
// unsupported.
package sysmon

import (
	"context"
	"time"
)

// BatchWhile keeps the runtime's monitor thread under SCHED_BATCH
// (monitorPolicy) until stop is called; tid is that thread.
func BatchWhile(ctx context.Context) (stop func(), tid int, err error) {
	m, err := batchRuntimeMonitor()
	if err != nil {
		return func() {}, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.keep(ctx, time.Second)
	}()
	return func() { cancel(); <-done }, m.thread(), nil
}
