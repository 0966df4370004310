//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// epollAvailable says that this system has the epoll reader.
const epollAvailable = true

// defaultReader is the reader of a Config that names none.
const defaultReader = ReaderEpoll

// Sizes of a reader loop's batches: ready sockets per epoll_wait, and the
// buffer each of them is read into in turn. The buffer is the loop's, not
// the stream's: the decoder copies what it keeps (a partial line, an
// event's data), so one buffer serves every stream of the loop.
const (
	loopEvents     = 512
	loopBufferSize = 64 << 10
)

// streamReaders read connected SSE streams on Linux. A goroutine per
// stream costs, for every read that returns frames, a second read that
// returns EAGAIN and a park and unpark through the netpoller; a loop
// waiting on an epoll set of many sockets, registered level-triggered,
// costs one read(2) per ready socket and one epoll_wait(2) per batch of
// them. (The read that returns frames, with the ACK it sends through the
// loopback, remains the larger part of either: see docs/benchmarks.md.)
//
// A stream is handed over once connected (add); from then on only its
// loop reads it and writes its subscriber's fields. The loops belong to
// the run: start adds them to its WaitGroup, stop ends them, and a loop
// that ends resets every socket it was given and closes its descriptors.
type streamReaders struct {
	loops []*readerLoop
}

// newStreamReaders makes n loops, not yet running.
func newStreamReaders(n int) (*streamReaders, error) {
	rs := &streamReaders{}
	for range n {
		l, err := newReaderLoop()
		if err != nil {
			for _, l := range rs.loops {
				l.close()
			}
			return nil, err
		}
		rs.loops = append(rs.loops, l)
	}
	return rs, nil
}

// start runs every loop, counted in wg.
func (rs *streamReaders) start(wg *sync.WaitGroup) {
	for _, l := range rs.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
}

// stop tells every loop to end; it does not wait for them.
func (rs *streamReaders) stop() {
	for _, l := range rs.loops {
		l.stop()
	}
}

// add hands subscriber s's connected stream to a loop, with the decoder
// holding what has been read of it so far. The loop reads a duplicate of
// the socket's descriptor, and conn is closed: that takes the socket out of
// Go's netpoller, which would otherwise be woken for every arrival too,
// while the duplicate keeps the connection open (closing a descriptor ends
// a connection only when it is the last one). On error the stream has not
// been taken and conn is left to the run to close.
func (rs *streamReaders) add(s *subscriber, conn net.Conn, dec *streamDecoder) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("epoll reader: %T has no descriptor", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(orig uintptr) {
		fd, dupErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return err // the run closed conn: it is stopping
	}
	if dupErr != nil {
		return fmt.Errorf("epoll reader: duplicate the socket: %w", dupErr)
	}
	st := &epollStream{s: s, dec: dec, fd: fd, local: conn.LocalAddr(), remote: conn.RemoteAddr()}
	s.r.untrack(conn)
	_ = conn.Close()
	l := rs.loops[s.index%len(rs.loops)]
	if err := l.register(st); err != nil {
		resetSocket(fd)
		return err
	}
	return nil
}

// readerLoop reads the streams of one epoll set.
type readerLoop struct {
	epfd int
	// set is epfd, non-blocking, in Go's netpoller: the loop waits for the
	// set to have ready sockets as a goroutine waits for a read, rather
	// than blocked in epoll_wait(2), which would have the runtime hand its
	// P to another thread (and sysmon poll every 20 µs) at every wait.
	set  *os.File
	wake int // eventfd in the set that stop writes to

	mu sync.Mutex
	// closed: the loop has ended, its descriptors are closed or being
	// closed, and no stream may be added.
	closed  bool
	streams []*epollStream // by descriptor; nil where none
}

// epollStream is one stream of a loop. Only the loop touches it once it
// is registered.
type epollStream struct {
	s   *subscriber
	dec *streamDecoder
	fd  int
	// local and remote name the connection in read errors, as a net.Conn
	// does.
	local, remote net.Addr
	done          bool // ended: out of the epoll set, open until the loop ends
}

