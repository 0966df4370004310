package relay

import (
	"crypto/subtle"
	"net/http"

	"github.com/roomcast/roomcast/relay/metrics"
)

// MetricsHandler serves m; when token is not empty it requires
// "Authorization: Bearer <token>" and refuses anything else with 401
// unauthenticated. It is exported for a metrics listener of its own.
func MetricsHandler(m *metrics.Metrics, token string) http.Handler {
	h := m.Handler()
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			// No realm, unlike writeError's: scrapers know this one.
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeCode(w, codeUnauthenticated, "metrics need the metrics token")
			return
		}
		h.ServeHTTP(w, r)
	})
}
