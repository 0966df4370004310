package relay

import (
	"context"
	"net"
	"time"
)

// Listen opens a TCP listener whose accepted connections carry TCP keep-alives
// and, where the platform has it, TCP_USER_TIMEOUT set to userTimeout.
func Listen(ctx context.Context, addr string, userTimeout time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: 15 * time.Second}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &userTimeoutListener{Listener: ln, timeout: userTimeout}, nil
}

type userTimeoutListener struct {
	net.Listener
	timeout time.Duration
}

func (l *userTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		setUserTimeout(c, l.timeout)
	}
	return c, err
}
