package relay

import (
	"net/netip"
	"strings"
	"testing"
)

// referenceForwardedFor is forwardedFor written the plain way: every line
// split into elements, read from the right.
func referenceForwardedFor(values []string, trusted func(netip.Addr) bool) (netip.Addr, bool) {
	var hops []string
	for _, line := range values {
		hops = append(hops, strings.Split(line, ",")...)
	}
	var leftmost netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, ok := parseHop(h)
		if !ok {
			return netip.Addr{}, false
		}
		if !trusted(a) {
			return a, true
		}
		leftmost = a
	}
	return leftmost, leftmost.IsValid()
}

// The X-Forwarded-For and X-Forwarded-Proto readers take header lines any
// client writes: they never panic, read all lines as one list from its
// right end, and name an address unmapped and without zone.
func FuzzForwardedHeaders(f *testing.F) {
	f.Add("198.51.100.7, 10.0.0.2", "203.0.113.66", "https", "http, https")
	f.Add("", "[2001:db8::7]:4711", "", "HTTPS")
	f.Add("unknown, 10.0.0.1", "::ffff:10.0.0.9%eth0", "http,", " ,https")
	f.Add(",,,", "1.2.3.4:99999", "ws", "")
	f.Fuzz(func(t *testing.T, xff1, xff2, proto1, proto2 string) {
		trustedNet := netip.MustParsePrefix("10.0.0.0/8")
		trusted := func(a netip.Addr) bool { return trustedNet.Contains(a) }
		values := []string{xff1, xff2}
		got, ok := forwardedFor(values, trusted)
		want, wantOK := referenceForwardedFor(values, trusted)
		if got != want || ok != wantOK {
			t.Fatalf("forwardedFor(%q) = %v %v, reference %v %v", values, got, ok, want, wantOK)
		}
		if ok && (got.Is4In6() || got.Zone() != "") {
			t.Fatalf("forwardedFor(%q) = %v: not normalised", values, got)
		}

		p := forwardedProto([]string{proto1, proto2})
		var last string
		for _, e := range strings.Split(proto1+","+proto2, ",") {
			if e = strings.TrimSpace(e); e != "" {
				last = strings.ToLower(e)
			}
		}
		if last != "http" && last != "https" {
			last = ""
		}
		if p != last {
			t.Fatalf("forwardedProto(%q, %q) = %q, want %q", proto1, proto2, p, last)
		}
	})
}

// The Host allow-list and the Origin comparison take a Host and an Origin
// any client writes: they never panic, and a host listed by name is
// allowed under that name, on any port.
func FuzzHostAllowList(f *testing.F) {
	f.Add("relay.example.com", "relay.example.com:8443", "https://relay.example.com")
	f.Add("*.example.com", "A.Example.COM.", "http://a.example.com:80")
	f.Add("::1", "[::1]:8080", "http://[::1]:8080")
	f.Add("[::1", "[", "http://[")
	f.Fuzz(func(t *testing.T, pattern, host, origin string) {
		s := &Server{hosts: parseHostPatterns([]string{pattern})}
		_ = s.hostAllowed(host)
		name, port := splitHost(pattern)
		if name != "" && port == "" && !strings.Contains(name, "*") && !strings.ContainsAny(name, "[]") && !strings.Contains(name, ":") {
			if !s.hostAllowed(name) || !s.hostAllowed(name+":8080") {
				t.Fatalf("pattern %q does not allow its own name %q", pattern, name)
			}
		}
		if got := originHost("http", host); got != "" && originHost("http", got) != got {
			t.Fatalf("originHost(%q) = %q is not stable", host, got)
		}
	})
}
