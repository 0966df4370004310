package relay

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5/middleware"
)

// requestNote carries what a handler learns that the request log line
// should show, such as a stream's connection id, and what the line shows
// of the request itself: copied out, so that a stream that outlives its
// handler does not keep the request (headers, contexts, net/http's
// buffers) alive with it.
type requestNote struct {
	connection atomic.Pointer[string]
	// handedOver is set when a stream outlives its handler (hijacked):
	// the line is then written by whoever ends the stream, through the
	// function handOver returns.
	handedOver atomic.Bool
	// routine marks a request that is logged at debug level when it
	// succeeds: a long-poll, of which a poller sends one per answer.
	routine atomic.Bool

	srv    *Server
	seq    uint64 // numbers the request for its id, formatted only when logged
	start  time.Time
	method string
	url    *url.URL
	remote string
	sentID string // the client's X-Request-Id
}

// handOver marks the request's stream as continuing after its handler and
// returns the function that logs the request when the stream ends.
func handOver(ctx context.Context) func(written int64) {
	n, ok := ctx.Value(noteKey{}).(*requestNote)
	if !ok {
		return func(int64) {}
	}
	n.handedOver.Store(true)
	return func(written int64) { n.srv.logRequest(n, http.StatusOK, written) }
}

type noteKey struct{}

// noteRoutine marks the request as one that is logged at debug level
// unless it fails.
func noteRoutine(ctx context.Context) {
	if n, ok := ctx.Value(noteKey{}).(*requestNote); ok {
		n.routine.Store(true)
	}
}

// noteConnection records the connection id a request opened.
func noteConnection(ctx context.Context, id string) {
	if n, ok := ctx.Value(noteKey{}).(*requestNote); ok {
		n.connection.Store(&id)
	}
}

// secretParams are query parameters whose values never reach a log.
var secretParams = []string{"access_token", "ticket", "token", "lastEventId", "cursor", "proof"}

// connectionsPath is where the routes that act on a connection start.
const connectionsPath = "/v1/connections/"

// redactedURI is the request path and query with secrets replaced: the
// values of secretParams, and a connection id in the path, which lets
// whoever holds an anonymous connection's id change it (its fingerprint
// stands in its place, as in the line's connection field).
func redactedURI(u *url.URL) string {
	path := u.Path
	if rest, ok := strings.CutPrefix(path, connectionsPath); ok {
		id, tail, _ := strings.Cut(rest, "/")
		path = connectionsPath + connectionFingerprint(id)
		if tail != "" {
			path += "/" + tail
		}
	}
	if u.RawQuery == "" {
		return path
	}
	q := u.Query()
	for _, p := range secretParams {
		if q.Has(p) {
			q.Set(p, "REDACTED")
		}
	}
	return path + "?" + q.Encode()
}

// connectionFingerprint names a connection in logs without its id, which is
// a credential for an anonymous connection: "fp-" and 64 bits of its
// SHA-256, enough to tell a connection's lines apart and to match them
// with connectionFingerprint of an id known from elsewhere.
func connectionFingerprint(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "fp-" + base64.RawURLEncoding.EncodeToString(sum[:8])
}

// requestID is the client's X-Request-Id when it sent a usable one, else
// this server's prefix and the request's number.
func (s *Server) requestID(n *requestNote) string {
	if id := n.sentID; id != "" && len(id) <= 128 && printable(id) {
		return id
	}
	b := make([]byte, 0, len(s.idPrefix)+8)
	b = append(b, s.idPrefix...)
	b = append(b, '-')
	k := len(b)
	b = strconv.AppendUint(b, n.seq, 10)
	if digits := len(b) - k; digits < 6 {
		// Zero-padded to six digits, so that ids sort as numbers.
		b = append(b[:k], "000000"[digits:]...)
		b = strconv.AppendUint(b, n.seq, 10)
	}
	return string(b)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// logRequests writes one line per request when it ends: request id,
// method, redacted URI, status, bytes, duration and, for streams, the
// connection id.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note := &requestNote{srv: s, seq: s.requests.Add(1), start: time.Now(), method: r.Method, url: r.URL,
			remote: r.RemoteAddr, sentID: r.Header.Get("X-Request-Id")}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		r = r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		defer func() {
			if !note.handedOver.Load() {
				s.logRequest(note, ww.Status(), int64(ww.BytesWritten()))
			}
		}()
		next.ServeHTTP(ww, r)
	})
}

// logRequest writes the line of the request n describes.
func (s *Server) logRequest(n *requestNote, status int, written int64) {
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelWarn
	case status < 400 && n.routine.Load():
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", s.requestID(n)),
		slog.String("method", n.method),
		slog.String("uri", redactedURI(n.url)),
		slog.Int("status", status),
		slog.Int64("bytes", written),
		slog.Duration("duration", time.Since(n.start)),
		slog.String("remote", n.remote),
	}
	if id := n.connection.Load(); id != nil {
		attrs = append(attrs, slog.String("connection", connectionFingerprint(*id)))
	}
	s.log.LogAttrs(ctx, level, "request", attrs...)
}
