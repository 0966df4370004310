package main

import (
	"context"
	"time"
)

// batchMonitorWhile keeps the runtime's monitor thread under SCHED_BATCH
// (monitorPolicy) until stop is called; tid is that thread.
func batchMonitorWhile(ctx context.Context) (stop func(), tid int, err error) {
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
