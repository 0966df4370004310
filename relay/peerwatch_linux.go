package relay

import (
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerWatch learns that a hijacked stream's client went away (it closed or
// reset the connection), or that a stalled stream's socket can take bytes
// again, without a goroutine per stream: one epoll instance, besides Go's
// own, watches every stream's socket. The epoll descriptor is itself
// waited on in Go's netpoller: a goroutine blocked in epoll_wait would hold
// the only P of a one-core relay until the runtime's monitor took it back
// (measured: the monitor then used 10% of the relay's CPU, and every other
// goroutine waited on it).
type peerWatch struct {
	epfd int
	set  *os.File // epfd, registered with the netpoller

	mu     sync.Mutex
	next   uint64
	byID   map[uint64]*watched
	closed bool
	done   chan struct{}
}

// watched is one socket under watch.
type watched struct {
	w        *peerWatch
	id       uint64
	fd       int // valid while registered: unwatch runs before the close
	gone     func()
	writable func()
	added    bool
}

// hangups are the events that end a watch; EPOLLONESHOT keeps one socket's
// events from being reported twice while its callback runs.
const hangups = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR

func newPeerWatch() *peerWatch {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil
	}
	// A non-blocking descriptor makes os.NewFile register it with the
	// netpoller.
	w := &peerWatch{epfd: epfd, set: os.NewFile(uintptr(epfd), "peerwatch"),
		byID: make(map[uint64]*watched), done: make(chan struct{})}
	raw, err := w.set.SyscallConn()
	if err != nil {
		_ = w.set.Close()
		return nil
	}
	go w.loop(raw)
	return w
}

// watch calls gone once when nc's peer hangs up, and writable once after
// each waitWritable when the socket takes bytes again, until unwatch is
// called; all of it must be done before nc is closed.
func (w *peerWatch) watch(nc net.Conn, gone, writable func()) *watched {
	tc, ok := nc.(*net.TCPConn)
	if w == nil || !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.next++
	x := &watched{w: w, id: w.next, gone: gone, writable: writable}
	_ = raw.Control(func(fd uintptr) {
		x.fd = int(fd)
		x.added = x.ctl(unix.EPOLL_CTL_ADD, hangups) == nil
	})
	if !x.added {
		return nil
	}
	w.byID[x.id] = x
	return x
}

func (x *watched) ctl(op int, events uint32) error {
	ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: int32(x.id), Pad: int32(x.id >> 32)}
	return unix.EpollCtl(x.w.epfd, op, x.fd, &ev)
}

// waitWritable asks for one writable call when the socket has room again.
// It reports false when the socket is not watched, in which case the
// caller has to retry on its own.
func (x *watched) waitWritable() bool {
	if x == nil {
		return false
	}
	x.w.mu.Lock()
	defer x.w.mu.Unlock()
	if x.w.closed || x.w.byID[x.id] != x {
		return false
	}
	return x.ctl(unix.EPOLL_CTL_MOD, hangups|unix.EPOLLOUT) == nil
}

// unwatch ends the watch; neither callback runs after it returns, except
// one already started.
func (x *watched) unwatch() {
	if x == nil {
		return
	}
	x.w.mu.Lock()
	defer x.w.mu.Unlock()
	if x.w.byID[x.id] == x {
		delete(x.w.byID, x.id)
		if x.w.closed {
			return // the epoll descriptor is closed
		}
		_ = unix.EpollCtl(x.w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
	}
}

// loop runs the callbacks of reported events until stop closes the set.
func (w *peerWatch) loop(raw syscall.RawConn) {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	var calls []func()
	var failed error
	// take handles the events that are ready; returning false has raw.Read
	// wait in the netpoller for the set to become readable again.
	take := func(epfd uintptr) bool {
		n, err := unix.EpollWait(int(epfd), events, 0)
		if err == unix.EINTR {
			return true
		}
		if err != nil {
			failed = err
			return true
		}
		if n == 0 {
			return false
		}
		w.mu.Lock()
		calls = calls[:0]
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			x := w.byID[id]
			if x == nil {
				continue
			}
			if ev.Events&hangups != 0 {
				delete(w.byID, id)
				_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
				calls = append(calls, x.gone)
				continue
			}
			// Writable: the one-shot registration is spent; watch for
			// hang-ups again.
			_ = x.ctl(unix.EPOLL_CTL_MOD, hangups)
			calls = append(calls, x.writable)
		}
		w.mu.Unlock()
		for i, f := range calls {
			f()
			calls[i] = nil
		}
		return true
	}
	for {
		if err := raw.Read(take); err != nil || failed != nil {
			// stop closed the set, or it is unusable: stalled streams
			// then end at their write timeout.
			return
		}
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return
		}
	}
}

// stop ends the watcher's goroutine and closes the epoll descriptor.
func (w *peerWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	_ = w.set.Close() // wakes raw.Read
	<-w.done
}

// writeNow writes as much of p as the socket fd takes at once, without
// waiting and without the runtime's system-call bookkeeping. Only one
// goroutine at a time may write a socket through it, and the socket must
// stay open meanwhile: a hijacked stream's worker is its only writer and
// the only one to close it. The socket is non-blocking, so the write cannot
// block, and a raw system call spares the scheduler handing the only P to
// another thread when its monitor sees a write in progress (measured: ~8%
// of the relay's CPU at one event per write on one core). full reports that
// the socket's buffer is full.
func writeNow(fd int, p []byte) (n int, full bool, err error) {
	for n < len(p) {
		m, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return n, true, nil
		case e != 0:
			return n, false, e
		}
		n += int(m)
	}
	return n, false, nil
}

// socketFD is the descriptor of a plain TCP connection, written with
// writeNow; ok is false for anything else (TLS), which is written through
// net.Conn. Looking it up once, not at every write, spares the descriptor's
// reference counting per write (2% of the relay's CPU at one event per
// write).
func socketFD(nc net.Conn) (fd int, ok bool) {
	tc, isTCP := nc.(*net.TCPConn)
	if !isTCP {
		return -1, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, false
	}
	if raw.Control(func(d uintptr) { fd = int(d) }) != nil {
		return -1, false
	}
	return fd, true
}
