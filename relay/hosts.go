package relay

import (
	"net/http"
	"net/url"
	"strings"
)

// LoopbackHosts returns the host names a relay in open mode on a loopback
// address answers to: a page of another site that has its own name resolve
// to 127.0.0.1 (DNS rebinding) still sends its own name as Host.
func LoopbackHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// hostPattern is one allowed host: a name (or address) on any port, or on
// one port, or with a leading "*." any subdomain of a name.
type hostPattern struct {
	name   string // lower case, no brackets, no trailing dot; ".example.com" for *.example.com
	port   string // "" for any
	suffix bool
}

// parseHostPatterns reads the allowed hosts of Options.AllowedHosts.
func parseHostPatterns(list []string) []hostPattern {
	var out []hostPattern
	for _, s := range list {
		name, port := splitHost(s)
		if name == "" {
			continue
		}
		p := hostPattern{name: name, port: port}
		if rest, ok := strings.CutPrefix(name, "*."); ok && rest != "" {
			p.name, p.suffix = "."+rest, true
		}
		out = append(out, p)
	}
	return out
}

// splitHost splits a Host header or a pattern into its lower-case name,
// without brackets or trailing dot, and its port ("" when none).
func splitHost(host string) (name, port string) {
	host = strings.ToLower(strings.TrimSpace(host))
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", ""
		}
		name, rest := host[1:end], host[end+1:]
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok || !digits(p) {
				return "", ""
			}
			port = p
		}
		return name, port
	}
	if strings.Count(host, ":") == 1 {
		host, port, _ = strings.Cut(host, ":")
		if !digits(port) {
			return "", ""
		}
	}
	return strings.TrimSuffix(host, "."), port
}

// digits reports whether s is a port number's digits (or empty).
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// hostAllowed reports whether host (a request's Host) is one the relay
// answers to. An empty allow-list allows any host.
func (s *Server) hostAllowed(host string) bool {
	if s.hosts == nil {
		return true
	}
	name, port := splitHost(host)
	if name == "" {
		return false
	}
	for _, p := range s.hosts {
		if p.port != "" && p.port != port {
			continue
		}
		if p.suffix && strings.HasSuffix(name, p.name) || !p.suffix && name == p.name {
			return true
		}
	}
	return false
}

// AnswersHost reports whether the relay answers requests for host (as a
// Host header: name or name:port), rather than 421 host_not_allowed.
func (s *Server) AnswersHost(host string) bool { return s.hostAllowed(host) }

// checkHost refuses requests for a host the relay does not answer to, with
// 421 host_not_allowed. The health probes answer whatever the Host:
// platforms call them by a machine's address, and they change nothing.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			next.ServeHTTP(w, r)
			return
		}
		if !s.hostAllowed(r.Host) {
			writeError(w, errorf(codeHostNotAllowed,
				"this relay does not answer to host %q; see ROOMCAST_ALLOWED_HOSTS", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requestScheme is the scheme the client used: https over TLS, else what a
// trusted proxy says in X-Forwarded-Proto (TLS ends at the proxy), else
// http.
func (s *Server) requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if s.viaTrustedProxy(r) {
		if p := forwardedProto(r.Header.Values("X-Forwarded-Proto")); p != "" {
			return p
		}
	}
	return "http"
}

// sameOrigin reports whether origin (an Origin header) is the origin r was
// sent to: the same scheme, host and port (a scheme's default port written
// or not).
func (s *Server) sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	scheme := s.requestScheme(r)
	if !strings.EqualFold(u.Scheme, scheme) {
		return false
	}
	want := originHost(scheme, r.Host)
	return want != "" && originHost(scheme, u.Host) == want
}

// originHost is host in lower case without scheme's default port.
func originHost(scheme, host string) string {
	name, port := splitHost(host)
	if name == "" {
		return ""
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	if port == "" {
		return name
	}
	return name + ":" + port
}
