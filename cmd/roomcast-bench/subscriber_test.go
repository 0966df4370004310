package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// endingRelay is as much of a relay as the load generator needs (streams
// that get every publish), with streams that end as a test case says:
// afterConnected follows the connected event in the same write, and
// afterFirst follows the first published event in the same write, after
// which end, when set, does to each connection what the relay would.
// The raw bytes are written on hijacked connections, so that what the
// reader gets in one read is known.
type endingRelay struct {
	afterConnected, afterFirst string
	end                        func(*net.TCPConn)

	mu        sync.Mutex
	streams   []*net.TCPConn
	published int
}

// chunk is s as one chunk of a chunked body.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

func (e *endingRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		tc := conn.(*net.TCPConn)
		e.mu.Lock()
		defer e.mu.Unlock()
		e.streams = append(e.streams, tc)
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
			chunk("event: roomcast:connected\ndata: {}\n\n")+e.afterConnected)
		if e.afterConnected != "" && e.end != nil {
			e.end(tc)
		}
	case http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.published++
		ev := chunk(`event: bench` + "\n" + `data: {"event":"bench","data":"` + string(body) + "\"}\n\n")
		for _, tc := range e.streams {
			if e.published == 1 {
				_, _ = io.WriteString(tc, ev+e.afterFirst)
				if e.afterConnected == "" && e.end != nil {
					e.end(tc)
				}
			} else {
				_, _ = io.WriteString(tc, ev)
			}
		}
		e.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}
}

// close closes every stream still open.
func (e *endingRelay) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, tc := range e.streams {
		_ = tc.Close()
	}
}

// TestStreamEnds has the relay end streams while the run still wants them,
// in each way it can, and requires each reader to count the deliveries
// before the end and report the end as the goroutine reader always has.
func TestStreamEnds(t *testing.T) {
	const closing = "event: roomcast:closing\ndata: {\"reason\":\"shutdown\"}\n\n"
	closeConn := func(c *net.TCPConn) { _ = c.Close() }
	resetConn := func(c *net.TCPConn) {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	tests := []struct {
		name                       string
		afterConnected, afterFirst string
		end                        func(*net.TCPConn)
		received                   int // per subscriber
		err                        string
	}{
		{
			// The reader is handed a decoder that has already read the
			// closing event and the last chunk along with the connected
			// event.
			name:           "closing with the connected event",
			afterConnected: chunk(closing) + "0\r\n\r\n",
			end:            closeConn,
			err:            `the relay ended the stream (roomcast:closing {"reason":"shutdown"})`,
		},
		{
			name:       "closing after the first event",
			afterFirst: chunk(closing) + "0\r\n\r\n",
			end:        closeConn,
			received:   1,
			err:        `the relay ended the stream (roomcast:closing {"reason":"shutdown"})`,
		},
		{
			// The next event follows the last chunk.
			name:       "bytes after the end of the body",
			afterFirst: "0\r\n\r\n",
			received:   1,
			err:        errStreamEnded.Error(),
		},
		{
			name:     "connection closed mid-stream",
			end:      closeConn,
			received: 1,
			err:      "the relay ended the stream",
		},
		{
			name:     "connection reset",
			end:      resetConn,
			received: 1,
			err:      "read: connection reset by peer",
		},
		{
			name:       "bad chunk",
			afterFirst: "zz\r\n",
			received:   1,
			err:        "chunked body: bad chunk size byte 'z'",
		},
	}
	for _, reader := range readers() {
		for _, tc := range tests {
			t.Run(reader+"/"+tc.name, func(t *testing.T) {
				fake := &endingRelay{afterConnected: tc.afterConnected, afterFirst: tc.afterFirst, end: tc.end}
				ts := httptest.NewServer(fake)
				defer ts.Close()
				defer fake.close()
				const subscribers, messages = 6, 3
				// Messages after the first never arrive: the run waits
				// out Settle, long enough for every reader to see the end.
				cfg := Config{Targets: []string{ts.URL}, Reader: reader, Subscribers: subscribers, Messages: messages,
					Rate: 1000, Settle: 500 * time.Millisecond, Timeout: time.Minute}
				rep, err := Run(context.Background(), cfg, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				d := rep.Deliveries
				want := int64(subscribers * tc.received)
				if rep.OK || rep.Connect.Connected != subscribers || rep.Publish.Accepted != messages ||
					d.Received != want || d.Lost != subscribers*messages-want || d.StreamsEnded != subscribers {
					var b bytes.Buffer
					_ = rep.WriteTable(&b)
					t.Fatalf("want %d deliveries and %d streams ended:\n%s", want, subscribers, b.String())
				}
				if len(rep.Errors) == 0 || !strings.Contains(rep.Errors[0], tc.err) {
					t.Fatalf("errors %q, want the first to say %q", rep.Errors, tc.err)
				}
			})
		}
	}
}
