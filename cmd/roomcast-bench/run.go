package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one benchmark run. Run fills in what is left zero with the
// defaults of the command's flags.
type Config struct {
	// Targets are the relays' base URLs (loopback only). Subscribers are
	// spread over them round-robin; publishers use the first, or all of
	// them round-robin with PublishSpread.
	Targets       []string
	PublishSpread bool
	// Room is the room every subscriber follows; Event the event name
	// published.
	Room  string
	Event string
	// Subscribers stream with SSE; Polls long-poll.
	Subscribers int
	Polls       int
	// Publishers send Messages events in all (Rate × Duration when zero)
	// at Rate per second together, each Size bytes, volatile or not.
	Publishers int
	Rate       float64
	Messages   int
	Duration   time.Duration
	Size       int
	Volatile   bool
	// APIKey authenticates publishes (the relay exempts it from rate
	// limits); SubscriberToken, when set, is sent by every subscriber.
	APIKey          string
	SubscriberToken string
	// ServerPIDs are the relays' processes, for CPU and memory figures.
	ServerPIDs []int
	// Sources is the number of source addresses 127.0.0.1… subscribers
	// connect from (0: one per 16,384 connections).
	Sources int
	// ConnectConcurrency bounds connection attempts in flight;
	// ConnectTimeout bounds the whole connect phase.
	ConnectConcurrency int
	ConnectTimeout     time.Duration
	// Warmup is the idle time between the last subscriber connecting and
	// the first publish, over which idle memory and CPU are measured.
	Warmup time.Duration
	// Settle is how long to wait after the last publish for deliveries.
	Settle time.Duration
	// Timeout is the hard deadline of the whole run.
	Timeout time.Duration
	// PollHold is the long-poll hold each poll asks for.
	PollHold time.Duration
	// Label names the run in its report.
	Label string
	// Reader is how connected SSE streams are read: ReaderEpoll (a few
	// loops, each waiting on an epoll set of many sockets; Linux only) or
	// ReaderGoroutine (one goroutine per stream). Empty picks the epoll
	// reader where it exists.
	Reader string
	// H2C has the SSE subscribers speak HTTP/2 without TLS, as a proxy in
	// front of the relay would: many streams share each connection (up to
	// the relay's limit per connection), so the relay holds more streams
	// than it may open descriptors. Each stream is read by a goroutine.
	H2C bool
}

// Readers of SSE streams, for Config.Reader.
const (
	ReaderEpoll     = "epoll"
	ReaderGoroutine = "goroutine"
)

// checkReader refuses a reader this system does not have.
func checkReader(name string) error {
	switch {
	case name == ReaderGoroutine || name == ReaderEpoll && epollAvailable:
		return nil
	case name == ReaderEpoll:
		return errors.New("-reader epoll needs Linux; use -reader goroutine")
	}
	return fmt.Errorf("-reader %q: must be %s or %s", name, ReaderEpoll, ReaderGoroutine)
}

// Defaults of a Config's zero fields.
const (
	defaultRoom        = "bench"
	defaultEvent       = "bench"
	defaultSize        = 64
	defaultConcurrency = 256
)

