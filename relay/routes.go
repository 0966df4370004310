package relay

import (
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/roomcast/roomcast/rooms"
)

// routes is the whole v1 HTTP surface.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	// boundBody comes before any answer: even a refusal waits for the
	// rest of the body (net/http reads it to reuse the connection).
	r.Use(s.logRequests, s.recoverJSON, securityHeaders, s.boundBody, s.checkHost, s.cors, middleware.GetHead)

	s.webRoutes(r)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	// /metrics is not here: it is served on its own listener
	// (ROOMCAST_METRICS_ADDR), so that it is never public by default.

	// One router, no /v1 sub-router: a request is routed once.
	r.Get("/v1/rooms/{room}/events", s.streamRoom)
	r.Post("/v1/rooms/{room}/events", s.publishRoom)
	r.Get("/v1/rooms/{room}/poll", s.pollRoom)
	r.Get("/v1/rooms/{room}/history", s.history)
	r.Post("/v1/events", s.publishMulti)
	r.Post("/v1/batch", s.publishBatch)
	r.Get("/v1/stream", s.streamMulti)
	r.Get("/v1/poll", s.pollMulti)
	r.Put("/v1/connections/{connection}/rooms/{room}", s.join)
	r.Delete("/v1/connections/{connection}/rooms/{room}", s.leave)
	r.Post("/v1/connections/{connection}/token", s.refreshToken)
	r.Post("/v1/tickets", s.ticket)
	r.Get("/v1/users/me/events", s.streamUser)
	r.Get("/v1/users/me/poll", s.pollUser)
	r.Post("/v1/users/{user}/events", s.publishUser)
	r.Post("/v1/namespaces/{ns}/events", s.publishNamespace)
	r.Get("/v1/rooms/{room}/presence", s.presence)
	r.Post("/v1/rooms/{room}/kick", s.kick)
	r.Delete("/v1/rooms/{room}/events/{id}", s.deleteEvent)
	r.Post("/v1/moderation/bans", s.ban)
	r.Delete("/v1/moderation/bans/{user}", s.unban)

	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, errorf(codeNotFound, "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		allowed := allowedMethods(r, req.URL.Path)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, errorf(codeMethodNotAllowed,
			"%s is not allowed here; use %s", req.Method, strings.Join(allowed, " or ")))
	})
	return r
}

// allowedMethods lists the methods that route path.
func allowedMethods(r chi.Routes, path string) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if r.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return out
}

// securityHeaders sets the headers every response carries.
// Header values every answer of a kind carries, shared rather than
// allocated per response (net/http never writes into them; Set replaces).
var (
	nosniff         = []string{"nosniff"}
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Content-Type-Options"] = nosniff
		next.ServeHTTP(w, r)
	})
}

// roomParam reads a path parameter, undoing percent-encoding.
func roomParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// recoverJSON turns a handler's panic into the JSON 500 every error gets.
func (s *Server) recoverJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panicked", "panic", v, "uri", redactedURI(r.URL), "stack", string(debug.Stack()))
				writeError(w, errorf(codeInternal, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// queryRooms parses every ?room= of a multi-room request.
func queryRooms(values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			room, err := rooms.ParseRoom(name)
			if err != nil {
				return nil, err
			}
			out = append(out, room.String())
		}
	}
	return out, nil
}
