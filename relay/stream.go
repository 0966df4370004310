package relay

import (
	"context"
	"encoding/json"
	"fmt"
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

// serveStream opens a stream: it reads the request, takes the caller's
// slot and an admission place, connects to the hub and hands the stream to
// a writer, the streamer when the connection can be hijacked, else pump.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, req rooms.ConnectRequest, userStream bool) {
	if r.Method == http.MethodHead {
		// A HEAD asks what a stream would be, not for one.
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache, no-transform")
		w.WriteHeader(http.StatusOK)
		return
	}
	padding, err := s.streamRequest(r, &req, userStream)
	if err != nil {
		writeError(w, err)
		return
	}
	slots, err := s.acquireConnection(r, req.Identity)
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

	// The stream's lifetime counts from here, for either writer.
	policy := s.newStreamPolicy(conn, time.Now())

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")

	first := s.openingFrames(conn, padding)
	if s.hijackable(r) {
		if nc, ok := s.hijack(w, first); ok {
			handedOver = true
			logEnd := handOver(r.Context())
			h := &hstream{conn: conn, nc: nc, slots: slots, policy: policy, written: int64(len(first))}
			h.end = func() {
				end()
				logEnd(h.written)
			}
			s.streamer().add(h)
			return
		}
	}
	s.serveResponse(w, r, conn, slots, policy, first)
}

// streamRequest completes req from the query, Last-Event-ID and the
// caller's credentials, and says how much padding the stream starts with.
func (s *Server) streamRequest(r *http.Request, req *rooms.ConnectRequest, userStream bool) (padding int, err error) {
	q := r.URL.Query()
	if v := q.Get("padding"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, errorf(codeInvalidParameter, "padding must be a number of bytes")
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
		return 0, rooms.ErrDraining
	}
	id, err := s.identify(r, auth.Subscribing)
	if err != nil {
		return 0, err
	}
	req.Identity = id
	req.Caller = s.rateKey(r, id)
	if userStream {
		if id.User == "" {
			return 0, fmt.Errorf("%w: the user stream needs a user's token", rooms.ErrUnauthenticated)
		}
		req.Channels = []string{rooms.UserChannel(id.User)}
	}
	return padding, nil
}

// openingFrames is what every stream starts with: the retry delay, any
// padding, roomcast:connected and the stream's first cursor.
func (s *Server) openingFrames(conn *rooms.Connection, padding int) []byte {
	hello, _ := json.Marshal(connectedData{Connection: conn.ID, Client: conn.Client, Proof: conn.Proof, Rooms: displayNames(conn.Rooms())})
	first := sse.AppendRetry(make([]byte, 0, 512+padding), s.retryDelay().Milliseconds())
	first = sse.AppendPadding(first, padding)
	first = sse.AppendEvent(first, "", "roomcast:connected", hello)
	// A bare id field sets the client's Last-Event-ID without dispatching
	// an event, so that a client dropped before its first event still
	// resumes from here instead of missing what was published meanwhile.
	return sse.AppendID(first, string(conn.AppendCursor(nil)))
}

// serveResponse writes a stream through net/http, the writer of a
// connection that cannot be hijacked (HTTP/2, h2c, a wrapped writer); the
// headers are set, first is the opening.
func (s *Server) serveResponse(w http.ResponseWriter, r *http.Request, conn *rooms.Connection, slots *connSlots, policy *streamPolicy, first []byte) {
	h := w.Header()
	raw := &responseFrames{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
	var out frameWriter = raw
	if s.opts.Compress == CompressAll && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		gz := newGzipFrames(raw)
		defer gz.Close()
		out = gz
	}
	w.WriteHeader(http.StatusOK)

	if err := out.WriteFrames(first); err != nil {
		return
	}
	s.pump(r.Context(), conn, out, slots, policy)
}

// pump writes the connection's deliveries until the client goes away or the
// server ends the connection. Everything waiting is written with one write.
// An idle stream holds no frame buffer: each write takes one from the pool.
// What else is due (heartbeats, token warnings and closes, keep-alives) the
// policy says; one timer wakes the pump for it.
func (s *Server) pump(ctx context.Context, conn *rooms.Connection, out frameWriter, slots *connSlots, policy *streamPolicy) {
	now := time.Now()
	wake := time.NewTimer(policy.next(now).Sub(now))
	defer wake.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			bp := frameBufs.Get().(*[]byte)
			s.writeClose(conn, out, (*bp)[:0])
			frameBufs.Put(bp)
			return
		case <-conn.Ready():
		case <-conn.IdentityChanged():
		case <-wake.C:
		}
		bp := frameBufs.Get().(*[]byte)
		buf := s.appendDeliveries((*bp)[:0], conn)
		now = time.Now()
		due := policy.due(now, conn, len(buf) > 0)
		if due.closing {
			conn.Close(due.close) // the first reason stays, should another have come first
			s.writeClose(conn, out, buf)
			*bp = buf[:0]
			frameBufs.Put(bp)
			return
		}
		buf = appendDue(buf, conn, due)
		var err error
		if len(buf) > 0 {
			err = out.WriteFrames(buf)
			policy.wrote(now)
		}
		*bp = buf[:0]
		frameBufs.Put(bp)
		if err != nil {
			return
		}
		if due.touch {
			s.keepAlive(ctx, conn, slots)
		}
		wake.Reset(policy.next(now).Sub(now))
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

// appendDeliveries appends the frames of the deliveries waiting, each
// carrying the cursor after it (volatile events carry none).
func (s *Server) appendDeliveries(buf []byte, conn *rooms.Connection) []byte {
	for d := range conn.Drain() {
		switch d.Kind {
		case rooms.KindEvent:
			ev := d.Event
			if !ev.Volatile {
				buf = appendIDLine(buf, conn)
			}
			buf = sse.AppendEventData(buf, ev.Event, ev.Envelope(d.Index))
		case rooms.KindReset:
			data, _ := json.Marshal(resetData{Reason: d.Reason, Room: rooms.DisplayName(d.Channel)})
			buf = appendIDLine(buf, conn)
			buf = sse.AppendEventData(buf, "roomcast:reset", data)
		case rooms.KindJoined, rooms.KindLeft:
			name := "roomcast:joined"
			if d.Kind == rooms.KindLeft {
				name = "roomcast:left"
			}
			data, _ := json.Marshal(roomData{Room: rooms.DisplayName(d.Channel), Reason: d.Reason})
			buf = appendIDLine(buf, conn)
			buf = sse.AppendEventData(buf, name, data)
		}
	}
	return buf
}

// appendIDLine appends the id field of the delivery in hand: the cursor a
// client resumes from after it.
func appendIDLine(buf []byte, conn *rooms.Connection) []byte {
	buf = append(buf, "id: "...)
	buf = conn.AppendCursor(buf)
	return append(buf, '\n')
}

// writeClose tells the client why the server ends its stream, after
// what buf holds, as far as the client still reads.
func (s *Server) writeClose(conn *rooms.Connection, out frameWriter, buf []byte) {
	_ = out.WriteFrames(s.closeFrame(conn, buf))
}

func displayNames(channels []string) []string {
	out := make([]string, len(channels))
	for i, ch := range channels {
		out[i] = rooms.DisplayName(ch)
	}
	return out
}
