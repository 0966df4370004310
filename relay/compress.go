package relay

import (
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Compression settings: what the relay gzips when the client accepts it.
//
// A gzip writer holds about 0.8 MB (1.2 MB at BestSpeed), measured with
// runtime.MemStats over 200 live writers. A poll borrows one from a pool for
// the length of one answer; a stream would hold one for its whole life, a
// hundred times the memory of an idle stream, so streams are compressed only
// when asked for.
const (
	CompressOff   = "off"
	CompressPolls = "polls"
	CompressAll   = "all"
)

// minCompress is the smallest poll answer worth compressing: gzip costs
// 20-33 µs for a 1 KiB answer here whatever the level (resetting and
// building Huffman tables dominate), a third of a poll's CPU, to save well
// under a kilobyte.
const minCompress = 4096

var gzipPool = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression); return w }}

// answerGzipPool compresses poll answers at BestSpeed: on an 8 KiB answer
// 18 µs against 49 µs at the default level, for about a tenth more bytes
// (measured with testing.B).
var answerGzipPool = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && !zeroQ(params) {
			return true
		}
	}
	return false
}

// zeroQ reports whether an Accept-Encoding entry's parameters give it a
// weight of 0 ("q=0", "q=0.000", "Q = 0."), which refuses the coding.
func zeroQ(params string) bool {
	name, v, ok := strings.Cut(params, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
		return false
	}
	q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return err == nil && q == 0
}

// writeBodyMaybeGzip writes an encoded JSON answer, compressed when it is
// large, the client accepts gzip and the server's setting allows it for
// polls.
func (s *Server) writeBodyMaybeGzip(w http.ResponseWriter, r *http.Request, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	if len(b) < minCompress || s.opts.Compress == CompressOff || !acceptsGzip(r) {
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
		return
	}
	h.Set("Content-Encoding", "gzip")
	h.Add("Vary", "Accept-Encoding")
	w.WriteHeader(status)
	gz := answerGzipPool.Get().(*gzip.Writer)
	gz.Reset(w)
	_, _ = gz.Write(b)
	_ = gz.Close()
	gz.Reset(nil)
	answerGzipPool.Put(gz)
}

// gzipFrames compresses a stream, flushing the compressor with every batch
// so that no event waits in it. A batch is compressed into a buffer first
// and only then written under the write deadline: the deadline bounds how
// long the client takes to accept bytes, not how long the server takes to
// make them (compressing, and the compressor's first allocation of about a
// megabyte, took longer than a short timeout on a loaded machine, and
// HTTP/2 reset the stream as it opened).
type gzipFrames struct {
	gz  *gzip.Writer // writes into sink
	out *responseFrames
	// sink collects the compressor's output during one batch; its bytes
	// are borrowed from frameBufs for that batch only.
	sink byteSink
}

// byteSink is an io.Writer appending to b.
type byteSink struct{ b []byte }

func (s *byteSink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

func newGzipFrames(out *responseFrames) *gzipFrames {
	g := &gzipFrames{gz: gzipPool.Get().(*gzip.Writer), out: out}
	g.gz.Reset(&g.sink)
	return g
}

func (g *gzipFrames) WriteFrames(p []byte) error {
	return g.compressed(func() error {
		if _, err := g.gz.Write(p); err != nil {
			return err
		}
		return g.gz.Flush()
	})
}

// compressed runs compress, which writes to the sink, then writes what it
// made as one batch under the deadline.
func (g *gzipFrames) compressed(compress func() error) error {
	bp := frameBufs.Get().(*[]byte)
	g.sink.b = (*bp)[:0]
	defer func() {
		*bp = g.sink.b[:0]
		g.sink.b = nil
		frameBufs.Put(bp)
	}()
	if err := compress(); err != nil {
		return err
	}
	return g.out.WriteFrames(g.sink.b)
}

// Close ends the compressed body (its trailer, as far as the client still
// reads) and gives the compressor back.
func (g *gzipFrames) Close() {
	_ = g.compressed(g.gz.Close)
	g.gz.Reset(nil)
	gzipPool.Put(g.gz)
	g.gz = nil
}
