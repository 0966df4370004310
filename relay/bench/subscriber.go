package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// subscriber is one SSE stream or one long-poller. Everything but the
// atomics is written by its own goroutine only, and read by the run once
// that goroutine has ended.
type subscriber struct {
	r      *run
	index  int
	kind   int
	target int
	ctx    context.Context
	cancel context.CancelFunc

	onReady func(error) // set by connect; idempotent
	ready   atomic.Bool
	failed  atomic.Bool
	err     error // why it failed or ended early

	connectTime time.Duration

	now      int64    // Unix ns of the read being decoded
	seen     []uint64 // bitmap of global messages received
	lastSeq  []int    // per publisher: highest seq received, -1 for none
	received int64    // deliveries of the benchmark event, duplicates included
	distinct int64
	dups     int64
	reorder  int64
	invalid  int64 // benchmark events whose payload could not be read
	lastRecv int64 // Unix ns of the last delivery
	closing  string
	ended    bool // the stream ended while the run still wanted it
	polls    int64
	resets   int64
}

func (r *run) newSubscriber(ctx context.Context, i, kind int) *subscriber {
	s := &subscriber{r: r, index: i, kind: kind, target: i % len(r.targets)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.seen = make([]uint64, (r.cfg.Messages+63)/64)
	s.lastSeq = make([]int, r.cfg.Publishers)
	for p := range s.lastSeq {
		s.lastSeq[p] = -1
	}
	return s
}

// fail marks the subscriber as not taking part in the measurement.
func (s *subscriber) fail(err error) {
	if s.failed.Swap(true) {
		return
	}
	if s.err == nil {
		s.err = err
	}
	s.cancel()
}

// deliver accounts for one benchmark event received at s.now.
func (s *subscriber) deliver(env []byte) {
	if s.failed.Load() {
		return
	}
	pub, seq, sent, ok := parseEnvelope(env)
	if !ok || pub >= len(s.lastSeq) || seq >= s.r.perPublisher[pub] {
		s.invalid++
		return
	}
	s.received++
	s.lastRecv = s.now
	g := seq*len(s.lastSeq) + pub
	w, bit := g>>6, uint64(1)<<(g&63)
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	s.distinct++
	s.r.distinct.add(s.index)
	if seq < s.lastSeq[pub] {
		s.reorder++
	} else {
		s.lastSeq[pub] = seq
	}
	s.r.latency[s.kind][s.target].record(s.index, (s.now-sent)/1e3)
}

// streamRequest is the request line and headers of a subscriber's stream.
func (s *subscriber) streamRequest(t target) []byte {
	var b strings.Builder
	b.WriteString("GET /v1/rooms/")
	b.WriteString(url.PathEscape(s.r.cfg.Room))
	b.WriteString("/events HTTP/1.1\r\nHost: ")
	b.WriteString(t.hostport)
	b.WriteString("\r\nAccept: text/event-stream\r\nUser-Agent: roomcast-bench\r\n")
	if tok := s.r.cfg.SubscriberToken; tok != "" {
		b.WriteString("Authorization: Bearer " + tok + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// readBufferSize is the read buffer of each stream the goroutine reader
// reads: large enough for a saturated stream's batches with few reads,
// small enough that tens of thousands of streams fit in memory.
func readBufferSize(conns int) int {
	return min(max(64<<20/max(conns, 1), 4<<10), 32<<10)
}

// connectBufferSize is the read buffer of a stream that an epoll reader
// takes over once it is connected: it only reads the response head and
// the roomcast:connected event.
const connectBufferSize = 4 << 10

// stream reads an SSE subscription until the run stops it. It connects
// and reads up to roomcast:connected itself; then, with an epoll reader,
// it hands the socket and the decoder over to a reader loop and returns,
// else it reads on until the stream ends.
func (s *subscriber) stream(deadline time.Time) {
	t := s.r.targets[s.target]
	start := time.Now()
	d := net.Dialer{Deadline: deadline, LocalAddr: s.r.source(s.index, t)}
	conn, err := d.DialContext(s.ctx, "tcp", t.hostport)
	if err != nil {
		s.onReady(fmt.Errorf("connect: %w", err))
		return
	}
	if !s.r.track(conn) {
		s.onReady(errors.New("the run stopped"))
		return
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write(s.streamRequest(t)); err != nil {
		s.onReady(fmt.Errorf("send request: %w", err))
		return
	}
	connected := false
	dec := newStreamDecoder(func(f *frame) {
		switch {
		case string(f.event) == s.r.cfg.Event:
			s.deliver(f.data)
		case string(f.event) == "roomcast:connected":
			if !connected {
				connected = true
				s.connectTime = time.Since(start)
				_ = conn.SetDeadline(time.Time{})
				s.onReady(nil)
			}
		case string(f.event) == "roomcast:closing" || string(f.event) == "roomcast:error":
			s.closing = string(f.event) + " " + string(f.data)
		}
	})
	readers := s.r.readers
	size := readBufferSize(s.r.cfg.Subscribers)
	if readers != nil {
		size = min(size, connectBufferSize)
	}
	buf := make([]byte, size)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			s.now = time.Now().UnixNano()
			if ferr := dec.Feed(buf[:n]); ferr != nil {
				s.end(connected, ferr)
				return
			}
		}
		if err != nil {
			s.end(connected, readEnd(dec, err))
			return
		}
		if connected && readers != nil {
			// The decoder holds whatever this read returned past the
			// connected event.
			if err := readers.add(s, conn, dec); err != nil {
				s.end(connected, err)
			}
			return
		}
	}
}

// readEnd is why a stream whose read failed with err ended.
func readEnd(dec *streamDecoder, err error) error {
	if err == io.EOF || dec.ended() {
		return errors.New("the relay ended the stream")
	}
	return err
}

// end records why a stream stopped, unless the run stopped it.
func (s *subscriber) end(connected bool, err error) {
	if !connected {
		s.onReady(err)
		return
	}
	if s.r.stopping.Load() {
		return
	}
	s.ended = true
	if s.closing != "" {
		err = fmt.Errorf("%w (%s)", err, s.closing)
	}
	s.err = err
}

// pollAnswer is what a poll returns.
type pollAnswer struct {
	Events []json.RawMessage `json:"events"`
	Cursor string            `json:"cursor"`
	Reset  bool              `json:"reset"`
}

// poll long-polls until the run stops it: first without a cursor for a
// starting point (then it is ready), then from each answer's cursor.
func (s *subscriber) poll(deadline time.Time) {
	t := s.r.targets[s.target]
	tr := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: s.r.source(s.index, t)}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	base := t.base + "/v1/rooms/" + url.PathEscape(s.r.cfg.Room) + "/poll?client=bench-poll-" + itoa(s.index) + "&timeout="
	hold := fmt.Sprintf("%.3f", s.r.cfg.PollHold.Seconds())

	start := time.Now()
	first, cancel := context.WithDeadline(s.ctx, deadline)
	ans, err := s.get(first, client, base+"0")
	cancel()
	if err != nil {
		s.onReady(err)
		return
	}
	s.connectTime = time.Since(start)
	cursor := ans.Cursor
	s.onReady(nil)
	for s.ctx.Err() == nil {
		ans, err := s.get(s.ctx, client, base+hold+"&cursor="+url.QueryEscape(cursor))
		if err != nil {
			if s.ctx.Err() == nil && !s.r.stopping.Load() {
				s.ended, s.err = true, err
			}
			return
		}
		s.now = time.Now().UnixNano()
		s.polls++
		if ans.Reset {
			s.resets++
		}
		for _, ev := range ans.Events {
			if bytes.Contains(ev, s.r.eventMarker) {
				s.deliver(ev)
			}
		}
		cursor = ans.Cursor
	}
}

// get performs one poll.
func (s *subscriber) get(ctx context.Context, client *http.Client, u string) (*pollAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "roomcast-bench")
	if tok := s.r.cfg.SubscriberToken; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("poll refused: %s: %s", resp.Status, strings.TrimSpace(string(body[:min(len(body), 300)])))
	}
	var ans pollAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("poll answer: %w", err)
	}
	return &ans, nil
}
