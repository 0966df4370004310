//go:build !linux

package relay

import (
	"net"
	"time"
)

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist; write
// deadlines still bound how long a dead peer is kept.
func setUserTimeout(net.Conn, time.Duration) {}
