package relay

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Forwarding headers say who a proxy's client was and how it connected.
// Only a trusted proxy's word is taken, and only the part a trusted proxy
// wrote: a client sends whatever headers it likes, and proxies add theirs
// after what they received — appended to the same line (nginx's
// $proxy_add_x_forwarded_for) or as a header line of their own after the
// client's (HAProxy's "option forwardfor"). So every line is read, as one
// list in order, and the list is read from its right end, where the proxy
// next to the relay wrote. The standard Forwarded header (RFC 7239) is not
// read: a proxy that does not manage it passes a client's through.

// Client address headers Limits.ClientIPHeader can name.
const (
	// HeaderXForwardedFor is the default: the right-most address of the
	// X-Forwarded-For list that is not a trusted proxy's.
	HeaderXForwardedFor = "X-Forwarded-For"
	// HeaderFlyClientIP is the address fly-proxy accepted the connection
	// from, which it sets itself; on fly.io the right end of
	// X-Forwarded-For is the app's own address instead.
	HeaderFlyClientIP = "Fly-Client-IP"
)

// clientAddr is the request's client: the TCP peer, or, when the peer is a
// trusted proxy, the client the configured forwarding header names.
func (s *Server) clientAddr(r *http.Request) (netip.Addr, bool) {
	peer, ok := peerAddr(r)
	if !ok || !s.trusted(peer) {
		return peer, ok
	}
	if strings.EqualFold(s.opts.Limits.ClientIPHeader, HeaderFlyClientIP) {
		if a, ok := singleAddr(r.Header.Values(HeaderFlyClientIP)); ok {
			return a, true
		}
		return peer, true
	}
	if a, ok := forwardedFor(r.Header.Values(HeaderXForwardedFor), s.trusted); ok {
		return a, true
	}
	return peer, true
}

// peerAddr is the address of the TCP peer.
func peerAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// viaTrustedProxy reports whether r came from a trusted proxy.
func (s *Server) viaTrustedProxy(r *http.Request) bool {
	peer, ok := peerAddr(r)
	return ok && s.trusted(peer)
}

// forwardedFor reads the X-Forwarded-For header lines values as one
// comma-separated list and returns the right-most address that is not a
// trusted proxy's: the hop the nearest trusted proxy saw, which no client
// can forge. When every hop is trusted, the left-most is the client (one
// inside the proxies' network). ok is false for an empty list, and when a
// hop that must be read is not an address (then nobody is believed).
// Blank elements are skipped; an address may carry a port, as some
// proxies write it.
func forwardedFor(values []string, trusted func(netip.Addr) bool) (netip.Addr, bool) {
	var leftmost netip.Addr
	for i := len(values) - 1; i >= 0; i-- {
		line := values[i]
		for line != "" {
			elem := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			elem = strings.TrimSpace(elem)
			if elem == "" {
				continue
			}
			a, ok := parseHop(elem)
			if !ok {
				return netip.Addr{}, false
			}
			if !trusted(a) {
				return a, true
			}
			leftmost = a
		}
	}
	return leftmost, leftmost.IsValid()
}

// parseHop parses one X-Forwarded-For element: an address, with or without
// a port ("192.0.2.1:4711", "[2001:db8::1]:4711", "[2001:db8::1]").
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// singleAddr is the address a header that holds exactly one (such as
// Fly-Client-IP) gives; a repeated or unreadable header gives none.
func singleAddr(values []string) (netip.Addr, bool) {
	if len(values) != 1 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(values[0]))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// forwardedProto reads the X-Forwarded-Proto header lines values as one
// list and returns its right-most element, what the nearest proxy says,
// when it is "http" or "https"; otherwise "".
func forwardedProto(values []string) string {
	for i := len(values) - 1; i >= 0; i-- {
		line := values[i]
		for line != "" {
			elem := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			switch elem = strings.TrimSpace(elem); {
			case elem == "":
				continue
			case strings.EqualFold(elem, "https"):
				return "https"
			case strings.EqualFold(elem, "http"):
				return "http"
			}
			return ""
		}
	}
	return ""
}
