package relay_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// slowRequest is a connection that sent a request's head and not (all of)
// its body.
type slowRequest struct {
	c  net.Conn
	br *bufio.Reader
}

// sendHead opens a connection to r and sends method, path and the header
// lines, then nothing more.
func sendHead(t *testing.T, r *relaytest.Relay, method, path string, lines ...string) *slowRequest {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.HTTP.Listener.Addr().String(), relaytest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := method + " " + path + " HTTP/1.1\r\nHost: relay.test\r\n"
	for _, l := range lines {
		head += l + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	return &slowRequest{c: c, br: bufio.NewReader(c)}
}

// answer reads the answer within deadline: its status and error code.
func (s *slowRequest) answer(deadline time.Time) (int, string, error) {
	_ = s.c.SetReadDeadline(deadline)
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var e struct{ Error struct{ Code string } }
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code, nil
}

// closed reports whether the relay closed the connection by deadline.
func (s *slowRequest) closed(deadline time.Time) error {
	_ = s.c.SetReadDeadline(deadline)
	if _, err := s.br.ReadByte(); err != io.EOF {
		return errors.Join(errors.New("the connection is still open"), err)
	}
	return nil
}

// TestSlowBodyTimesOut: a request that sends its head and then its body
// slowly, or never, is answered and its connection closed once the body
// timeout has passed — whether its handler reads the body (408
// request_timeout), answers first (net/http would otherwise wait for the
// rest of the body before answering) or there is no such route; a body
// trickled a byte at a time is cut off the same way.
func TestSlowBodyTimesOut(t *testing.T) {
	t.Parallel()
	r := startSecured(t, func(o *relaytest.Options) { o.Relay.BodyTimeout = 300 * time.Millisecond })
	tests := []struct {
		name       string
		method     string
		path       string
		lines      []string
		status     int
		code       string
		concurrent int
	}{
		{"publish, no body", http.MethodPost, "/v1/rooms/public:lobby/events",
			[]string{"Content-Type: application/json", "Content-Length: 10"}, http.StatusRequestTimeout, "request_timeout", 100},
		{"publish, chunked, no chunk", http.MethodPost, "/v1/rooms/public:lobby/events",
			[]string{"Content-Type: application/json", "Transfer-Encoding: chunked"}, http.StatusRequestTimeout, "request_timeout", 10},
		{"moderation, refused before the body", http.MethodPost, "/v1/moderation/bans",
			[]string{"Content-Type: application/json", "Content-Length: 10"}, http.StatusUnauthorized, "unauthenticated", 10},
		{"development token, not enabled", http.MethodPost, "/v1/dev/token",
			[]string{"Content-Type: application/json", "Content-Length: 10"}, http.StatusNotFound, "not_found", 10},
		{"no such route", http.MethodPost, "/v1/nowhere",
			[]string{"Content-Length: 10"}, http.StatusNotFound, "not_found", 10},
		{"a GET with a body", http.MethodGet, "/v1/rooms/public:lobby/poll?timeout=0",
			[]string{"Content-Length: 10"}, http.StatusBadRequest, "invalid_parameter", 10},
		{"a stream's GET with a body", http.MethodGet, "/v1/rooms/public:lobby/events",
			[]string{"Content-Length: 10"}, http.StatusBadRequest, "invalid_parameter", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reqs := make([]*slowRequest, tt.concurrent)
			for i := range reqs {
				reqs[i] = sendHead(t, r, tt.method, tt.path, tt.lines...)
			}
			deadline := time.Now().Add(relaytest.Wait)
			for i, s := range reqs {
				status, code, err := s.answer(deadline)
				if err != nil {
					t.Fatalf("request %d got no answer: %v", i, err)
				}
				if status != tt.status || code != tt.code {
					t.Errorf("request %d: %d %q, want %d %q", i, status, code, tt.status, tt.code)
				}
				if err := s.closed(deadline); err != nil {
					t.Errorf("request %d: %v", i, err)
				}
			}
		})
	}
	t.Run("trickle", func(t *testing.T) {
		t.Parallel()
		s := sendHead(t, r, http.MethodPost, "/v1/rooms/public:lobby/events", "Content-Type: application/json", "Content-Length: 1000")
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if _, err := s.c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		defer func() { close(done); <-stopped }()
		status, code, err := s.answer(time.Now().Add(relaytest.Wait))
		if err != nil || status != http.StatusRequestTimeout || code != "request_timeout" {
			t.Errorf("trickled body: %d %q %v, want 408 request_timeout", status, code, err)
		}
	})
}

