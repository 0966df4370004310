package relay

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5/middleware"
)

// requestNote carries what a handler learns that the request log line
// should show, such as a stream's connection id.
type requestNote struct {
	connection atomic.Pointer[string]
}

type noteKey struct{}

// noteConnection records the connection id a request opened.
func noteConnection(ctx context.Context, id string) {
	if n, ok := ctx.Value(noteKey{}).(*requestNote); ok {
		n.connection.Store(&id)
	}
}

// secretParams are query parameters whose values never reach a log.
var secretParams = []string{"access_token", "ticket", "token", "lastEventId", "cursor"}

// redactedURI is the request path and query with secrets replaced.
func redactedURI(u *url.URL) string {
	if u.RawQuery == "" {
		return u.Path
	}
	q := u.Query()
	for _, p := range secretParams {
		if q.Has(p) {
			q.Set(p, "REDACTED")
		}
	}
	return u.Path + "?" + q.Encode()
}

// logRequests writes one line per request when it ends: request id,
// method, redacted URI, status, bytes, duration and, for streams, the
// connection id.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		note := &requestNote{}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		r = r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		defer func() {
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			attrs := []slog.Attr{
				slog.String("request_id", middleware.GetReqID(r.Context())),
				slog.String("method", r.Method),
				slog.String("uri", redactedURI(r.URL)),
				slog.Int("status", status),
				slog.Int("bytes", ww.BytesWritten()),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
			}
			if id := note.connection.Load(); id != nil {
				attrs = append(attrs, slog.String("connection", *id))
			}
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelWarn
			}
			s.log.LogAttrs(r.Context(), level, "request", attrs...)
		}()
		next.ServeHTTP(ww, r)
	})
}
