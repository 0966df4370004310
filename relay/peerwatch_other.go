//go:build !linux

package relay

import (
	"errors"
	"net"
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

// socketFD is not used here: streams take the net.Conn path.
func socketFD(net.Conn) (int, bool) { return -1, false }

func writeNow(int, []byte) (int, bool, error) {
	return 0, false, errors.ErrUnsupported
}
