package relay

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/sse"
	"github.com/roomcast/roomcast/rooms"
)

// frameWriter is a stream's way out: it writes and flushes one batch of
// frames. It is the seam where a hijacked connection written by a shared
// writer can replace http.ResponseWriter.
type frameWriter interface {
	WriteFrames(p []byte) error
}

// responseFrames writes to an http.ResponseWriter, each write under its own
// deadline, so a client that stops reading is dropped in bounded time
// without a server-wide WriteTimeout that would end every stream.
type responseFrames struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (f *responseFrames) WriteFrames(p []byte) error {
	return f.underDeadline(func() error {
		_, err := f.w.Write(p)
		return err
	})
}

// underDeadline runs write, then flushes, with the write deadline set for
// their duration only.
func (f *responseFrames) underDeadline(write func() error) error {
	if err := f.rc.SetWriteDeadline(time.Now().Add(f.timeout)); err != nil && err != http.ErrNotSupported {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	if err := f.rc.Flush(); err != nil {
		return err
	}
	// An HTTP/2 stream's deadline is a timer that resets the stream when
	// it fires, written to or not: an idle stream would die one timeout
	// after its last write.
	if err := f.rc.SetWriteDeadline(time.Time{}); err != nil && err != http.ErrNotSupported {
		return err
	}
	return nil
}

func (s *Server) streamRoom(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.serveStream(w, r, rooms.ConnectRequest{Channels: []string{room.String()}}, false)
}

func (s *Server) streamMulti(w http.ResponseWriter, r *http.Request) {
	channels, err := queryRooms(r.URL.Query()["room"])
	if err != nil {
		writeError(w, err)
		return
	}
	s.serveStream(w, r, rooms.ConnectRequest{Channels: channels, Multi: true}, false)
}

// streamUser is the stream of everything addressed to the caller.
func (s *Server) streamUser(w http.ResponseWriter, r *http.Request) {
	s.serveStream(w, r, rooms.ConnectRequest{}, true)
}

// connectedData is the data of roomcast:connected.
type connectedData struct {
	Connection string `json:"connection"`
	Client     string `json:"client"`
	// Proof proves Client: sent as ?proof=, it lets an anonymous client
	// use its id again on its next stream or poll.
	Proof string   `json:"proof"`
	Rooms []string `json:"rooms"`
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, req rooms.ConnectRequest, userStream bool) {
	if r.Method == http.MethodHead {
		// A HEAD asks what a stream would be, not for one.
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache, no-transform")
		w.WriteHeader(http.StatusOK)
		return
	}
	q := r.URL.Query()
	padding := 0
	if v := q.Get("padding"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, errorf(codeInvalidParameter, "padding must be a number of bytes"))
			return
		}
		padding = min(n, s.opts.MaxPadding)
	}
	if c := q.Get("client"); validClientID(c) {
		req.Client = c
	}
	req.Proof = q.Get("proof")
	req.Resume = r.Header.Get("Last-Event-ID")
	if req.Resume == "" {
		req.Resume = q.Get("lastEventId")
	}
	if s.draining.Load() {
		writeError(w, rooms.ErrDraining)
		return
	}
	id, err := s.identify(r, auth.Subscribing)
	if err != nil {
		writeError(w, err)
		return
	}
	req.Identity = id
	req.Caller = s.rateKey(r, id)
	if userStream {
		if id.User == "" {
			writeError(w, fmt.Errorf("%w: the user stream needs a user's token", rooms.ErrUnauthenticated))
			return
		}
		req.Channels = []string{rooms.UserChannel(id.User)}
	}
	slots, err := s.acquireConnection(r, id)
	if err != nil {
		writeError(w, err)
		return
	}
	// What the stream holds is released once it ends: by this handler,
	// or by the streamer when the connection is handed over to it.
	var held []func()
	end := func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i]()
		}
	}
	handedOver := false
	defer func() {
		if !handedOver {
			end()
		}
	}()
	held = append(held, slots.release)
	s.streams.Add(1)
	held = append(held, s.streams.Done)

	select {
	case s.admission <- struct{}{}:
	default:
		w.Header().Set("Retry-After", strconv.Itoa(int(s.retryDelay().Seconds())+1))
		writeCode(w, codeOverloaded, "too many streams are being opened at once; retry after the Retry-After delay")
		return
	}
	conn, err := s.hub.Connect(r.Context(), req)
	<-s.admission
	if err != nil {
		writeError(w, err)
		return
	}
	held = append(held, func() { s.hub.Disconnect(conn) })
	noteConnection(r.Context(), conn.ID)
	if m := s.opts.Metrics; m != nil {
		m.SSEConnections.Inc()
		held = append(held, m.SSEConnections.Dec)
	}

	if d := s.opts.MaxStreamLifetime; d > 0 {
		life := d - rand.N(d/10+1)
		t := time.AfterFunc(life, func() {
			conn.Close(rooms.CloseReason{Code: rooms.CloseMaxLifetime,
				Message:     "the stream reached its maximum lifetime; resume from the last cursor",
				ReconnectMS: int(s.retryDelay().Milliseconds())})
		})
		held = append(held, func() { t.Stop() })
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")

	hello, _ := json.Marshal(connectedData{Connection: conn.ID, Client: conn.Client, Proof: conn.Proof, Rooms: displayNames(conn.Rooms())})
	first := sse.AppendRetry(make([]byte, 0, 512+padding), s.retryDelay().Milliseconds())
	first = sse.AppendPadding(first, padding)
	first = sse.AppendEvent(first, "", "roomcast:connected", hello)
	// A bare id field sets the client's Last-Event-ID without dispatching
	// an event, so that a client dropped before its first event still
	// resumes from here instead of missing what was published meanwhile.
	first = sse.AppendID(first, conn.CursorText())
	if s.hijackable(r) {
		if nc, ok := s.hijack(w, first); ok {
			handedOver = true
			logEnd := handOver(r.Context())
			h := &hstream{conn: conn, nc: nc, slots: slots, written: int64(len(first))}
			h.end = func() {
				end()
				logEnd(h.written)
			}
			s.streamer().add(h)
			return
		}
	}

	raw := &responseFrames{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
	var out frameWriter = raw
	if s.opts.Compress == CompressAll && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		gz := &gzipFrames{gz: gzipPool.Get().(*gzip.Writer), out: raw}
		gz.gz.Reset(w)
		defer func() {
			gz.Close()
			gz.gz.Reset(nil)
			gzipPool.Put(gz.gz)
		}()
		out = gz
	}
	w.WriteHeader(http.StatusOK)

	if err := out.WriteFrames(first); err != nil {
		return
	}
	s.pump(r, conn, out, slots)
}

