package redistest

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a Redis server and can lose the reply
// to one chosen request after the server answered it, as a network failing
// between request and reply would: the client's connection ends (io.EOF)
// although the command ran. It is closed when the test ends.
//
// It assumes what go-redis does outside pipelines and pub/sub: one request
// at a time per connection, so the first bytes back after a request are
// its reply.
type Proxy struct {
	t      testing.TB
	target string
	l      net.Listener

	mu    sync.Mutex
	match func(request []byte) bool // armed until a reply is lost
	cut   bool                      // the loss takes the proxy down
	lost  int
	conns map[net.Conn]struct{}
	done  bool

	wg sync.WaitGroup
}

// NewProxy listens on a free port of 127.0.0.1 and forwards to target.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy: %v", err)
	}
	p := &Proxy{t: t, target: target, l: l, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// URL is the proxy's redis:// URL.
func (p *Proxy) URL() string { return "redis://" + p.Addr() }

// LoseReplyTo arms the proxy: the reply to the next request for which match
// holds is dropped once the server has sent it, unless it is an error
// reply, and the client's connection is closed. Later requests pass.
func (p *Proxy) LoseReplyTo(match func(request []byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match = match
}

// LoseReplyAndGoDown is LoseReplyTo, and once the reply is lost the proxy
// goes down: every connection through it ends and new ones are refused,
// as when the link to Redis fails just after the server ran the command.
// The client's retry then fails to connect although its command ran.
func (p *Proxy) LoseReplyAndGoDown(match func(request []byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match, p.cut = match, true
}

// Lost returns how many replies the proxy lost.
func (p *Proxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

func (p *Proxy) close() {
	p.goDown()
	p.wg.Wait()
}

// goDown refuses new connections, then ends those open.
func (p *Proxy) goDown() {
	_ = p.l.Close()
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// track registers conns for closing; false when the proxy is closed.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.wg.Add(1)
		go p.pipe(client, server)
	}
}

// pipe forwards one connection both ways until either side ends.
func (p *Proxy) pipe(client, server net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client, server)
	var (
		mu      sync.Mutex
		waiting bool // the reply on its way is the one to lose
	)
	p.wg.Add(1)
	go func() { // requests
		defer p.wg.Done()
		defer p.untrack(client, server)
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				p.mu.Lock()
				if p.match != nil && p.match(buf[:n]) {
					mu.Lock()
					waiting = true
					mu.Unlock()
				}
				p.mu.Unlock()
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for { // replies
		n, err := server.Read(buf)
		if n > 0 {
			mu.Lock()
			lose := waiting && buf[0] != '-'
			waiting = false
			mu.Unlock()
			cut := false
			if lose {
				p.mu.Lock()
				lose = p.match != nil // one loss per arming
				if lose {
					p.match = nil
					p.lost++
					cut = p.cut
				}
				p.mu.Unlock()
			}
			if cut {
				p.goDown()
			}
			if lose {
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
