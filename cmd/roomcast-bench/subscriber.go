package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
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
	lat := (s.now - sent) / 1e3
	s.r.latency[s.kind][s.target].record(s.index, lat)
	s.r.noteDelivery(g, lat)
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
	dec := s.decoder(newStreamDecoder, func() {
		connected = true
		s.connectTime = time.Since(start)
		_ = conn.SetDeadline(time.Time{})
		s.onReady(nil)
	})
	readers := s.r.readers
	size := readBufferSize(s.r.cfg.Subscribers)
	if readers != nil {
		size = min(size, connectBufferSize)
	}
	buf := make([]byte, size)
	for {
		if !s.readOnce(conn, buf, dec, &connected) {
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

// decoder decodes a stream's events (with a decoder newDecoder makes),
// calling connected once at its first
// roomcast:connected.
func (s *subscriber) decoder(newDecoder func(func(*frame)) *streamDecoder, connected func()) *streamDecoder {
	seen := false
	return newDecoder(func(f *frame) {
		switch {
		case string(f.event) == s.r.cfg.Event:
			s.deliver(f.data)
		case string(f.event) == "roomcast:connected":
			if !seen {
				seen = true
				connected()
			}
		case string(f.event) == "roomcast:closing" || string(f.event) == "roomcast:error":
			s.closing = string(f.event) + " " + string(f.data)
		}
	})
}

// streamH2 reads an SSE subscription over HTTP/2 (Config.H2C) until the
// run stops it.
func (s *subscriber) streamH2(deadline time.Time) {
	t := s.r.targets[s.target]
	start := time.Now()
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, t.base+"/v1/rooms/"+url.PathEscape(s.r.cfg.Room)+"/events", nil)
	if err != nil {
		s.onReady(err)
		return
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", "roomcast-bench")
	if tok := s.r.cfg.SubscriberToken; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	// The connect phase ends by the deadline: a stream not connected by
	// then is cancelled, which ends its request.
	connected := false
	late := time.AfterFunc(time.Until(deadline), s.cancel)
	defer late.Stop()
	resp, err := s.r.h2[s.target].Do(req)
	if err != nil {
		s.onReady(fmt.Errorf("connect over HTTP/2 without TLS (does the relay have ROOMCAST_H2C=true?): %w", err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		s.onReady(fmt.Errorf("stream refused: %s: %s", resp.Status, strings.TrimSpace(string(body))))
		return
	}
	if resp.ProtoMajor != 2 {
		s.onReady(fmt.Errorf("the relay answered over %s, not HTTP/2: is ROOMCAST_H2C set?", resp.Proto))
		return
	}
	dec := s.decoder(newBodyDecoder, func() {
		if late.Stop() {
			connected = true
			s.connectTime = time.Since(start)
			s.onReady(nil)
		}
	})
	buf := make([]byte, readBufferSize(s.r.cfg.Subscribers))
	for s.readOnce(resp.Body, buf, dec, &connected) {
	}
}

// readOnce reads r once and decodes what came, timed as it returned. It
// reports false, having recorded why, when the stream ended; connected is
// read after decoding, which may have set it.
func (s *subscriber) readOnce(r io.Reader, buf []byte, dec *streamDecoder, connected *bool) bool {
	n, err := r.Read(buf)
	if n > 0 {
		s.now = time.Now().UnixNano()
		if ferr := dec.Feed(buf[:n]); ferr != nil {
			s.end(*connected, ferr)
			return false
		}
	}
	if err != nil {
		s.end(*connected, readEnd(dec, err))
		return false
	}
	return true
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
	// Connection is the proof of the client id the first poll was given:
	// the next polls send it to keep the id (and the relay's place).
	Connection string `json:"connection"`
}

// poll long-polls until the run stops it: first without a cursor for a
// starting point (then it is ready), then from each answer's cursor. Like
// the streams it speaks HTTP/1.1 itself over one kept-alive connection
// (redialled if the relay closes it): a full HTTP client per poller cost
// the load generator four times the relay's CPU per poll and made it the
// bottleneck of the measurement.
func (s *subscriber) poll(deadline time.Time) {
	p := &poller{s: s, t: s.r.targets[s.target]}
	defer p.close()
	path := "/v1/rooms/" + url.PathEscape(s.r.cfg.Room) + "/poll?timeout="
	hold := fmt.Sprintf("%.3f", s.r.cfg.PollHold.Seconds())

	start := time.Now()
	ans, err := p.get(deadline, path+"0")
	if err != nil {
		s.onReady(err)
		return
	}
	// The relay named the poller; its proof keeps that id.
	path += hold + "&proof=" + url.QueryEscape(ans.Connection) + "&cursor="
	s.connectTime = time.Since(start)
	cursor := ans.Cursor
	s.onReady(nil)
	for s.ctx.Err() == nil {
		ans, err := p.get(time.Time{}, path+url.QueryEscape(cursor))
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

// poller is one long-poller's connection.
type poller struct {
	s    *subscriber
	t    target
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
	ans  pollAnswer
}

func (p *poller) close() {
	if p.conn != nil {
		p.s.r.untrack(p.conn)
		_ = p.conn.Close()
		p.conn = nil
	}
}

// get sends one poll and reads its answer; deadline bounds it when set.
// A connection the relay closed after its previous answer is redialled
// once.
func (p *poller) get(deadline time.Time, pathQuery string) (*pollAnswer, error) {
	for attempt := 0; ; attempt++ {
		reused := p.conn != nil
		if !reused {
			d := net.Dialer{Deadline: deadline, LocalAddr: p.s.r.source(p.s.index, p.t)}
			conn, err := d.DialContext(p.s.ctx, "tcp", p.t.hostport)
			if err != nil {
				return nil, fmt.Errorf("connect: %w", err)
			}
			if !p.s.r.track(conn) {
				return nil, errors.New("the run stopped")
			}
			p.conn = conn
			if p.br == nil {
				p.br = bufio.NewReaderSize(conn, 4<<10)
			} else {
				p.br.Reset(conn)
			}
		}
		_ = p.conn.SetDeadline(deadline)
		ans, answered, err := p.roundTrip(pathQuery)
		if err == nil {
			return ans, nil
		}
		p.close()
		// A kept-alive connection may have been closed by the relay
		// before this request reached it: try once on a new one.
		if reused && !answered && attempt == 0 && p.s.ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

// roundTrip writes the request and reads the answer. answered reports that
// the answer's status line arrived, after which the poll is not repeated.
func (p *poller) roundTrip(pathQuery string) (ans *pollAnswer, answered bool, err error) {
	p.req = append(p.req[:0], "GET "...)
	p.req = append(p.req, pathQuery...)
	p.req = append(p.req, " HTTP/1.1\r\nHost: "...)
	p.req = append(p.req, p.t.hostport...)
	p.req = append(p.req, "\r\nUser-Agent: roomcast-bench\r\n"...)
	if tok := p.s.r.cfg.SubscriberToken; tok != "" {
		p.req = append(p.req, "Authorization: Bearer "...)
		p.req = append(p.req, tok...)
		p.req = append(p.req, "\r\n"...)
	}
	p.req = append(p.req, "\r\n"...)
	if _, err := p.conn.Write(p.req); err != nil {
		return nil, false, fmt.Errorf("send poll: %w", err)
	}
	status, length, closing, err := readHead(p.br)
	if err != nil {
		return nil, status != 0, fmt.Errorf("poll answer: %w", err)
	}
	switch {
	case length > 64<<20:
		return nil, true, fmt.Errorf("poll answer: status %d with a body of %d bytes", status, length)
	case length < 0 && !closing:
		return nil, true, fmt.Errorf("poll answer: status %d without a Content-Length", status)
	case length < 0:
		// A body that ends with the connection (net/http's own plain
		// 400 and 431, say).
		p.body, err = io.ReadAll(io.LimitReader(p.br, 64<<10))
		if err != nil {
			return nil, true, fmt.Errorf("poll answer: %w", err)
		}
	default:
		if cap(p.body) < length {
			p.body = make([]byte, length)
		}
		p.body = p.body[:length]
		if _, err := io.ReadFull(p.br, p.body); err != nil {
			return nil, true, fmt.Errorf("poll answer: %w", err)
		}
	}
	if closing {
		p.close()
	}
	if status != http.StatusOK {
		return nil, true, fmt.Errorf("poll refused: %d: %s", status, strings.TrimSpace(string(p.body[:min(len(p.body), 300)])))
	}
	p.ans = pollAnswer{Events: p.ans.Events[:0]}
	if err := json.Unmarshal(p.body, &p.ans); err != nil {
		return nil, true, fmt.Errorf("poll answer: %w", err)
	}
	return &p.ans, true, nil
}

// readHead reads a response head: its status, Content-Length (-1 when
// absent) and whether the server closes the connection after the body.
func readHead(br *bufio.Reader) (status, length int, closing bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, -1, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 13 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
		line[12] != ' ' && line[12] != '\r' && line[12] != '\n' {
		return 0, -1, false, fmt.Errorf("malformed status line %q", line)
	}
	// HTTP/1.0 closes unless it says otherwise.
	closing = line[7] == '0'
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, -1, false, fmt.Errorf("malformed status line %q", line)
		}
		status = status*10 + int(c-'0')
	}
	length = -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return status, -1, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return status, length, closing, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, -1, false, fmt.Errorf("malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 {
				return status, -1, false, fmt.Errorf("malformed Content-Length %q", value)
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return status, -1, false, fmt.Errorf("transfer encoding %q is not read by the load generator", value)
		case bytes.EqualFold(name, []byte("Connection")):
			for opt := range bytes.SplitSeq(value, []byte(",")) {
				switch opt = bytes.TrimSpace(opt); {
				case bytes.EqualFold(opt, []byte("close")):
					closing = true
				case bytes.EqualFold(opt, []byte("keep-alive")):
					closing = false
				}
			}
		}
	}
}
