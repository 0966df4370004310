package relay

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// The streamer writes hijacked HTTP/1.1 streams from a small pool of
// goroutines. An idle stream then costs no goroutine and no buffer, only
// its socket, its rooms.Connection and one timer: about 8 KB instead of the
// ~40 KB of a handler goroutine parked in net/http (measured: server RSS
// over 10,000 idle streams). Streams wake the pool when they have
// something to send or something falls due.
//
// A stream's state (hstream.state) lets one worker at a time service it
// and keeps a wake that comes during service from being lost:
//
//	           wake                     a worker takes it from runq
//	+------+ --------> +--------+ ------------------------------> +---------+
//	| idle |           | queued |                                 | running | <--+
//	+------+           +--------+                                 +---------+    |
//	   ^                 |    ^                                    |    |        |
//	   |  busy stream,   |    | the flush timer,                   |    | wake   | service
//	   |  written within v    | WriteCoalesce later                |    v        | again
//	   |  WriteCoalesce [deferred]                                 |  +-------+  |
//	   |                                                           |  | woken | -+
//	   +------------------ service done, no wake came -------------+  +-------+
//
// What wakes a stream (streamer.wake, which never blocks): the connection
// (deliveries waiting, closed, identity refreshed: rooms.Connection.SetWake);
// the peer watch (the client hung up, or a full socket has room again);
// and the stream's one timer. A wake of a queued or woken stream changes
// nothing; of a running one, it makes the worker service it again.
//
// Timers, each with an owner that stops it: every stream owns one
// (hstream.timer), armed by the worker servicing it for the earliest of
// what its streamPolicy says is due next (heartbeat, token warning and
// close, maximum lifetime) and when a stalled write is to be looked at
// again, and stopped by finish. The streamer owns the flush timer of the
// deferred streams, stopped by stop. live counts the timers armed, so a
// test can see that none outlives the streams.
type streamer struct {
	s *Server

	mu    sync.Mutex
	cond  *sync.Cond
	runq  []*hstream
	all   map[*hstream]struct{}
	close bool
	idle  int // workers waiting for work
	// deferred streams wait out the write coalescing window.
	deferred   []*hstream
	flushArmed bool
	flush      *time.Timer

	live  atomic.Int64 // timers armed and not yet fired or stopped
	peers *peerWatch
	wg    sync.WaitGroup
}

// Stream states, so that one stream is serviced by one worker at a time
// and a wake during service is not lost.
const (
	stIdle int32 = iota
	stQueued
	stRunning
	stRunningWoken
)

// maxPending bounds the bytes a stalled stream may hold unwritten; past it
// the stream takes no more from its queue, which then overflows and closes
// it as a slow consumer.
const maxPending = 1 << 20

// yieldEvery is how many streams a worker services between letting other
// goroutines run.
const yieldEvery = 4

// stallSlice is how long one write may block a worker; a client slower
// than that is retried later rather than holding the worker.
const stallSlice = 20 * time.Millisecond

// hstream is a hijacked stream.
type hstream struct {
	conn  *rooms.Connection
	nc    net.Conn
	slots *connSlots
	end   func() // releases what the stream holds
	// fd is written without blocking when raw is set: the socket is plain
	// TCP on Linux, watched by the peer watch. Otherwise nc is written
	// with deadlines.
	fd  int
	raw bool
	// watch tells of the client's hang-up and of room in a full socket.
	watch *watched
	// gone is set when the client hung up.
	gone atomic.Bool

	state     atomic.Int32
	lastWrite atomic.Int64 // unix nanos, for the coalescing in wake
	busy      atomic.Bool  // its last two writes came within the coalescing window

	// Owned by the worker servicing the stream (by add until it is set up).
	policy       *streamPolicy
	timer        *time.Timer // the stream's one timer; see streamer
	timerAt      time.Time   // when it fires, if it has not
	recheck      time.Time   // when a stalled write is looked at again; zero: none
	pending      []byte
	stalledSince time.Time
	written      int64 // bytes sent, for the request's log line
	done         bool
}

func newStreamer(s *Server) *streamer {
	st := &streamer{s: s, all: make(map[*hstream]struct{}), peers: newPeerWatch()}
	st.cond = sync.NewCond(&st.mu)
	workers := max(4, runtime.GOMAXPROCS(0)*4)
	st.wg.Add(workers)
	for range workers {
		go st.work()
	}
	return st
}

