package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// pipe shares round trips to Redis between concurrent callers: a flusher
// takes the first command waiting, adds every other one already waiting
// (up to a bound), and sends them as one pipeline; commands that arrive
// while a pipeline is in flight wait for the next. A lone command on an
// idle pipe goes out at once: nothing here waits on a timer.
//
// Why our own and not go-redis v9.23's AutoPipeliner (measured, see
// docs/benchmarks.md and docs/architecture.md): the AutoPipeliner is
// experimental and holds stragglers behind in-flight batches on silence
// timers (200 µs–2 ms), runs batches on its own context (a caller's
// deadline does not bound its command), and recovers a broken full-duplex
// connection by replaying commands Redis may already have run. A publish
// must know, per command, whether it may have run; here that is plain: a
// command the flusher never took was not sent (errNotSent), a command
// taken and then failed by the connection may have run, and go-redis does
// not retry a pipeline holding a NoRetry command (onceCmd).
type pipe struct {
	rdb      *goredis.Client
	reqs     chan *pipeReq
	maxBatch int   // commands per pipeline
	maxBytes int64 // argument bytes per pipeline, roughly (one command may pass it alone)
	timeout  time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup

	// taking is held by the flusher collecting a batch, so that a batch
	// is everything waiting when it is taken, never split between two
	// flushers that woke together.
	taking sync.Mutex

	// onFlush, when set (tests), is called with each pipeline's size
	// before it is sent.
	onFlush atomic.Pointer[func(n int)]
}

// pipeReq is one command waiting for a pipeline.
type pipeReq struct {
	ctx    context.Context
	cmd    goredis.Cmder
	script *goredis.Script // loaded when Redis answers NOSCRIPT
	size   int64
	state  atomic.Int32
	done   chan struct{}
}

// A request's state: queued until a flusher takes it into a pipeline, or
// until its caller gives up on it first.
const (
	reqQueued int32 = iota
	reqTaken
	reqWithdrawn
)

// errNotSent marks a command that never left this process: its caller gave
// up (or the pipe closed) before a flusher took it.
var errNotSent = errors.New("not sent to redis")

// newPipe starts flushers goroutines that send rdb pipelines of at most
// maxBatch commands; each pipeline's deadline is the latest of its
// callers', or timeout from its start when none has one. Close stops them.
func newPipe(rdb *goredis.Client, flushers, maxBatch int, maxBytes int64, timeout time.Duration) *pipe {
	p := &pipe{rdb: rdb, reqs: make(chan *pipeReq, 4*maxBatch*flushers), maxBatch: maxBatch,
		maxBytes: maxBytes, timeout: timeout, stop: make(chan struct{})}
	p.wg.Add(flushers)
	for range flushers {
		go p.run()
	}
	return p
}

// Close stops the flushers once the pipelines they sent are answered.
// Commands still queued fail with errNotSent.
func (p *pipe) Close() {
	close(p.stop)
	p.wg.Wait()
}

// do sends cmd in the next pipeline and waits for its reply; script is
// loaded and cmd sent again if Redis does not know it. The error is cmd's:
// errNotSent (wrapped) when cmd was never sent, else what the pipeline
// left on it, or ctx's when ctx ended while cmd was on its way.
func (p *pipe) do(ctx context.Context, cmd goredis.Cmder, script *goredis.Script) error {
	r := &pipeReq{ctx: ctx, cmd: cmd, script: script, size: argBytes(cmd.Args()), done: make(chan struct{})}
	select {
	case p.reqs <- r:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errNotSent, ctx.Err())
	case <-p.stop:
		return fmt.Errorf("%w: %w", errNotSent, goredis.ErrClosed)
	}
	select {
	case <-r.done:
		return cmd.Err()
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqWithdrawn) {
			return fmt.Errorf("%w: %w", errNotSent, ctx.Err())
		}
		// Taken: it may be running in Redis now. Its pipeline ends by
		// its own deadline; the caller does not wait for it.
		return ctx.Err()
	case <-p.stop:
		if r.state.CompareAndSwap(reqQueued, reqWithdrawn) {
			return fmt.Errorf("%w: %w", errNotSent, goredis.ErrClosed)
		}
		<-r.done // a flusher finishes what it took before it exits
		return cmd.Err()
	}
}

