//go:build !linux

package relay

import (
	"errors"
	"net"
	"syscall"
)

// peerWatch is not available here: a vanished client is found by the
// next heartbeat's failed write instead, and streams are written with
// deadlines through net.Conn.
type peerWatch struct{}

type watched struct{}

func newPeerWatch() *peerWatch { return nil }

func (w *peerWatch) watch(net.Conn, func(), func()) *watched { return nil }

func (x *watched) waitWritable() bool { return false }

func (x *watched) unwatch() {}

func (w *peerWatch) stop() {}

// rawConn is nil here: streams take the net.Conn path.
func rawConn(net.Conn) syscall.RawConn { return nil }

func writeNow(syscall.RawConn, []byte) (int, bool, error) {
	return 0, false, errors.ErrUnsupported
}