// pump writes the connection's deliveries until the client goes away or the
// server ends the connection. Everything waiting is written with one write.
// An idle stream holds no frame buffer: each write takes one from the pool.
func (s *Server) pump(r *http.Request, conn *rooms.Connection, out frameWriter, slots *connSlots) {
	heartbeat := time.NewTicker(s.opts.Heartbeat)
	defer heartbeat.Stop()
	expiry := newTokenClock(conn.Identity().Expires)
	defer expiry.stop()
	var batch []rooms.Delivery
	for {
		select {
		case <-r.Context().Done():
			return
		case <-conn.Done():
			bp := frameBufs.Get().(*[]byte)
			s.writeClose(conn, out, (*bp)[:0])
			frameBufs.Put(bp)
			return
		case <-heartbeat.C:
			if err := out.WriteFrames(pingFrame); err != nil {
				return
			}
			s.touch(r.Context(), conn)
			slots.renew(r.Context())
		case <-conn.Ready():
			batch = conn.Take(batch[:0])
			bp := frameBufs.Get().(*[]byte)
			buf := s.appendDeliveries((*bp)[:0], conn, batch)
			clear(batch)
			var err error
			if len(buf) > 0 {
				err = out.WriteFrames(buf)
			}
			*bp = buf[:0]
			frameBufs.Put(bp)
			if err != nil {
				return
			}
			if len(buf) == 0 {
				continue
			}
			heartbeat.Reset(s.opts.Heartbeat)
			// A busy stream never sees an idle heartbeat, yet its
			// session, registration and slots must stay alive.
			s.touch(r.Context(), conn)
			slots.renew(r.Context())
		case <-expiry.warn:
			exp := conn.Identity().Expires
			data, _ := json.Marshal(map[string]any{"expires_at": exp.UnixMilli(), "connection": conn.ID})
			if err := out.WriteFrames(sse.AppendEvent(nil, "", "roomcast:token-expiring", data)); err != nil {
				return
			}
		case <-expiry.end:
			conn.Close(rooms.CloseReason{Code: rooms.CloseTokenExpired,
				Message:     "the token expired; reconnect with a fresh one to resume",
				ReconnectMS: int(s.retryDelay().Milliseconds())})
		case <-conn.IdentityChanged():
			expiry.stop()
			expiry = newTokenClock(conn.Identity().Expires)
		}
	}
}