// stop ends the pool's goroutines once every stream has ended.
func (st *streamer) stop() {
	st.mu.Lock()
	st.close = true
	st.cond.Broadcast()
	st.mu.Unlock()
	st.wg.Wait()
	st.mu.Lock()
	st.disarm(st.flush)
	st.mu.Unlock()
	st.peers.stop()
}

// arm sets *t (made on first use) to call f after d, counting it in live
// until it fires or is stopped.
func (st *streamer) arm(t **time.Timer, d time.Duration, f func()) {
	if *t == nil {
		st.live.Add(1)
		*t = time.AfterFunc(d, func() { st.live.Add(-1); f() })
		return
	}
	if !(*t).Reset(d) {
		// It had fired or was stopped: armed again. (Had it fired, its
		// call, maybe still to run, counts itself out.)
		st.live.Add(1)
	}
}

// disarm stops t, if armed.
func (st *streamer) disarm(t *time.Timer) {
	if t != nil && t.Stop() {
		st.live.Add(-1)
	}
}

// add takes over a hijacked stream whose head and first frames are written.
func (st *streamer) add(h *hstream) {
	now := time.Now()
	h.lastWrite.Store(now.UnixNano())
	// Until h is set up, add owns it as a worker would: a wake from its
	// timer or the peer watch is remembered, not serviced while h.watch
	// and h.timer are still being written.
	h.state.Store(stRunning)
	st.mu.Lock()
	st.all[h] = struct{}{}
	st.mu.Unlock()
	h.policy.wrote(now)
	st.rearm(h, now)
	h.watch = st.peers.watch(h.nc, func() { h.gone.Store(true); st.wake(h) }, func() { st.wake(h) })
	if h.watch != nil {
		h.fd, h.raw = socketFD(h.nc)
	}
	h.conn.SetWake(func() { st.wake(h) })
	h.state.Store(stIdle)
	st.wake(h) // whatever was queued before the wake was set
}

// rearm sets the stream's timer for the earliest of what its policy and a
// stalled write wait for. A timer set to fire before that is left alone:
// it wakes the stream early, which finds nothing due and sets it again;
// so a stream written to often does not reset its timer at every write.
func (st *streamer) rearm(h *hstream, now time.Time) {
	at := h.policy.next(now)
	if !h.recheck.IsZero() {
		at = earliest(at, latest(h.recheck, now))
	}
	if h.timer != nil && h.timerAt.After(now) && !h.timerAt.After(at) {
		return
	}
	h.timerAt = at
	st.arm(&h.timer, at.Sub(now), func() { st.wake(h) })
}

// wake queues h for service unless it already is; it never blocks.
func (st *streamer) wake(h *hstream) {
	for {
		switch s := h.state.Load(); s {
		case stIdle:
			if h.state.CompareAndSwap(stIdle, stQueued) {
				st.mu.Lock()
				if w := st.s.opts.WriteCoalesce; w > 0 && h.busy.Load() && time.Now().UnixNano()-h.lastWrite.Load() < int64(w) {
					// A busy stream (its last two writes came within the
					// window) written moments ago: let more events gather,
					// so that they share a write instead of each costing a
					// system call. A stream that is not busy is written at
					// once: a quiet room gets no added latency.
					st.deferred = append(st.deferred, h)
					if !st.flushArmed {
						st.flushArmed = true
						st.arm(&st.flush, w, st.flushDeferred)
					}
					st.mu.Unlock()
					return
				}
				st.runq = append(st.runq, h)
				// A fan-out wakes many streams at once: busy workers
				// pick them up without a wake-up each.
				if st.idle > 0 {
					st.cond.Signal()
				}
				st.mu.Unlock()
				return
			}
		case stRunning:
			if h.state.CompareAndSwap(stRunning, stRunningWoken) {
				return
			}
		default:
			return
		}
	}
}

// flushDeferred queues the streams that waited out the coalescing window.
func (st *streamer) flushDeferred() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.runq = append(st.runq, st.deferred...)
	clear(st.deferred)
	st.deferred = st.deferred[:0]
	st.flushArmed = false
	if st.idle > 0 {
		st.cond.Broadcast()
	}
}

