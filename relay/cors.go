package relay

import (
	"net/http"
	"slices"
)

// cors answers preflights and marks responses readable by allowed origins.
// Credentials are allowed only for origins listed by name, never for "*".
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if len(s.opts.AllowedOrigins) > 0 {
			// Every answer depends on Origin, also one without CORS
			// headers: a cache must not serve an answer stored for a
			// request without Origin (or of another origin) to an
			// allowed one, which the browser would then refuse.
			w.Header().Add("Vary", "Origin")
		}
		if origin != "" && preflight && !s.originAllowed(origin) && !s.sameOrigin(origin, r) {
			// No route answers OPTIONS: without this a refused preflight
			// would read 405 method_not_allowed, hiding the reason.
			writeError(w, originRefused(origin))
			return
		}
		if origin == "" || s.sameOrigin(origin, r) || !s.originAllowed(origin) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		if slices.Contains(s.opts.AllowedOrigins, origin) {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		} else {
			h.Set("Access-Control-Allow-Origin", "*")
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After, Idempotent-Replayed, Idempotency-Key")
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Roomcast-Connection, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
