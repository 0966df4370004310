package relay

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// hijackable reports whether a stream can be taken over from net/http and
// written by the streamer: HTTP/1.x, uncompressed, and not turned off.
// HTTP/2 streams stay on the standard path.
func (s *Server) hijackable(r *http.Request) bool {
	if s.opts.DisableHijack || r.ProtoMajor != 1 {
		return false
	}
	return !(s.opts.Compress == CompressAll && acceptsGzip(r))
}

// hijack takes the connection over and writes the response head, with the
// headers set so far, and first. The body runs until the connection
// closes, so it needs no chunked framing. ok is false when the connection
// could not be taken, in which case nothing was written.
func (s *Server) hijack(w http.ResponseWriter, first []byte) (net.Conn, bool) {
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	var head []byte
	head = append(head, "HTTP/1.1 200 OK\r\n"...)
	h := w.Header().Clone()
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	hw := headerBuffer{b: head}
	_ = h.Write(&hw)
	head = append(hw.b, "\r\n"...)
	head = append(head, first...)
	// Bytes net/http buffered but did not send yet go first.
	if rw != nil && rw.Writer.Buffered() > 0 {
		_ = rw.Writer.Flush()
	}
	_ = nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if _, err := nc.Write(head); err != nil {
		// The client is gone; the caller's writes now fail at once and
		// it releases the stream itself.
		_ = nc.Close()
		return nil, false
	}
	_ = nc.SetWriteDeadline(time.Time{})
	discard(rw)
	return nc, true
}

type headerBuffer struct{ b []byte }

func (h *headerBuffer) Write(p []byte) (int, error) {
	h.b = append(h.b, p...)
	return len(p), nil
}

// discard drops net/http's buffers so that a parked stream holds none.
func discard(rw *bufio.ReadWriter) {
	if rw != nil {
		rw.Reader.Reset(nil)
		rw.Writer.Reset(nil)
	}
}