func (st *streamer) work() {
	defer st.wg.Done()
	for served := 0; ; served++ {
		if served%yieldEvery == yieldEvery-1 {
			// A fan-out keeps every worker busy for many milliseconds;
			// the requests that publish (and so make the next events)
			// would wait behind them for the scheduler's 10 ms slices.
			runtime.Gosched()
		}
		st.mu.Lock()
		for len(st.runq) == 0 && !(st.close && len(st.all) == 0) {
			st.idle++
			st.cond.Wait()
			st.idle--
		}
		if len(st.runq) == 0 {
			st.mu.Unlock()
			return
		}
		h := st.runq[0]
		st.runq[0] = nil
		st.runq = st.runq[1:]
		st.mu.Unlock()

		h.state.Store(stRunning)
		for {
			st.service(h)
			if h.state.CompareAndSwap(stRunning, stIdle) {
				break
			}
			h.state.Store(stRunning) // woken while running: go again
		}
	}
}

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

// service writes whatever h has to send and does what its policy says is
// due. Only one worker runs it at a time.
func (st *streamer) service(h *hstream) {
	if h.done {
		return
	}
	s := st.s
	if h.gone.Load() {
		st.finish(h, false)
		return
	}
	if h.conn.Closed() {
		st.finish(h, true)
		return
	}
	bp := frameBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; frameBufs.Put(bp) }()

	if len(h.pending) < maxPending {
		buf = s.appendDeliveries(buf, h.conn)
	}
	now := time.Now()
	due := h.policy.due(now, h.conn, len(buf) > 0 || len(h.pending) > 0)
	if due.closing {
		h.conn.Close(due.close) // the first reason stays, should another have come first
		h.pending = append(h.pending, buf...)
		st.finish(h, true)
		return
	}
	buf = appendDue(buf, h.conn, due)
	if due.touch {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.keepAlive(ctx, h.conn, h.slots)
		cancel()
	}
	if (len(buf) > 0 || len(h.pending) > 0) && !st.write(h, buf, now) {
		st.finish(h, false)
		return
	}
	st.rearm(h, now)
}

// write sends pending bytes and then buf without letting a slow client
// hold the worker: what the socket does not take at once waits for it to
// have room (or, without a raw socket, for a later service). It reports
// false when the stream is dead.
func (st *streamer) write(h *hstream, buf []byte, now time.Time) bool {
	data := buf
	if len(h.pending) > 0 {
		h.pending = append(h.pending, buf...)
		data = h.pending
	}
	var n int
	var full bool
	var err error
	if h.raw {
		n, full, err = writeNow(h.fd, data)
	} else {
		_ = h.nc.SetWriteDeadline(now.Add(stallSlice))
		n, err = h.nc.Write(data)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			full, err = true, nil
		}
	}
	if err != nil {
		return false
	}
	h.written += int64(n)
	if !full {
		h.pending = h.pending[:0]
		h.stalledSince, h.recheck = time.Time{}, time.Time{}
		h.policy.wrote(now)
		prev := h.lastWrite.Swap(now.UnixNano())
		h.busy.Store(now.UnixNano()-prev < int64(st.s.opts.WriteCoalesce))
		return true
	}
	if n > 0 {
		h.policy.wrote(now)
		h.lastWrite.Store(now.UnixNano())
	}
	h.pending = append(h.pending[:0], data[n:]...)
	if h.stalledSince.IsZero() {
		h.stalledSince = now
	} else if now.Sub(h.stalledSince) > st.s.opts.WriteTimeout {
		return false // dead or hopelessly slow
	}
	// Looked at again once the timeout has passed, even if the socket
	// never has room again and nothing else wakes the stream; without a
	// watch to say when it has room, every few slices.
	h.recheck = h.stalledSince.Add(st.s.opts.WriteTimeout + stallSlice)
	if !h.watch.waitWritable() {
		h.recheck = earliest(h.recheck, now.Add(5*stallSlice))
	}
	return true
}

// finish ends a stream: it tells the client why when the server closed it,
// then releases everything the stream held, its timer first.
func (st *streamer) finish(h *hstream, closedByServer bool) {
	h.done = true
	st.disarm(h.timer)
	h.watch.unwatch()
	if closedByServer {
		// Best effort: what was still pending, then why the stream ends.
		frame := st.s.closeFrame(h.conn, h.pending)
		_ = h.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = h.nc.Write(frame)
	}
	_ = h.nc.Close()
	st.mu.Lock()
	delete(st.all, h)
	if st.close && len(st.all) == 0 {
		st.cond.Broadcast()
	}
	st.mu.Unlock()
	h.end()
}
