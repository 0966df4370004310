package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/relay/internal/sse"
	"github.com/roomcast/roomcast/rooms"
)

// The streamer writes hijacked HTTP/1.1 streams from a small pool of
// goroutines. An idle stream then costs no goroutine and no buffer, only
// its socket and its rooms.Connection: about 8 KB instead of the ~40 KB of
// a handler goroutine parked in net/http (measured: server RSS over 10,000
// idle streams). Streams wake the pool when they have
// something to send; a ticker sends heartbeats to those that stay quiet.
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

	peers *peerWatch
	quit  chan struct{} // closed by stop
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
	lastWrite atomic.Int64 // unix nanos
	pingDue   atomic.Bool
	busy      atomic.Bool // its last two writes came within the coalescing window
	warnDue   atomic.Bool

	// Owned by the worker servicing the stream.
	identityGen  uint64 // the identity's generation its timers follow
	batch        []rooms.Delivery
	pending      []byte
	stalledSince time.Time
	touchedAt    time.Time
	written      int64 // bytes sent, for the request's log line
	timers       []*time.Timer
	done         bool
}

func newStreamer(s *Server) *streamer {
	st := &streamer{s: s, all: make(map[*hstream]struct{}), peers: newPeerWatch(), quit: make(chan struct{})}
	st.cond = sync.NewCond(&st.mu)
	workers := max(4, runtime.GOMAXPROCS(0)*4)
	st.wg.Add(workers + 1)
	for range workers {
		go st.work()
	}
	go st.heartbeats()
	return st
}

// stop ends the pool's goroutines once every stream has ended.
func (st *streamer) stop() {
	st.mu.Lock()
	st.close = true
	st.cond.Broadcast()
	st.mu.Unlock()
	close(st.quit)
	st.wg.Wait()
	st.peers.stop()
}

// add takes over a hijacked stream whose head and first frames are written.
func (st *streamer) add(h *hstream) {
	h.lastWrite.Store(time.Now().UnixNano())
	// Until h is set up, add owns it as a worker would: a wake from the
	// heartbeats, a timer or the peer watch is remembered, not serviced
	// while h.unwatch and h.timers are still being written.
	h.state.Store(stRunning)
	st.mu.Lock()
	st.all[h] = struct{}{}
	st.mu.Unlock()
	h.identityGen = h.conn.IdentityGeneration() // read before the timers are set
	st.schedule(h)
	h.watch = st.peers.watch(h.nc, func() { h.gone.Store(true); st.wake(h) }, func() { st.wake(h) })
	if h.watch != nil {
		h.fd, h.raw = socketFD(h.nc)
	}
	h.conn.SetWake(func() { st.wake(h) })
	h.state.Store(stIdle)
	st.wake(h) // whatever was queued before the wake was set
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
						time.AfterFunc(w, st.flushDeferred)
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

// heartbeats marks quiet streams for a ping.
func (st *streamer) heartbeats() {
	defer st.wg.Done()
	every := st.s.opts.Heartbeat
	t := time.NewTicker(max(every/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-st.quit:
			return
		case <-t.C:
		}
		st.mu.Lock()
		due := time.Now().Add(-every).UnixNano()
		var quiet []*hstream
		for h := range st.all {
			if h.lastWrite.Load() <= due {
				quiet = append(quiet, h)
			}
		}
		st.mu.Unlock()
		for _, h := range quiet {
			h.pingDue.Store(true)
			st.wake(h)
		}
	}
}

// schedule sets the stream's token timers from its identity.
func (st *streamer) schedule(h *hstream) {
	for _, t := range h.timers {
		t.Stop()
	}
	h.timers = nil
	exp := h.conn.Identity().Expires
	if exp.IsZero() {
		return
	}
	conn := h.conn
	h.timers = append(h.timers,
		time.AfterFunc(max(time.Until(exp)-tokenWarning, 0), func() { h.warnDue.Store(true); st.wake(h) }),
		time.AfterFunc(max(time.Until(exp), 0), func() {
			conn.Close(rooms.CloseReason{Code: rooms.CloseTokenExpired,
				Message:     "the token expired; reconnect with a fresh one to resume",
				ReconnectMS: int(st.s.retryDelay().Milliseconds())})
		}))
}

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

// service writes whatever h has to send. Only one worker runs it at a time.
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
	if g := h.conn.IdentityGeneration(); g != h.identityGen {
		h.identityGen = g
		st.schedule(h)
	}
	bp := frameBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; frameBufs.Put(bp) }()

	if len(h.pending) < maxPending {
		h.batch = h.conn.Take(h.batch[:0])
		buf = s.appendDeliveries(buf, h.conn, h.batch)
		clear(h.batch)
	}
	if h.warnDue.Swap(false) {
		exp := h.conn.Identity().Expires
		data, _ := json.Marshal(map[string]any{"expires_at": exp.UnixMilli(), "connection": h.conn.ID})
		buf = sse.AppendEvent(buf, "", "roomcast:token-expiring", data)
	}
	ping := h.pingDue.Swap(false)
	if ping && len(buf) == 0 && len(h.pending) == 0 {
		buf = sse.AppendComment(buf, "ping")
	}
	now := time.Now()
	if (ping || len(buf) > 0) && now.Sub(h.touchedAt) > time.Second {
		// Registration, session and slots need renewing every few
		// seconds at most; checking costs a context, so not per write.
		h.touchedAt = now
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.touch(ctx, h.conn)
		h.slots.renew(ctx)
		cancel()
	}
	if len(buf) == 0 && len(h.pending) == 0 {
		return
	}
	if !st.write(h, buf, now) {
		st.finish(h, false)
	}
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
		h.stalledSince = time.Time{}
		prev := h.lastWrite.Swap(now.UnixNano())
		h.busy.Store(now.UnixNano()-prev < int64(st.s.opts.WriteCoalesce))
		return true
	}
	if n > 0 {
		h.lastWrite.Store(now.UnixNano())
	}
	h.pending = append(h.pending[:0], data[n:]...)
	if h.stalledSince.IsZero() {
		h.stalledSince = now
		// Checked again once the timeout has passed, even if the socket
		// never has room again and nothing else wakes the stream.
		time.AfterFunc(st.s.opts.WriteTimeout+stallSlice, func() { st.wake(h) })
	} else if now.Sub(h.stalledSince) > st.s.opts.WriteTimeout {
		return false // dead or hopelessly slow
	}
	if !h.watch.waitWritable() {
		time.AfterFunc(5*stallSlice, func() { st.wake(h) })
	}
	return true
}

// finish ends a stream: it tells the client why when the server closed it,
// then releases everything the stream held.
func (st *streamer) finish(h *hstream, closedByServer bool) {
	h.done = true
	for _, t := range h.timers {
		t.Stop()
	}
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