func (c *Config) setDefaults() {
	if c.Room == "" {
		c.Room = defaultRoom
	}
	if c.Event == "" {
		c.Event = defaultEvent
	}
	if c.Publishers <= 0 {
		c.Publishers = 1
	}
	if c.Size <= 0 {
		c.Size = defaultSize
	}
	if c.ConnectConcurrency <= 0 {
		c.ConnectConcurrency = defaultConcurrency
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = time.Minute
	}
	if c.Settle <= 0 {
		c.Settle = 10 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.PollHold <= 0 {
		c.PollHold = 25 * time.Second
	}
	if c.Reader == "" {
		c.Reader = defaultReader
	}
	if c.H2C {
		c.Reader = ReaderGoroutine // HTTP/2 streams are read through net/http
	}
	if c.Sources <= 0 {
		c.Sources = 1 + (c.Subscribers+c.Polls)/16384
	}
	c.Sources = min(c.Sources, 254)
}

// maxSeenBits bounds the delivery bitmaps: one bit per subscriber and
// message.
const maxSeenBits = 16 << 30

func (c *Config) validate() error {
	switch {
	case len(c.Targets) == 0:
		return errors.New("no target")
	case c.Subscribers < 0 || c.Polls < 0:
		return errors.New("-n and -polls cannot be negative")
	case c.Subscribers+c.Polls == 0:
		return errors.New("no subscriber: set -n or -polls")
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return errors.New("-rate must be a positive number of messages per second")
	case c.Messages < 0:
		return errors.New("-messages cannot be negative")
	case c.Messages == 0 && c.Duration <= 0:
		return errors.New("set -messages or -duration")
	case c.Volatile && c.Polls > 0:
		return errors.New("volatile events are never retained, so pollers cannot receive them: drop -polls or -volatile")
	case c.Size > 1<<20:
		return errors.New("-size is at most 1 MiB")
	}
	if err := checkReader(c.Reader); err != nil {
		return err
	}
	if c.Messages == 0 {
		c.Messages = int(math.Ceil(c.Rate * c.Duration.Seconds()))
	}
	if c.Messages < c.Publishers {
		return fmt.Errorf("%d messages cannot keep %d publishers busy", c.Messages, c.Publishers)
	}
	if float64(c.Subscribers+c.Polls)*float64(c.Messages) > maxSeenBits {
		return fmt.Errorf("%d subscribers × %d messages is too much bookkeeping (at most %d)", c.Subscribers+c.Polls, c.Messages, maxSeenBits)
	}
	return nil
}

// target is a relay under test.
type target struct {
	base     string // http://host:port
	hostport string
	ip       net.IP
}

// parseTarget accepts an http URL of a loopback address: the load
// generator opens thousands of connections and must never aim them at
// another machine.
func parseTarget(s string) (target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return target{}, err
	}
	if u.Scheme != "http" {
		return target{}, fmt.Errorf("target %q: only http:// targets are supported", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return target{}, fmt.Errorf("target %q: give the relay's base URL, without a path", s)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return target{}, fmt.Errorf("target %q: refusing a non-loopback address; the load generator only runs against this machine", s)
	}
	hp := net.JoinHostPort(ip.String(), port)
	return target{base: "http://" + hp, hostport: hp, ip: ip}, nil
}

// Subscriber kinds.
const (
	kindSSE = iota
	kindPoll
	numKinds
)

var kindNames = [numKinds]string{"sse", "poll"}

// run is the state of one benchmark run.
type run struct {
	cfg     Config
	log     io.Writer
	targets []target
	// perPublisher[i] is how many messages publisher i sends; message seq
	// of publisher p is global message seq*Publishers+p.
	perPublisher []int
	accepted     []atomic.Uint64 // bitmap of accepted global messages
	// lastDelivery is, per global message, the latency (µs) of its slowest
	// delivery so far: when the fan-out of that event ended.
	lastDelivery []atomic.Int64
	acceptedN    atomic.Int64
	failedN      atomic.Int64
	unsentN      atomic.Int64 // messages a publisher gave up on, too far behind
	pubErr       atomic.Value // string: the last publish error
	refusedMu    sync.Mutex
	refused      map[refusal]int64 // publishes the relay answered with an error, by answer
	maxLag       atomic.Int64      // ns a publish started after its due time
	pubRTT       *recorder
	eventMarker  []byte // how an envelope of the benchmark event names it

	latency [numKinds][]*recorder // per kind and target

	distinct counterShards // distinct deliveries so far, for settling

	subs []*subscriber
	// readers read the connected SSE streams with the epoll reader; nil
	// with the goroutine reader.
	readers *streamReaders
	// h2 are the HTTP/2 clients of the targets, with H2C.
	h2       []*http.Client
	stopping atomic.Bool
	connsMu  sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// counterShards is a counter many goroutines add to.
type counterShards [recordShards]struct {
	n atomic.Int64
	_ [56]byte // one cache line each
}

func (c *counterShards) add(key int) { c[key%recordShards].n.Add(1) }

func (c *counterShards) load() int64 {
	var n int64
	for i := range c {
		n += c[i].n.Load()
	}
	return n
}

// Run performs one benchmark and reports on it; progress goes to log. The
// error is for a run that could not be carried out (bad configuration, no
// subscriber connected); a run that lost events returns a report saying so.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: log, conns: make(map[net.Conn]struct{}), pubRTT: newRecorder(),
		eventMarker: []byte(`"event":"` + cfg.Event + `"`)}
	for _, s := range cfg.Targets {
		t, err := parseTarget(s)
		if err != nil {
			return nil, err
		}
		r.targets = append(r.targets, t)
		if cfg.H2C {
			r.h2 = append(r.h2, r.h2Client())
		}
	}
	total := cfg.Subscribers + cfg.Polls
	loops := 0
	if cfg.Reader == ReaderEpoll && cfg.Subscribers > 0 && !cfg.H2C {
		loops = min(max(runtime.GOMAXPROCS(0), 1), cfg.Subscribers)
	}
	// Each reader loop holds an epoll and an eventfd descriptor; a stream
	// being handed over to one holds a second descriptor for a moment.
	descriptors := total
	if cfg.H2C {
		// Streams share connections: at least 100 on each (the relay
		// allows 1000 by default).
		descriptors = cfg.Polls + cfg.Subscribers/100 + 1
	}
	limit, err := raiseFileLimit(uint64(descriptors + 2*cfg.Publishers + 256 + 3*loops))
	if err != nil {
		return nil, err
	}
	r.perPublisher = make([]int, cfg.Publishers)
	for p := range r.perPublisher {
		r.perPublisher[p] = (cfg.Messages - p + cfg.Publishers - 1) / cfg.Publishers
	}
	r.accepted = make([]atomic.Uint64, (cfg.Messages+63)/64)
	r.lastDelivery = make([]atomic.Int64, cfg.Messages)
	for k := range r.latency {
		r.latency[k] = make([]*recorder, len(r.targets))
		for t := range r.targets {
			r.latency[k][t] = newRecorder()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	rep := &Report{Label: cfg.Label, Started: time.Now().UTC(), FileLimit: limit}
	rep.setConfig(&cfg, r.targets)
	defer r.stop()
	if loops > 0 {
		if r.readers, err = newStreamReaders(loops); err != nil {
			return nil, err
		}
		r.readers.start(&r.wg)
	}
	servers := newServerWatch(cfg.ServerPIDs)
	servers.sample(&rep.Errors) // before connecting
	for i := range servers.pids {
		rep.Servers[i].RSSBeforeKB = servers.last[i].rssKB
	}

	// Connect.
	fmt.Fprintf(log, "roomcast bench: connecting %d SSE and %d poll subscribers to %d target(s) from %d source address(es)\n",
		cfg.Subscribers, cfg.Polls, len(r.targets), cfg.Sources)
	connectStart := time.Now()
	r.connect(ctx)
	rep.Connect = r.connectReport(time.Since(connectStart))
	fmt.Fprintf(log, "roomcast bench: %d/%d connected in %.2f s\n", rep.Connect.Connected, total, rep.Connect.Seconds)
	if rep.Connect.Connected == 0 {
		return rep, fmt.Errorf("no subscriber connected: %s%s", rep.Connect.FirstError, rep.Connect.remedy())
	}
	if rep.Connect.Failed > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d of %d subscribers did not connect; first: %s%s",
			rep.Connect.Failed, rep.Connect.Subscribers, rep.Connect.FirstError, rep.Connect.remedy()))
	}

	// Idle: memory and CPU with every subscriber connected.
	servers.sample(&rep.Errors)
	idleStart := time.Now()
	if !sleepCtx(ctx, cfg.Warmup) {
		return rep, r.deadline(rep, "during warm-up")
	}
	servers.sample(&rep.Errors)
	idle := time.Since(idleStart)
	for i := range servers.pids {
		s := &rep.Servers[i]
		s.RSSIdleKB = servers.last[i].rssKB
		if idle > 0 {
			s.IdleCPUPerSec = round3((servers.last[i].cpu - servers.prev[i].cpu).Seconds() / idle.Seconds())
		}
	}

	// Publish, and wait for the deliveries.
	fmt.Fprintf(log, "roomcast bench: publishing %d messages at %g/s\n", cfg.Messages, cfg.Rate)
	window := startWindow(servers)
	stopSampler := servers.sampleRSS(100 * time.Millisecond)
	t0 := time.Now()
	var pubs sync.WaitGroup
	lastSend := make([]time.Time, cfg.Publishers)
	for p := range cfg.Publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			lastSend[p] = r.publish(ctx, p, t0)
		}()
	}
	pubs.Wait()
	sendEnd := t0
	for _, t := range lastSend {
		if t.After(sendEnd) {
			sendEnd = t
		}
	}
	complete := r.settle(ctx)
	peaks := stopSampler()
	window.end(servers)
	r.stop()

	rep.fill(r, window, t0, sendEnd, complete, peaks)
	if ctx.Err() != nil {
		rep.DeadlineHit = true
		rep.Errors = append(rep.Errors, "the hard deadline (-timeout) ended the run")
	}
	return rep, nil
}

