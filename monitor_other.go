//go:build !linux

package main

import "errors"

// batchRuntimeMonitor is Linux only; see monitor_linux.go.
func batchRuntimeMonitor() (int, error) {
	return 0, errors.New("runtime monitor scheduling is only changed on Linux")
}