func newReaderLoop() (*readerLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll reader: %w", os.NewSyscallError("epoll_create1", err))
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll reader: %w", os.NewSyscallError("eventfd", err))
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll reader: %w", os.NewSyscallError("epoll_ctl", err))
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll reader: %w", os.NewSyscallError("fcntl", err))
	}
	return &readerLoop{epfd: epfd, set: os.NewFile(uintptr(epfd), "epoll"), wake: wake}, nil
}

// register adds st to the epoll set, unless the loop has ended.
func (l *readerLoop) register(st *epollStream) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("the epoll reader has stopped")
	}
	if st.fd >= len(l.streams) {
		grown := make([]*epollStream, max(st.fd+1, 2*len(l.streams)))
		copy(grown, l.streams)
		l.streams = grown
	}
	// Level-triggered: a socket that still holds data after its one read
	// of a batch is reported again by the next epoll_wait.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(st.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, st.fd, &ev); err != nil {
		return fmt.Errorf("epoll reader: %w", os.NewSyscallError("epoll_ctl", err))
	}
	// Stored before the lock is released: the loop takes the table under
	// the lock after an epoll_wait that reported st.fd.
	l.streams[st.fd] = st
	return nil
}

// stop wakes the loop to end it, unless it has ended.
func (l *readerLoop) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(l.wake, one[:])
	}
}

// run reads ready sockets until stop, then closes everything.
func (l *readerLoop) run() {
	defer l.close()
	raw, err := l.set.SyscallConn()
	if err != nil {
		l.fail(fmt.Errorf("epoll reader: %w", err))
		return
	}
	events := make([]unix.EpollEvent, loopEvents)
	buf := make([]byte, loopBufferSize)
	stopped := false
	var waitErr error
	// drain takes batches until none is ready, then has raw.Read wait in
	// the netpoller for the set to become readable.
	drain := func(epfd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(epfd), events, 0)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				waitErr = os.NewSyscallError("epoll_wait", err)
				return true
			case n == 0:
				return false
			}
			l.mu.Lock()
			streams := l.streams
			l.mu.Unlock()
			for i := range events[:n] {
				fd := int(events[i].Fd)
				if fd == l.wake {
					stopped = true
					return true
				}
				if st := streams[fd]; !st.done {
					l.read(st, buf)
				}
			}
		}
	}
	if err := raw.Read(drain); err != nil {
		waitErr = err
	}
	if !stopped {
		l.fail(fmt.Errorf("epoll reader: %w", waitErr))
	}
}

// read reads st once and decodes what came. The clock is read after the
// read returns, as the goroutine reader does, so that no delivery is
// timed before it was in hand.
func (l *readerLoop) read(st *epollStream, buf []byte) {
	n, err := unix.Read(st.fd, buf)
	switch {
	case err == nil && n > 0:
		st.s.now = time.Now().UnixNano()
		if ferr := st.dec.Feed(buf[:n]); ferr != nil {
			l.end(st, ferr)
		}
	case err == unix.EAGAIN || err == unix.EINTR:
		// Nothing after all; the next epoll_wait says.
	case err == nil:
		l.end(st, readEnd(st.dec, io.EOF))
	default:
		l.end(st, readEnd(st.dec, &net.OpError{Op: "read", Net: "tcp", Source: st.local, Addr: st.remote, Err: os.NewSyscallError("read", err)}))
	}
}

// end stops reading st, which ended for err. The socket stays open until
// the loop ends, as the goroutine reader leaves its connection to the run.
func (l *readerLoop) end(st *epollStream, err error) {
	st.done = true
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, st.fd, nil)
	st.s.end(true, err)
}

// fail ends every stream still read with err: the loop cannot go on.
func (l *readerLoop) fail(err error) {
	l.mu.Lock()
	streams := l.streams
	l.mu.Unlock()
	for _, st := range streams {
		if st != nil && !st.done {
			st.done = true
			st.s.end(true, err)
		}
	}
}

// close refuses further streams, resets every socket the loop was given
// and closes its descriptors.
func (l *readerLoop) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, st := range l.streams {
		if st != nil {
			resetSocket(st.fd)
		}
	}
	l.streams = nil
	_ = l.set.Close()
	_ = unix.Close(l.wake)
}

// resetSocket closes fd with a zero linger, so that the connection is
// reset and leaves no TIME_WAIT behind.
func resetSocket(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = unix.Close(fd)
}