// deadline records that the run ended early.
func (r *run) deadline(rep *Report, when string) error {
	rep.DeadlineHit = true
	return fmt.Errorf("the hard deadline (-timeout %s) passed %s", r.cfg.Timeout, when)
}

// settle waits until every connected subscriber has every accepted
// message, or Settle passes. It reports whether all arrived.
func (r *run) settle(ctx context.Context) bool {
	ready := 0
	for _, s := range r.subs {
		if s.ready.Load() {
			ready++
		}
	}
	want := r.acceptedN.Load() * int64(ready)
	deadline := time.NewTimer(r.cfg.Settle)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for r.distinct.load() < want {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// connect opens every subscriber, at most ConnectConcurrency at a time,
// and returns when each is ready or has failed; ConnectTimeout bounds the
// whole phase.
func (r *run) connect(ctx context.Context) {
	cfg := &r.cfg
	deadline := time.Now().Add(cfg.ConnectTimeout)
	total := cfg.Subscribers + cfg.Polls
	slots := make(chan struct{}, cfg.ConnectConcurrency)
	var settled sync.WaitGroup
	expired := time.NewTimer(cfg.ConnectTimeout)
	defer expired.Stop()
	for i := range total {
		kind := kindSSE
		if i >= cfg.Subscribers {
			kind = kindPoll
		}
		s := r.newSubscriber(ctx, i, kind)
		r.subs = append(r.subs, s)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			s.fail(ctx.Err())
			continue
		case <-expired.C:
			expired.Reset(0)
			s.fail(errors.New("the connect phase timed out (-connect-timeout)"))
			continue
		}
		settled.Add(1)
		var once sync.Once
		s.onReady = func(err error) {
			once.Do(func() {
				if err != nil {
					s.fail(err)
				} else {
					s.ready.Store(true)
				}
				<-slots
				settled.Done()
			})
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer s.onReady(errors.New("the subscriber stopped before it was ready"))
			switch {
			case kind == kindSSE && r.cfg.H2C:
				s.streamH2(deadline)
			case kind == kindSSE:
				s.stream(deadline)
			default:
				s.poll(deadline)
			}
		}()
	}
	// Dials, reads and first polls all end by the deadline by themselves.
	settled.Wait()
}

// track registers a connection for stop to close; it refuses (and closes)
// one opened after stop began.
func (r *run) track(c net.Conn) bool {
	r.connsMu.Lock()
	defer r.connsMu.Unlock()
	if r.stopping.Load() {
		_ = c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

// untrack forgets a connection that stop no longer has to close.
func (r *run) untrack(c net.Conn) {
	r.connsMu.Lock()
	defer r.connsMu.Unlock()
	delete(r.conns, c)
}

// stop ends every subscriber and waits for their goroutines and the
// reader loops. Streams are reset rather than closed, so that repeated
// runs leave no TIME_WAIT sockets holding the source ports.
func (r *run) stop() {
	r.connsMu.Lock()
	first := !r.stopping.Swap(true)
	conns := r.conns
	r.conns = nil
	r.connsMu.Unlock()
	if first {
		for c := range conns {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
		if r.readers != nil {
			r.readers.stop()
		}
		for _, s := range r.subs {
			s.cancel()
		}
	}
	r.wg.Wait()
}

// h2Client is an HTTP/2 client without TLS whose connections stop
// closes. The transport opens another connection whenever those it has
// carry as many streams as the relay allows on one.
func (r *run) h2Client() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	var dials atomic.Int64
	tr := &http.Transport{
		Protocols: &protocols,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			t, err := parseTarget("http://" + addr)
			if err != nil {
				return nil, err
			}
			d := net.Dialer{LocalAddr: r.source(int(dials.Add(1)), t)}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if !r.track(conn) {
				return nil, errors.New("the run stopped")
			}
			return conn, nil
		},
	}
	return &http.Client{Transport: tr}
}

// source returns the local address subscriber i connects from.
func (r *run) source(i int, t target) *net.TCPAddr {
	ip4 := t.ip.To4()
	if ip4 == nil || r.cfg.Sources <= 1 {
		return nil
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%r.cfg.Sources))}
}

// markAccepted records that global message g was accepted.
func (r *run) markAccepted(g int) {
	r.accepted[g>>6].Or(1 << (g & 63))
	r.acceptedN.Add(1)
}

// noteDelivery raises message g's slowest delivery to lat (µs).
func (r *run) noteDelivery(g int, lat int64) {
	last := &r.lastDelivery[g]
	for {
		cur := last.Load()
		if lat <= cur || last.CompareAndSwap(cur, lat) {
			return
		}
	}
}

// acceptedBits returns the accepted bitmap.
func (r *run) acceptedBits() []uint64 {
	out := make([]uint64, len(r.accepted))
	for i := range r.accepted {
		out[i] = r.accepted[i].Load()
	}
	return out
}

func popcount(words []uint64) int64 {
	var n int
	for _, w := range words {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
