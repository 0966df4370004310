package redis

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// flushLog records the size of every pipeline a pipe sends.
type flushLog struct {
	mu    sync.Mutex
	sizes []int
}

func watchFlushes(p *pipe) *flushLog {
	l := &flushLog{}
	f := func(n int) {
		l.mu.Lock()
		l.sizes = append(l.sizes, n)
		l.mu.Unlock()
	}
	p.onFlush.Store(&f)
	return l
}

func (l *flushLog) snapshot() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.sizes...)
}

// pipelineCount counts the pipelines go-redis sends (each one write and
// one round trip), as an independent witness of what the pipe says.
type pipelineCount struct {
	mu   sync.Mutex
	cmds []int
}

func (c *pipelineCount) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (c *pipelineCount) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return next
}

func (c *pipelineCount) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if cmd.Name() == "evalsha" || cmd.Name() == "incr" {
				n++
			}
		}
		if n > 0 {
			c.mu.Lock()
			c.cmds = append(c.cmds, n)
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *pipelineCount) snapshot() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.cmds...)
}

type publishResult struct {
	m   rooms.Message
	p   rooms.Published
	err error
}

// publishAsync publishes m in a goroutine of its own.
func publishAsync(b *Backbone, m rooms.Message, out chan<- publishResult) {
	go func() {
		p, err := b.Publish(context.Background(), m, "")
		out <- publishResult{m, p, err}
	}()
}

func numbered(ch string, i int) rooms.Message {
	m := message(ch)
	m.Data = []byte(strconv.Itoa(i))
	return m
}

// occupyFlushers pauses srv and sends one publish per flusher of b, each
// alone in its pipeline, which then waits for the paused server: what is
// published next queues. The returned channel gets their results.
func occupyFlushers(t *testing.T, srv *redistest.Server, b *Backbone, flushes *flushLog, ch string) chan publishResult {
	t.Helper()
	srv.Pause()
	out := make(chan publishResult, pipeFlushers)
	base := len(flushes.snapshot())
	for i := range pipeFlushers {
		publishAsync(b, numbered(ch, -1-i), out)
		roomstest.Eventually(t, "a flusher took the publish", func() bool { return len(flushes.snapshot()) == base+i+1 })
	}
	return out
}

// Publishes arriving while earlier ones are in flight share one pipeline:
// one write and one round trip for all of them.
func TestConcurrentPublishesSharePipelines(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{OpTimeout: 30 * time.Second})
	ctx := context.Background()
	if _, err := b.Publish(ctx, message("warm-up"), ""); err != nil {
		t.Fatal(err)
	}
	var rt pipelineCount
	b.rdb.AddHook(&rt)
	flushes := watchFlushes(b.pub)
	busy := occupyFlushers(t, srv, b, flushes, "shared")
	const n = 40
	out := make(chan publishResult, n)
	for i := range n {
		publishAsync(b, numbered("shared", i), out)
	}
	roomstest.Eventually(t, "the publishes queued behind the busy flushers", func() bool { return len(b.pub.reqs) == n })
	srv.Resume()
	for range pipeFlushers {
		if r := <-busy; r.err != nil {
			t.Fatal(r.err)
		}
	}
	for range n {
		if r := <-out; r.err != nil {
			t.Fatal(r.err)
		}
	}
	want := []int{1, 1, n}
	if got := flushes.snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pipelines sent: %v; want %v (one per busy flusher, then all the queued publishes at once)", got, want)
	}
	if got := rt.snapshot(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("go-redis sent pipelines of %v publish scripts; want %v", got, want)
	}
	if got := historySeqs(t, b, "shared", 0); len(got) != n+pipeFlushers {
		t.Errorf("history holds %d events; want %d", len(got), n+pipeFlushers)
	}
}

