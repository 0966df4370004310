package relay

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

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
// never count, so a client at its stream limit can still publish.

// bodyGrace is how long a body may take before its request counts against
// the connection limit (at most half the body timeout).
const bodyGrace = time.Second

// boundBody bounds the time to receive each request body to
// Options.BodyTimeout and counts slow bodies against the connection limit.
func (s *Server) boundBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
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
		b.timer = time.AfterFunc(min(bodyGrace, s.opts.BodyTimeout/2), b.count)
		r.Body = b
		defer b.finish()
		next.ServeHTTP(w, r)
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

	mu    sync.Mutex
	state bodyState
	slots *connSlots
	err   error // why reads fail once refused
	// neverCounts: the timer was stopped before count ran.
	neverCounts bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		// The body is in: the connection may idle again, and what
		// reads it next (net/http's watch for a hang-up) must not time
		// out into cancelling the request.
		_ = b.rc.SetReadDeadline(time.Time{})
		b.release()
	case err != nil:
		b.mu.Lock()
		refused := b.err
		b.mu.Unlock()
		var ne net.Error
		switch {
		case refused != nil:
			err = refused
		case errors.As(err, &ne) && ne.Timeout():
			err = errorf(http.StatusRequestTimeout, codeRequestTimeout,
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

	slots, err := b.s.acquireConnection(b.req, rooms.Identity{})
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.state == bodyDone:
		if slots != nil {
			slots.release()
		}
	case err != nil:
		b.state, b.err = bodyRefused, err
		// Ends the pending read now.
		_ = b.rc.SetReadDeadline(time.Now())
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
