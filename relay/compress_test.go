package relay_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// rawClient is a client that neither asks for nor undoes compression by
// itself, so that a test sees the bytes on the wire.
func rawClient(t *testing.T, r *relaytest.Relay) *http.Client {
	t.Helper()
	tr := r.Client().Transport.(*http.Transport).Clone()
	tr.DisableCompression = true
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// getRaw sends a GET with the Accept-Encoding given ("" sends none) and
// returns the response with its body unread.
func getRaw(t *testing.T, c *http.Client, url, acceptEncoding string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip stream: %v", err)
	}
	return out
}

func varies(h http.Header) bool {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "Accept-Encoding") {
				return true
			}
		}
	}
	return false
}

// TestPollGzip: a poll answer of 4 KiB or more is gzipped for clients that
// accept gzip, and decodes to exactly the answer others get; smaller
// answers, clients that refuse gzip and Compress=off get plain JSON.
func TestPollGzip(t *testing.T) {
	on := relaytest.Start(t, relaytest.Options{})
	off := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Compress: relay.CompressOff}})
	// A poll from before the events answers with them.
	cursors := map[*relaytest.Relay]map[string]string{}
	for _, r := range []*relaytest.Relay{on, off} {
		cursors[r] = map[string]string{}
		for _, room := range []string{"big", "small"} {
			cursors[r][room] = poll(t, r, "/v1/rooms/"+room+"/poll?timeout=0").Cursor
		}
		r.PublishJSON(t, "big", map[string]any{"data": strings.Repeat("compressible ", 400)})
		r.PublishJSON(t, "small", map[string]any{"data": "tiny"})
	}

	cases := []struct {
		name           string
		relay          *relaytest.Relay
		room           string
		acceptEncoding string
		gzipped        bool
	}{
		{"gzip", on, "big", "gzip", true},
		{"among others", on, "big", "br, deflate, gzip;q=0.5", true},
		{"upper case", on, "big", "GZIP", true},
		{"no header", on, "big", "", false},
		{"identity", on, "big", "identity", false},
		{"other encoding", on, "big", "br", false},
		{"refused", on, "big", "gzip;q=0", false},
		{"refused with spaces", on, "big", "gzip ; q=0", false},
		{"refused with decimals", on, "big", "gzip;q=0.000", false},
		{"refused in capitals", on, "big", "deflate, GZIP;Q=0.", false},
		{"below 4 KiB", on, "small", "gzip", false},
		{"compression off", off, "big", "gzip", false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawClient(t, tc.relay)
			url := tc.relay.URL + "/v1/rooms/" + tc.room + "/poll?timeout=0&client=gzip-poller-" + strconv.Itoa(i) + "&cursor=" + cursors[tc.relay][tc.room]
			plainResp := getRaw(t, c, url, "")
			plain, err := io.ReadAll(plainResp.Body)
			if err != nil || plainResp.StatusCode != http.StatusOK || plainResp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("plain poll: %s %v %v", plainResp.Status, plainResp.Header, err)
			}
			// The same anonymous poller again: its id's proof comes along.
			var first struct{ Connection string }
			if err := json.Unmarshal(plain, &first); err != nil {
				t.Fatal(err)
			}
			url += "&proof=" + first.Connection
			if big := tc.room == "big"; big != (len(plain) >= 4096) {
				t.Fatalf("room %s answers %d bytes", tc.room, len(plain))
			}

			resp := getRaw(t, c, url, tc.acceptEncoding)
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("poll: %s %v", resp.Status, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			enc := resp.Header.Get("Content-Encoding")
			if !tc.gzipped {
				if enc != "" || !bytes.Equal(body, plain) {
					t.Errorf("Content-Encoding %q, body %.100q; want the plain answer", enc, body)
				}
				return
			}
			if enc != "gzip" || !varies(resp.Header) {
				t.Errorf("Content-Encoding %q, Vary %q; want gzip varying on Accept-Encoding", enc, resp.Header.Values("Vary"))
			}
			if len(body) >= len(plain) {
				t.Errorf("gzipped answer of %d bytes for %d plain", len(body), len(plain))
			}
			if got := gunzip(t, body); !bytes.Equal(got, plain) {
				t.Errorf("gzipped answer decodes to\n%s\nwant\n%s", got, plain)
			}
		})
	}
}

// sseReader reads a stream's frames, blank line to blank line.
type sseReader struct{ br *bufio.Reader }