// A publish on an idle backbone is sent by itself, at once: it waits for
// no companion and no timer (how long it takes is in BenchmarkLonePublish).
func TestLonePublishGoesOutAtOnce(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{OpTimeout: 30 * time.Second})
	ctx := context.Background()
	if _, err := b.Publish(ctx, message("warm-up"), ""); err != nil {
		t.Fatal(err)
	}
	flushes := watchFlushes(b.pub)
	var rt pipelineCount
	b.rdb.AddHook(&rt)
	// With the server stopped the publish cannot be answered: it is sent
	// alone, with nothing else happening that could push it out.
	srv.Pause()
	out := make(chan publishResult, 1)
	publishAsync(b, message("lone"), out)
	roomstest.Eventually(t, "the lone publish is sent", func() bool { return len(rt.snapshot()) == 1 })
	srv.Resume()
	if r := <-out; r.err != nil {
		t.Fatal(r.err)
	}
	for i := range 5 {
		if _, err := b.Publish(ctx, numbered("lone", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := fmt.Sprint(flushes.snapshot()), fmt.Sprint([]int{1, 1, 1, 1, 1, 1}); got != want {
		t.Errorf("sequential publishes went out in pipelines of %s; want %s (each alone)", got, want)
	}
}

// A connection lost after some replies of a pipeline: the publishes
// answered are stored, the others' outcome is unknown and named by their
// token (their scripts may have run: go-redis does not resend them, and
// the backbone's own resends found no Redis). A resend with the token
// stores each event once.
func TestConnectionLostMidBatch(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := newCutProxy(t, srv.Addr())
	b := openBackbone(t, "redis://"+proxy.addr(), Options{OpTimeout: 30 * time.Second})
	direct := openBackbone(t, srv.URL(), Options{})
	ctx := context.Background()
	if _, err := b.Publish(ctx, message("warm-up"), ""); err != nil {
		t.Fatal(err)
	}
	flushes := watchFlushes(b.pub)
	const n, answered = 10, 4
	// The first request carrying several publish scripts is the batch:
	// the connection is cut after the first replies to it.
	proxy.cutAfter(answered, func(req []byte) bool { return bytes.Count(req, []byte(publishScript.Hash())) >= 2 })
	busy := occupyFlushers(t, srv, b, flushes, "cut")
	out := make(chan publishResult, n)
	for i := range n {
		publishAsync(b, numbered("cut", i), out)
	}
	roomstest.Eventually(t, "the publishes queued behind the busy flushers", func() bool { return len(b.pub.reqs) == n })
	srv.Resume()
	for range pipeFlushers {
		if r := <-busy; r.err != nil {
			t.Fatal(r.err)
		}
	}
	select {
	case <-proxy.reached:
	case <-time.After(waitTimeout):
		t.Fatal("the batch's replies did not reach the proxy")
	}
	proxy.goDown()
	var stored, unknown []publishResult
	for range n {
		r := <-out
		var u *rooms.OutcomeUnknownError
		switch {
		case r.err == nil:
			stored = append(stored, r)
		case errors.As(r.err, &u):
			r.m.Token = u.Token
			unknown = append(unknown, r)
		default:
			t.Errorf("publish %s answered %v; want stored or outcome unknown", r.m.Data, r.err)
		}
	}
	if !proxy.didCut() {
		t.Fatal("the proxy cut no connection: the test did not test")
	}
	if got := flushes.snapshot(); len(got) < 3 || got[2] != n {
		t.Fatalf("pipelines sent: %v; want the %d publishes in one", got, n)
	}
	if len(stored) != answered || len(unknown) != n-answered {
		t.Fatalf("%d publishes answered as stored, %d as unknown; want %d and %d", len(stored), len(unknown), answered, n-answered)
	}
	for _, r := range unknown {
		p, err := direct.Publish(ctx, r.m, "")
		if err != nil {
			t.Fatalf("resend of %s with its token: %v", r.m.Data, err)
		}
		stored = append(stored, publishResult{r.m, p, nil})
	}
	h, err := direct.Since(ctx, "cut", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	bySeq := map[uint64]string{}
	count := map[string]int{}
	for _, ev := range h.Events {
		data := string(ev.Data)
		bySeq[ev.Seq] = data
		count[data]++
	}
	for _, r := range stored {
		if count[string(r.m.Data)] != 1 {
			t.Errorf("publish %s is in history %d times; want once", r.m.Data, count[string(r.m.Data)])
		}
		if got := bySeq[r.p.Seq]; got != string(r.m.Data) {
			t.Errorf("publish %s was answered with seq %d, which holds %q", r.m.Data, r.p.Seq, got)
		}
	}
}

// cutProxy forwards connections to a Redis server; armed, it passes the
// first k replies to the request it matches and holds the rest (reached
// is closed then); goDown ends every connection and then every new one at
// once (a refused dial would leave go-redis redialling in the background
// past the test): the link lost in the middle of a pipeline's replies.
type cutProxy struct {
	t      *testing.T
	target string
	l      net.Listener

	reached chan struct{}

	mu    sync.Mutex
	match func([]byte) bool
	k     int
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, target: target, l: l, conns: map[net.Conn]struct{}{}, reached: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { p.goDown(); _ = p.l.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) cutAfter(k int, match func([]byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.k, p.match = k, match
}

func (p *cutProxy) didCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *cutProxy) goDown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track() {
			_ = client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			continue
		}
		p.wg.Add(2)
		armed := make(chan int, 1) // replies to pass before the cut
		go p.requests(client, server, armed)
		go p.replies(client, server, armed)
	}
}

func (p *cutProxy) requests(client, server net.Conn, armed chan<- int) {
	defer p.wg.Done()
	defer func() { _ = server.Close() }()
	buf := make([]byte, 1<<20)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.match != nil && p.match(buf[:n]) {
				armed <- p.k
				p.match = nil
			}
			p.mu.Unlock()
			if _, err := server.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) replies(client, server net.Conn, armed <-chan int) {
	defer p.wg.Done()
	defer func() { _ = client.Close() }()
	rd := bufio.NewReader(server)
	left := -1
	for {
		reply, err := readReply(rd)
		if err != nil {
			return
		}
		if left < 0 {
			select {
			case left = <-armed:
			default:
			}
		}
		if left == 0 {
			p.mu.Lock()
			p.cut = true
			p.mu.Unlock()
			close(p.reached)
			return // the replies left unread are lost with the connection at goDown
		}
		if left > 0 {
			left--
		}
		if _, err := client.Write(reply); err != nil {
			return
		}
	}
}

// readReply reads one whole RESP2/RESP3 reply, returned as sent.
func readReply(rd *bufio.Reader) ([]byte, error) {
	var out []byte
	var read func() error
	read = func() error {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return err
		}
		out = append(out, line...)
		if len(line) < 3 {
			return fmt.Errorf("short line %q", line)
		}
		n, _ := strconv.Atoi(string(line[1 : len(line)-2]))
		switch line[0] {
		case '$', '=', '!': // bulk: n bytes and CRLF
			if n < 0 {
				return nil
			}
			b := make([]byte, n+2)
			if _, err := io.ReadFull(rd, b); err != nil {
				return err
			}
			out = append(out, b...)
		case '*', '~', '>': // n replies
			for range max(n, 0) {
				if err := read(); err != nil {
					return err
				}
			}
		case '%', '|': // n pairs
			for range 2 * max(n, 0) {
				if err := read(); err != nil {
					return err
				}
			}
			if line[0] == '|' { // an attribute precedes the reply itself
				return read()
			}
		}
		return nil
	}
	return out, read()
}

// A flusher that takes a command whose caller's context has ended does not
// send it: the caller, giving up, withdraws it and knows it never ran,
// where a command sent after its caller left would be answered unknown
// and might still run, later than what the caller publishes next.
func TestFlushSkipsEndedCallers(t *testing.T) {
	srv := redistest.NewServer(t)
	rdb := srv.Client()
	p := newPipe(rdb, 0, pipeMaxBatch, pipeMaxBytes, 10*time.Second)
	t.Cleanup(p.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ended := &pipeReq{ctx: ctx, cmd: goredis.NewStatusCmd(ctx, "set", "ended", "1"), done: make(chan struct{})}
	live := &pipeReq{ctx: context.Background(), cmd: goredis.NewStatusCmd(context.Background(), "set", "live", "1"),
		done: make(chan struct{})}
	p.flush([]*pipeReq{ended, live})
	if err := live.cmd.Err(); err != nil {
		t.Fatalf("the live command beside it: %v", err)
	}
	if n := rdb.Exists(context.Background(), "ended", "live").Val(); n != 1 {
		t.Errorf("%d of the two keys set; want the live command's alone", n)
	}
	if !ended.state.CompareAndSwap(reqQueued, reqWithdrawn) {
		t.Error("the ended caller could not withdraw its command: it was taken")
	}
}
