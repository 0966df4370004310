//go:build !linux

package relay

import "net"

// peerWatch is not available here: a vanished client is found by the
// next heartbeat's failed write instead.
type peerWatch struct{}

func newPeerWatch() *peerWatch { return nil }

func (w *peerWatch) watch(net.Conn, func()) func() { return func() {} }

func (w *peerWatch) stop() {}