// argBytes estimates what a command's arguments weigh on the wire.
func argBytes(args []any) int64 {
	var n int64
	for _, a := range args {
		switch v := a.(type) {
		case string:
			n += int64(len(v))
		case []byte:
			n += int64(len(v))
		}
		n += 8
	}
	return n
}

func (p *pipe) run() {
	defer p.wg.Done()
	batch := make([]*pipeReq, 0, p.maxBatch)
	for {
		var first *pipeReq
		p.taking.Lock()
		select {
		case first = <-p.reqs:
		case <-p.stop:
			p.taking.Unlock()
			return
		}
		batch = append(batch[:0], first)
		size := first.size
	fill:
		for len(batch) < p.maxBatch && size < p.maxBytes {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
				size += r.size
			default:
				break fill
			}
		}
		p.taking.Unlock()
		p.flush(batch)
		clear(batch)
	}
}

// flush sends the batch's commands that are still wanted as one pipeline
// and answers each.
func (p *pipe) flush(batch []*pipeReq) {
	live := batch[:0]
	var deadline time.Time
	for _, r := range batch {
		if r.ctx.Err() != nil {
			// Its caller is giving up: left queued, the caller withdraws
			// it and knows it was not sent.
			continue
		}
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // its caller gave up before it was sent
		}
		live = append(live, r)
		if d, ok := r.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(p.timeout)
	}
	// The pipeline's context is its own: the callers' deadlines bound
	// it, but one caller's cancellation must not fail the others.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	p.exec(ctx, live)
	// Commands the server did not know the script of did not run: load
	// it and send them again, once.
	var again []*pipeReq
	for _, r := range live {
		if r.script != nil && goredis.HasErrorPrefix(r.cmd.Err(), "NOSCRIPT") {
			again = append(again, r)
		}
	}
	if len(again) > 0 {
		loaded := map[*goredis.Script]error{}
		retry := again[:0]
		for _, r := range again {
			err, seen := loaded[r.script]
			if !seen {
				err = r.script.Load(ctx, p.rdb).Err()
				loaded[r.script] = err
			}
			if err == nil {
				r.cmd.SetErr(nil)
				retry = append(retry, r)
			}
		}
		if len(retry) > 0 {
			p.exec(ctx, retry)
		}
	}
	for _, r := range live {
		close(r.done)
	}
}

func (p *pipe) exec(ctx context.Context, reqs []*pipeReq) {
	if f := p.onFlush.Load(); f != nil {
		(*f)(len(reqs))
	}
	pl := p.rdb.Pipeline()
	sent := make([]*answered, len(reqs))
	for i, r := range reqs {
		sent[i] = &answered{Cmder: r.cmd}
		_ = pl.Process(ctx, sent[i])
	}
	_, _ = pl.Exec(ctx)
	// A connection lost after the k-th reply leaves the first k answered
	// and the rest failed; go-redis then stamps its error on the answered
	// ones too (v9.23 generalProcessPipeline → setCmdsErr), which would
	// make stored publishes look unknown. What was read stands.
	for i, a := range sent {
		if a.read && reqs[i].cmd.Err() != nil {
			reqs[i].cmd.SetErr(nil)
		}
	}
}

// answered wraps a command of a pipeline to tell whether go-redis read its
// reply: the first error set on it after sending is the reply's (nil, or
// Redis's own error), unless it is the connection's. (A pipeline go-redis
// resends, of commands that allow it, ran them at least once either way.)
type answered struct {
	goredis.Cmder
	set  bool
	read bool // the first outcome was a reply without error
}

// SetErr implements goredis.Cmder.
func (a *answered) SetErr(err error) {
	if !a.set {
		a.set, a.read = true, err == nil
	}
	a.Cmder.SetErr(err)
}

// keepScript runs script through the bookkeeping pipe. The command's
// reply may be read only when err is nil.
func (b *Backbone) keepScript(ctx context.Context, script *goredis.Script, keys []string, args ...any) (*goredis.Cmd, error) {
	call := make([]any, 0, 3+len(keys)+len(args))
	call = append(call, "evalsha", script.Hash(), len(keys))
	for _, k := range keys {
		call = append(call, k)
	}
	cmd := goredis.NewCmd(ctx, append(call, args...)...)
	return cmd, b.keep.do(ctx, cmd, script)
}
