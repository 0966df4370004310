package relay

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// Request bodies are read under a whole-body deadline: without one, a
// client that sends a request's headers and then its body slowly, or never,
// holds a connection and a goroutine for as long as it likes — whether the
// handler reads the body or answers first (net/http then reads what is
// left before it answers, so that the connection can be reused).
//
// A request still sending its body after bodyGrace also counts against its
// address's connection limit, with the streams and polls, until the body is
// in: an address cannot park more slow bodies than it may open streams.
// Publishes whose body arrives with their headers, nearly all of them,
// never count, so a client at its stream limit can still publish. A body a
// handler left unread is read here, still counted, as net/http would read
// it after the handler, uncounted.
//
// GET and HEAD requests take no body on any route; an HTTP/1 one that
// announces a body is refused at once and its connection closed, rather
// than read: a stream may hand its connection over to the shared writer
// (hijack), after which nothing may read the connection's bytes as a body.

// bodyGrace is how long a body may take before its request counts against
// the connection limit (at most half the body timeout).
const bodyGrace = time.Second

// maxBodyDrain is how much of a body left unread is read after its
// handler, as net/http does (it closes a connection with more left).
const maxBodyDrain = 256 << 10

// boundBody bounds the time to receive each request body to
// Options.BodyTimeout and counts slow bodies against the connection limit.
func (s *Server) boundBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		get := r.Method == http.MethodGet || r.Method == http.MethodHead
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody || get && r.ProtoMajor != 1 {
			// An HTTP/2 GET's body, if a proxy left the request open,
			// is never read, and ending the handler ends the stream.
			next.ServeHTTP(w, r)
			return
		}
		if get {
			// Close the connection without reading the body: net/http
			// reads it after the handler unless the read fails at once.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
			writeError(w, errorf(codeInvalidParameter, "a %s request takes no body", r.Method))
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(s.opts.BodyTimeout)); err != nil {
			// Only a connection that cannot take deadlines gets here
			// (none of net/http's).
			next.ServeHTTP(w, r)
			return
		}
		b := &boundedBody{ReadCloser: r.Body, s: s, req: r, rc: rc, counted: make(chan struct{})}
		r.Body = b
		b.timer = time.AfterFunc(min(bodyGrace, s.opts.BodyTimeout/2), b.count)
		defer b.finish()
		next.ServeHTTP(w, r)
		if r.ProtoMajor == 1 {
			// HTTP/2 ends the stream instead: nothing to read.
			b.drain()
		}
	})
}

// bodyState is where a boundedBody is.
type bodyState int

const (
	bodyReading  bodyState = iota // within the grace, not counted
	bodyCounting                  // the grace passed: a slot is being taken
	bodyCounted                   // a slot is held
	bodyRefused                   // over the limit: reads fail
	bodyDone                      // received, or the request ended
)

// boundedBody is a request body read under a deadline.
type boundedBody struct {
	io.ReadCloser
	s       *Server
	req     *http.Request
	rc      *http.ResponseController
	timer   *time.Timer
	counted chan struct{} // closed when count returns, if it ran
	// read: the handler asked for the body, which is when net/http
	// sends "100 Continue" to a client that expects one.
	read atomic.Bool

	mu    sync.Mutex
	state bodyState
	slots *connSlots
	err   error // why reads fail once refused
	// neverCounts: the timer was stopped before count ran.
	neverCounts bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		// The body is in: the connection may idle again, and what
		// reads it next (net/http's watch for a hang-up) must not time
		// out into cancelling the request. release first: a count
		// refusing at this moment sets a deadline in the past under the
		// lock, and clearing after it is what must win.
		b.release()
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		b.mu.Lock()
		refused := b.err
		b.mu.Unlock()
		var ne net.Error
		switch {
		case refused != nil:
			err = refused
		case errors.As(err, &ne) && ne.Timeout():
			err = errorf(codeRequestTimeout,
				"the request body did not arrive within %s", b.s.opts.BodyTimeout)
		}
	}
	return n, err
}

// count runs once the grace has passed: the request now holds one of its
// address's connection slots, or, over the limit, its reads fail.
func (b *boundedBody) count() {
	defer close(b.counted)
	b.mu.Lock()
	if b.state != bodyReading {
		b.mu.Unlock()
		return
	}
	b.state = bodyCounting
	b.mu.Unlock()

	// The caller counts as a stream would: by address, and by user when
	// its bearer token says who it is (the API key is exempt). Only the
	// Authorization header is read: a ticket would be spent.
	id, err := b.s.identify(b.req, auth.StateChanging)
	if err != nil {
		id = rooms.Identity{}
	}
	slots, err := b.s.acquireConnection(b.req, id)
	b.mu.Lock()
	defer b.mu.Unlock()
	var over *rateLimitError
	switch {
	case b.state == bodyDone:
		if slots != nil {
			slots.release()
		}
	case errors.As(err, &over):
		b.state, b.err = bodyRefused, err
		// Ends the pending read now.
		_ = b.rc.SetReadDeadline(time.Now())
	case err != nil:
		// The backbone could not count: the deadline still bounds the
		// body.
		b.state = bodyCounted
	default:
		b.state, b.slots = bodyCounted, slots
	}
}

// release ends the count: the body is in, or the request is over.
func (b *boundedBody) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == bodyDone {
		return
	}
	if b.state == bodyReading {
		// false: count has started and will see bodyDone.
		b.neverCounts = b.timer.Stop()
	}
	if b.slots != nil {
		b.slots.release()
		b.slots = nil
	}
	b.state = bodyDone
}

// drain reads what the handler left of the body, up to maxBodyDrain, within
// the deadline and still counted. A client that sent "Expect: 100-continue"
// and was answered before its handler read anything was never told to
// send its body, and waits for the answer instead: reading would hold the
// answer until the body timeout. Its connection is closed unread, as
// net/http closes it (its own read after the handler would wait the same).
func (b *boundedBody) drain() {
	if !b.read.Load() && expectsContinue(b.req) {
		_ = b.rc.SetReadDeadline(time.Now())
		return
	}
	b.mu.Lock()
	done := b.state == bodyDone
	b.mu.Unlock()
	if !done {
		_, _ = io.CopyN(io.Discard, b, maxBodyDrain)
	}
}

// finish runs when the handler returns; it waits for a count under way, so
// that none outlives its request.
func (b *boundedBody) finish() {
	b.release()
	b.mu.Lock()
	neverCounts := b.neverCounts
	b.mu.Unlock()
	if !neverCounts {
		<-b.counted
	}
}

// expectsContinue reports whether r's client waits for "100 Continue"
// before it sends the body (net/http sends it on the first read).
func expectsContinue(r *http.Request) bool {
	if !r.ProtoAtLeast(1, 1) {
		return false
	}
	for _, v := range r.Header.Values("Expect") {
		for _, e := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(e), "100-continue") {
				return true
			}
		}
	}
	return false
}
