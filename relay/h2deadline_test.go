package relay_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// deadlineWrites records, for one response, what happens while its write
// deadline is set: "D" set, "W" a write, "F" a flush, "C" cleared.
type deadlineWrites struct {
	http.ResponseWriter
	mu  sync.Mutex
	log []string
}

func (d *deadlineWrites) note(s string) {
	d.mu.Lock()
	d.log = append(d.log, s)
	d.mu.Unlock()
}

func (d *deadlineWrites) Write(p []byte) (int, error) {
	d.note("W")
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWrites) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.note("C")
	} else {
		d.note("D")
	}
	return http.NewResponseController(d.ResponseWriter).SetWriteDeadline(t)
}

func (d *deadlineWrites) FlushError() error {
	d.note("F")
	return http.NewResponseController(d.ResponseWriter).Flush()
}

func (d *deadlineWrites) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// windows returns what happened within each deadline.
func (d *deadlineWrites) windows() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	var cur strings.Builder
	open := false
	for _, e := range d.log {
		switch e {
		case "D":
			cur.Reset()
			open = true
		case "C":
			if open {
				out = append(out, cur.String())
			}
			open = false
		default:
			if open {
				cur.WriteString(e)
			}
		}
	}
	return out
}

// TestGzipStreamWritesUnderDeadlineOnly: a gzipped HTTP/2 stream holds
// its write deadline only while it hands one batch of compressed bytes to
// the connection (one write, one flush), never while it compresses. The
// compressor wrote to the connection itself, under the deadline, in
// several writes: a 200 ms deadline then ran out on a loaded machine while
// the stream opened (the compressor's first use allocates about a
// megabyte), and HTTP/2 reset the stream with INTERNAL_ERROR
// (TestH2CStreams, compress=all).
func TestGzipStreamWritesUnderDeadlineOnly(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var streams []*deadlineWrites
	r := relaytest.Start(t, relaytest.Options{
		H2C:   true,
		Relay: relay.Options{Compress: relay.CompressAll},
		Wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/events") {
					d := &deadlineWrites{ResponseWriter: w}
					mu.Lock()
					streams = append(streams, d)
					mu.Unlock()
					w = d
				}
				next.ServeHTTP(w, req)
			})
		},
	})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v1/rooms/gz/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("stream over %s, Content-Encoding %q: want HTTP/2, gzip", resp.Proto, resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(t, "/v1/rooms/gz/events", "text/plain", []byte(strings.Repeat("compressible ", 200)), nil)
	body := bufio.NewReader(zr)
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, "compressible compressible") {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(streams) != 1 {
		t.Fatalf("%d streams seen, want 1", len(streams))
	}
	w := streams[0].windows()
	if len(w) < 2 {
		t.Fatalf("deadlines %q: want one per batch, at least the opening and the event", w)
	}
	for i, win := range w {
		if win != "WF" {
			t.Errorf("batch %d: %q under the write deadline, want one write and one flush (WF)", i, win)
		}
	}
}