// pingFrame is the heartbeat comment; writers copy it, never change it.
var pingFrame = sse.AppendComment(nil, "ping")

// touch keeps the connection's registration and session alive; it writes
// to the backbone only when they are due.
func (s *Server) touch(ctx context.Context, conn *rooms.Connection) {
	if err := s.hub.Touch(ctx, conn); err != nil {
		s.log.Warn("session refresh failed", "connection", conn.ID, "err", err)
	}
}

// tokenWarning is how long before its token expires a stream is told to
// refresh it.
const tokenWarning = 30 * time.Second

// tokenClock fires warn tokenWarning before expires (at once when that has
// passed) and end at expires; neither fires for a token without expiry.
type tokenClock struct {
	warn, end <-chan time.Time
	timers    []*time.Timer
}

func newTokenClock(expires time.Time) *tokenClock {
	c := &tokenClock{}
	if expires.IsZero() {
		return c
	}
	w := time.NewTimer(max(time.Until(expires)-tokenWarning, 0))
	e := time.NewTimer(max(time.Until(expires), 0))
	c.warn, c.end, c.timers = w.C, e.C, []*time.Timer{w, e}
	return c
}

func (c *tokenClock) stop() {
	for _, t := range c.timers {
		t.Stop()
	}
}

// resetData is the data of roomcast:reset.
type resetData struct {
	Reason string `json:"reason"`
	Room   string `json:"room,omitempty"`
}

// roomData is the data of roomcast:joined and roomcast:left.
type roomData struct {
	Room   string `json:"room"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) appendDeliveries(buf []byte, conn *rooms.Connection, batch []rooms.Delivery) []byte {
	for i := range batch {
		d := &batch[i]
		switch d.Kind {
		case rooms.KindEvent:
			ev := d.Event
			if !ev.Volatile {
				buf = append(buf, "id: "...)
				buf = conn.AppendCursor(buf, d)
				buf = append(buf, '\n')
			}
			buf = sse.AppendEventData(buf, ev.Event, ev.Envelope(d.Index))
		case rooms.KindReset:
			data, _ := json.Marshal(resetData{Reason: d.Reason, Room: rooms.DisplayName(d.Channel)})
			conn.Advance(d)
			buf = sse.AppendEvent(buf, conn.CursorText(), "roomcast:reset", data)
		case rooms.KindJoined, rooms.KindLeft:
			conn.Advance(d)
			name := "roomcast:joined"
			if d.Kind == rooms.KindLeft {
				name = "roomcast:left"
			}
			data, _ := json.Marshal(roomData{Room: rooms.DisplayName(d.Channel), Reason: d.Reason})
			buf = sse.AppendEvent(buf, conn.CursorText(), name, data)
		default:
			conn.Advance(d)
		}
	}
	return buf
}

// closeData is the data of roomcast:closing and roomcast:error.
type closeData struct {
	Reason      string `json:"reason,omitempty"`
	Code        string `json:"code,omitempty"`
	Message     string `json:"message"`
	ReconnectMS *int   `json:"reconnect_ms,omitempty"`
}

// writeClose tells the client why the server ends its stream, as far as
// the client still reads.
func (s *Server) writeClose(conn *rooms.Connection, out frameWriter, buf []byte) {
	_ = out.WriteFrames(s.closeFrame(conn, buf))
}

// closeFrame appends to buf the event that tells the client why the server
// ended its stream.
func (s *Server) closeFrame(conn *rooms.Connection, buf []byte) []byte {
	reason := conn.Reason()
	d := closeData{Message: reason.Message}
	name := "roomcast:closing"
	if reason.Error {
		name, d.Code = "roomcast:error", reason.Code
	} else {
		d.Reason = reason.Code
		ms := reason.ReconnectMS
		d.ReconnectMS = &ms
	}
	data, _ := json.Marshal(d)
	return sse.AppendEvent(buf, "", name, data)
}

func displayNames(channels []string) []string {
	out := make([]string, len(channels))
	for i, ch := range channels {
		out[i] = rooms.DisplayName(ch)
	}
	return out
}
