package relay

import (
	"net/http"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz fails only while starting and draining. The backbone's state is
// reported, not acted on: if it is down it is down for every instance, and
// taking them all out of routing would only turn a degraded service into
// an outage.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	status, code := "ready", http.StatusOK
	switch {
	case s.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case !s.ready.Load():
		status, code = "starting", http.StatusServiceUnavailable
	}
	backbone := "up"
	if _, err := s.hub.Epoch(r.Context()); err != nil {
		backbone = "down"
	}
	writeJSON(w, code, map[string]any{"status": status, "backbone": backbone, "connections": s.hub.Connections()})
}