// frame returns the next frame that dispatches an event, skipping retry
// and comment frames.
func (s sseReader) frame(t *testing.T) relaytest.Dispatched {
	t.Helper()
	var b strings.Builder
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream after %q: %v", b.String(), err)
		}
		b.WriteString(line)
		if line != "\n" {
			continue
		}
		if p := relaytest.Parse([]byte(b.String())); len(p.Events) == 1 {
			return p.Events[0]
		}
		b.Reset()
	}
}

// TestStreamGzip: with Compress=all, a stream to a client that accepts
// gzip is gzipped, and every event can be decoded as soon as it is sent:
// the compressor is flushed with each write. The end of the stream ends
// the gzip stream cleanly.
func TestStreamGzip(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Compress: relay.CompressAll, Heartbeat: time.Hour}})
	resp := getRaw(t, rawClient(t, r), r.URL+"/v1/rooms/zipped/events", "gzip")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" || !varies(resp.Header) ||
		resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answer %s %v, want a gzipped event stream", resp.Status, resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatalf("reading the gzip header: %v", err)
	}
	s := sseReader{bufio.NewReader(zr)}
	hello := s.frame(t)
	if hello.Type != "roomcast:connected" {
		t.Fatalf("first event %+v", hello)
	}
	var c relaytest.Connected
	if err := json.Unmarshal([]byte(hello.Data), &c); err != nil || c.Connection == "" {
		t.Fatalf("connected data %q: %v", hello.Data, err)
	}

	// The server holds the stream open with nothing more to send: each
	// event must be readable on its own.
	for i := range 3 {
		id := r.PublishJSON(t, "zipped", map[string]any{"data": i})
		ev := s.frame(t)
		if ev.Type != "message" || !ev.HasID || !strings.Contains(ev.Data, `"id":"`+id+`"`) {
			t.Fatalf("event %d: %+v, want %s", i, ev, id)
		}
	}

	conn, err := r.Hub.Lookup(c.Connection)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(rooms.CloseReason{Code: "test", Message: "closed by the test", ReconnectMS: 100})
	if ev := s.frame(t); ev.Type != "roomcast:closing" {
		t.Fatalf("after the close: %+v", ev)
	}
	if rest, err := io.ReadAll(s.br); err != nil || len(rest) != 0 {
		t.Errorf("after roomcast:closing: %q, %v; want a clean end of the gzip stream", rest, err)
	}
}

// TestStreamGzipOnlyWhenAsked: streams are gzipped only with Compress=all
// and only for clients that accept gzip; a client that does, such as Go's
// own, reads every event through it.
func TestStreamGzipOnlyWhenAsked(t *testing.T) {
	relays := map[string]*relaytest.Relay{}
	for _, mode := range []string{relay.CompressAll, relay.CompressPolls, relay.CompressOff} {
		relays[mode] = relaytest.Start(t, relaytest.Options{Relay: relay.Options{Compress: mode}})
	}
	cases := []struct {
		mode, acceptEncoding string
		gzipped              bool
	}{
		{relay.CompressAll, "gzip", true},
		{relay.CompressAll, "", false},
		{relay.CompressAll, "gzip;q=0", false},
		{relay.CompressPolls, "gzip", false},
		{relay.CompressOff, "gzip", false},
	}
	for _, tc := range cases {
		t.Run(tc.mode+"/"+tc.acceptEncoding, func(t *testing.T) {
			r := relays[tc.mode]
			resp := getRaw(t, rawClient(t, r), r.URL+"/v1/rooms/maybe/events", tc.acceptEncoding)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s", resp.Status)
			}
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzipped {
				t.Fatalf("Content-Encoding %q, want gzipped %v", resp.Header.Get("Content-Encoding"), tc.gzipped)
			}
			var body io.Reader = resp.Body
			if tc.gzipped {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			if ev := (sseReader{bufio.NewReader(body)}).frame(t); ev.Type != "roomcast:connected" {
				t.Fatalf("first event %+v", ev)
			}
		})
	}

	// Go's client asks for gzip and undoes it by itself.
	s := relays[relay.CompressAll].Subscribe(t, "/v1/rooms/transparent/events", relaytest.StreamOptions{})
	s.Connected(t)
	id := relays[relay.CompressAll].PublishJSON(t, "transparent", map[string]any{"data": "through gzip"})
	if got := s.NextEvent(t).EventID(t); got != id {
		t.Fatalf("event %s, want %s", got, id)
	}
}