// TestSlowBodiesCountAgainstAddressLimit: a request still sending its body
// after a moment holds one of its address's connection slots, as a stream
// does, whether its route reads the body or answers first: an address at
// its limit cannot park more, nor open streams, until they go. A body that
// arrives with its head never counts, so a client at its stream limit
// still publishes.
func TestSlowBodiesCountAgainstAddressLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		path   string
		status int // of the request over the limit
		code   string
	}{
		{"publish", "/v1/rooms/public:lobby/events", http.StatusTooManyRequests, "too_many_connections"},
		{"moderation, refused before the body", "/v1/moderation/bans", http.StatusUnauthorized, "unauthenticated"},
		{"no such route", "/v1/nowhere", http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := startSecured(t, func(o *relaytest.Options) {
				o.Relay.BodyTimeout = time.Minute
				o.Relay.Heartbeat = 50 * time.Millisecond
				o.Relay.Limits = relay.Limits{MaxConnsPerIP: 2, PublishRate: 1e6, PublishBurst: 1e6}
			})
			type result struct {
				i      int
				status int
				code   string
				err    error
			}
			reqs := make([]*slowRequest, 3)
			results := make(chan result, len(reqs))
			for i := range reqs {
				reqs[i] = sendHead(t, r, http.MethodPost, tt.path, "Content-Type: application/json", "Content-Length: 10")
			}
			for i, s := range reqs {
				go func() {
					status, code, err := s.answer(time.Now().Add(relaytest.Wait))
					results <- result{i: i, status: status, code: code, err: err}
				}()
			}
			// Two take the slots; the third is refused, and answered.
			first := <-results
			if first.err != nil || first.status != tt.status || first.code != tt.code {
				t.Fatalf("three slow bodies from an address allowed two: first answer %d %q %v, want %d %q",
					first.status, first.code, first.err, tt.status, tt.code)
			}
			if err := reqs[first.i].closed(time.Now().Add(relaytest.Wait)); err != nil {
				t.Errorf("the refused request: %v", err)
			}
			wantRateLimited(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events"}), "too_many_connections")
			for i, s := range reqs {
				if i != first.i {
					s.c.Close()
				}
			}
			for range len(reqs) - 1 {
				<-results
			}
			relaytest.Eventually(t, "the slow bodies' slots are given back", func() bool {
				return r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events"}).Status == http.StatusOK
			})
		})
	}
	t.Run("a body that comes with its head", func(t *testing.T) {
		t.Parallel()
		r := startLimited(t, relay.Limits{MaxConnsPerIP: 2, PublishRate: 1e6, PublishBurst: 1e6})
		for range 2 {
			r.Subscribe(t, "/v1/rooms/public:lobby/events", relaytest.StreamOptions{}).Connected(t)
		}
		wantRateLimited(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/public:lobby/events"}), "too_many_connections")
		publishAs(t, r, "public:lobby", nil, `{"data":"at the stream limit"}`)
	})
}

// TestSlowBodyTimesOutHTTP2: the body deadline holds for each HTTP/2
// stream (h2c from a proxy), not only for HTTP/1.1 connections; a GET whose
// request side a proxy leaves open is served as usual.
func TestSlowBodyTimesOutHTTP2(t *testing.T) {
	t.Parallel()
	r := relaytest.Start(t, relaytest.Options{H2C: true, Relay: relay.Options{BodyTimeout: 300 * time.Millisecond}})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	body, never := io.Pipe()
	defer never.Close()
	req, err := http.NewRequest(http.MethodPost, r.URL+"/v1/rooms/lobby/events", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 10
	client := &http.Client{Transport: tr, Timeout: relaytest.Wait}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer to a body that never comes: %v", err)
	}
	defer resp.Body.Close()
	var e struct{ Error struct{ Code string } }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || e.Error.Code != "request_timeout" {
		t.Errorf("%s %d %q, want HTTP/2 408 request_timeout", resp.Proto, resp.StatusCode, e.Error.Code)
	}

	// A proxy may leave an HTTP/2 GET's request side open: that is no
	// body to refuse, nor to count, and a stream works as ever.
	openBody, openWriter := io.Pipe()
	defer openWriter.Close()
	get, err := http.NewRequest(http.MethodGet, r.URL+"/v1/rooms/lobby/poll?timeout=0", openBody)
	if err != nil {
		t.Fatal(err)
	}
	polled, err := client.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	defer polled.Body.Close()
	if polled.ProtoMajor != 2 || polled.StatusCode != http.StatusOK {
		t.Errorf("an HTTP/2 GET left open: %s %d, want HTTP/2 200", polled.Proto, polled.StatusCode)
	}
}

// TestExpectContinueRefusedAtOnce: a client that sends "Expect:
// 100-continue" waits for "100 Continue" or an answer before it sends its
// body. A request refused before its body is read is answered at once and
// its connection closed, not held until the body timeout waiting for a
// body nobody asked for (nor counted meanwhile); one whose handler reads
// the body gets "100 Continue" and then its answer.
func TestExpectContinueRefusedAtOnce(t *testing.T) {
	t.Parallel()
	// Far longer than the wait: an answer held for the body would come
	// too late.
	r := startSecured(t, func(o *relaytest.Options) { o.Relay.BodyTimeout = 10 * relaytest.Wait })
	tests := []struct {
		name   string
		path   string
		status int
		code   string
	}{
		{"moderation, refused before the body", "/v1/moderation/bans", http.StatusUnauthorized, "unauthenticated"},
		{"development token, not enabled", "/v1/dev/token", http.StatusNotFound, "not_found"},
		{"no such route", "/v1/nowhere", http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := sendHead(t, r, http.MethodPost, tt.path, "Content-Type: application/json", "Content-Length: 10", "Expect: 100-continue")
			deadline := time.Now().Add(relaytest.Wait)
			status, code, err := s.answer(deadline)
			if err != nil {
				t.Fatalf("no answer before the body: %v", err)
			}
			if status != tt.status || code != tt.code {
				t.Errorf("%d %q, want %d %q", status, code, tt.status, tt.code)
			}
			if err := s.closed(deadline); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("read by its handler", func(t *testing.T) {
		t.Parallel()
		s := sendHead(t, r, http.MethodPost, "/v1/rooms/public:lobby/events", "Content-Type: application/json", "Content-Length: 12", "Expect: 100-continue")
		deadline := time.Now().Add(relaytest.Wait)
		if status, _, err := s.answer(deadline); err != nil || status != http.StatusContinue {
			t.Fatalf("%d %v, want 100 Continue", status, err)
		}
		if _, err := io.WriteString(s.c, `{"data":"x"}`); err != nil {
			t.Fatal(err)
		}
		status, code, err := s.answer(deadline)
		if err != nil || status != http.StatusAccepted {
			t.Errorf("%d %q %v, want 202", status, code, err)
		}
	})
}
