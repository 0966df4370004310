package relay

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// peerWatch learns that a hijacked stream's client went away (it closed or
// reset the connection) without a goroutine per stream: one epoll instance,
// besides Go's own, watches every stream's socket for hang-ups.
type peerWatch struct {
	epfd int

	mu     sync.Mutex
	next   uint64
	byID   map[uint64]func()
	closed bool
	done   chan struct{}
}

func newPeerWatch() *peerWatch {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	w := &peerWatch{epfd: epfd, byID: make(map[uint64]func()), done: make(chan struct{})}
	go w.loop()
	return w
}

// watch calls gone once when nc's peer hangs up, until the returned
// function is called; both must be done before nc is closed.
func (w *peerWatch) watch(nc net.Conn, gone func()) (unwatch func()) {
	noop := func() {}
	tc, ok := nc.(*net.TCPConn)
	if w == nil || !ok {
		return noop
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return noop
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return noop
	}
	w.next++
	id := w.next
	w.byID[id] = gone
	w.mu.Unlock()
	var sock int
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLONESHOT,
		Fd: int32(id), Pad: int32(id >> 32)}
	added := false
	_ = raw.Control(func(fd uintptr) {
		sock = int(fd)
		added = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, sock, &ev) == nil
	})
	return func() {
		w.mu.Lock()
		delete(w.byID, id)
		w.mu.Unlock()
		if added {
			_ = raw.Control(func(fd uintptr) { _ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
		}
	}
}

func (w *peerWatch) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, 100)
		if err != nil && err != unix.EINTR {
			return
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		var gone []func()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if f := w.byID[id]; f != nil {
				delete(w.byID, id)
				gone = append(gone, f)
			}
		}
		w.mu.Unlock()
		for _, f := range gone {
			f()
		}
	}
}

// stop ends the watcher's goroutine.
func (w *peerWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	<-w.done
	_ = unix.Close(w.epfd)
}
