//go:build !linux

package sysmon

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// monitorPolicy is Linux only; see monitor_linux.go.
type monitorPolicy struct{}

func batchRuntimeMonitor() (*monitorPolicy, error) {
	return nil, fmt.Errorf("runtime monitor scheduling is only changed on Linux: %w", errors.ErrUnsupported)
}

func (*monitorPolicy) thread() int { return 0 }

func (*monitorPolicy) keep(context.Context, time.Duration) {}
