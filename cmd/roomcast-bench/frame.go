package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// frame is one dispatched server-sent event. Its slices belong to the
// decoder and are valid only until the callback that receives it returns.
type frame struct {
	// hasID says whether the event carried an id: line (volatile events
	// and roomcast:connected do not).
	hasID bool
	id    []byte
	// event is the event type; empty means "message".
	event []byte
	// data is the data lines joined with '\n'.
	data []byte
}

// Limits of one decoded stream. The load generator reads its own relay,
// yet the bytes are still the network's: nothing they hold may grow a
// buffer without bound or panic the decoder.
const (
	maxHead     = 64 << 10 // response status line and headers
	maxLine     = 1 << 20  // one event-stream line
	maxFrame    = 4 << 20  // one event's data
	maxChunkHex = 8        // hex digits of a chunk size (below 4 GiB)
)

// Decoder states.
const (
	stateHead      = iota // reading the response head
	stateChunkSize        // reading a chunk-size line
	stateChunkExt         // skipping a chunk extension up to its LF
	stateChunkData        // inside a chunk
	stateChunkCR          // after a chunk's data: CR or LF
	stateChunkLF          // after a chunk's data and CR: LF
	stateTrailer          // after the last chunk: trailer lines up to an empty one
	stateIdentity         // a body without transfer coding, until EOF
	stateDone             // the stream is over
)

// errStreamEnded is what Feed returns for bytes past the last chunk.
var errStreamEnded = errors.New("data after the end of the stream")

// streamDecoder turns the bytes of an HTTP/1.1 response to an event-stream
// request into frames: it checks the response head, undoes chunked
// transfer coding and parses event-stream lines as the WHATWG HTML
// standard says (CRLF, LF or CR line ends; "data" lines joined with LF; an
// event dispatched at a blank line only when it has data). It holds no
// reader: it is fed whatever each read returned, so one connection costs
// one read buffer and this state. Not safe for concurrent use.
type streamDecoder struct {
	onFrame func(*frame)

	state    int
	head     []byte
	size     int // chunk size being read, then bytes left in the chunk
	digits   int // hex digits read of the chunk size
	trailer  int // bytes of the trailer so far
	lineLen  int // bytes of the current trailer line, CRs aside
	lineBuf  []byte
	afterCR  bool // the last byte fed was a CR ending a line
	cur      frame
	hasData  bool
	comments int // comment lines seen (": ping" heartbeats, padding)
}

// newStreamDecoder returns a decoder calling onFrame for each event.
func newStreamDecoder(onFrame func(*frame)) *streamDecoder {
	return &streamDecoder{onFrame: onFrame}
}

// newBodyDecoder decodes a stream's body alone, its head and transfer
// coding already taken off (HTTP/2, through net/http).
func newBodyDecoder(onFrame func(*frame)) *streamDecoder {
	return &streamDecoder{onFrame: onFrame, state: stateIdentity}
}

// ended reports whether the whole chunked body has been read.
func (d *streamDecoder) ended() bool { return d.state == stateDone }

// Feed decodes p, calling onFrame for every event it completes. An error
// is final: the stream is not what the relay sends.
func (d *streamDecoder) Feed(p []byte) error {
	for len(p) > 0 {
		switch d.state {
		case stateHead:
			rest, err := d.feedHead(p)
			if err != nil {
				return err
			}
			p = rest
		case stateChunkSize:
			c := p[0]
			p = p[1:]
			switch {
			case c == '\n':
				if d.digits == 0 {
					return errors.New("chunked body: empty chunk size")
				}
				d.endChunkSize()
			case c == '\r' || c == ' ' || c == '\t':
			case c == ';':
				d.state = stateChunkExt
			default:
				v, ok := unhex(c)
				if !ok {
					return fmt.Errorf("chunked body: bad chunk size byte %q", c)
				}
				if d.digits++; d.digits > maxChunkHex {
					return errors.New("chunked body: chunk size too large")
				}
				d.size = d.size<<4 | v
			}
		case stateChunkExt:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return nil
			}
			p = p[i+1:]
			if d.digits == 0 {
				return errors.New("chunked body: empty chunk size")
			}
			d.endChunkSize()
		case stateChunkData:
			n := min(d.size, len(p))
			if err := d.feedEvents(p[:n]); err != nil {
				return err
			}
			p = p[n:]
			if d.size -= n; d.size == 0 {
				d.state = stateChunkCR
			}
		case stateChunkCR, stateChunkLF:
			c := p[0]
			p = p[1:]
			switch {
			case c == '\n':
				d.state, d.size, d.digits = stateChunkSize, 0, 0
			case c == '\r' && d.state == stateChunkCR:
				d.state = stateChunkLF
			default:
				return fmt.Errorf("chunked body: %q after chunk data, want CRLF", c)
			}
		case stateTrailer:
			c := p[0]
			p = p[1:]
			if d.trailer++; d.trailer > maxHead {
				return errors.New("chunked body: trailer too long")
			}
			switch c {
			case '\n':
				if d.lineLen == 0 {
					d.state = stateDone
				}
				d.lineLen = 0
			case '\r':
			default:
				d.lineLen++
			}
		case stateIdentity:
			return d.feedEvents(p)
		case stateDone:
			return errStreamEnded
		}
	}
	return nil
}

// endChunkSize starts the chunk whose size was just read; a zero size is
// the last chunk, which a trailer follows.
func (d *streamDecoder) endChunkSize() {
	if d.size == 0 {
		d.state = stateTrailer
		return
	}
	d.state = stateChunkData
}

func unhex(c byte) (int, bool) {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0'), true
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// feedHead collects the response head and, once it is complete, checks it
// and returns the bytes after it.
func (d *streamDecoder) feedHead(p []byte) ([]byte, error) {
	from := max(len(d.head)-3, 0)
	d.head = append(d.head, p...)
	end := bytes.Index(d.head[from:], []byte("\r\n\r\n"))
	if end < 0 {
		if len(d.head) > maxHead {
			return nil, fmt.Errorf("response head longer than %d bytes", maxHead)
		}
		return nil, nil
	}
	end += from + 4
	if end > maxHead {
		return nil, fmt.Errorf("response head longer than %d bytes", maxHead)
	}
	rest := d.head[end:]
	if err := d.checkHead(d.head[:end]); err != nil {
		if len(rest) > 0 && len(rest) < 512 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(rest)))
		}
		return nil, err
	}
	// rest aliases d.head, which is never appended to again.
	d.head = d.head[:end:end]
	return rest, nil
}

// checkHead requires a 200 event stream and picks the body's framing.
func (d *streamDecoder) checkHead(head []byte) error {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return fmt.Errorf("bad response head: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream refused: %s", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		return fmt.Errorf("stream answered Content-Type %q, want text/event-stream", resp.Header.Get("Content-Type"))
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		return fmt.Errorf("stream answered Content-Encoding %q; the load generator reads plain streams", enc)
	}
	switch {
	case len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked":
		d.state = stateChunkSize
	case resp.ContentLength >= 0:
		return errors.New("stream answered with a Content-Length: not a stream")
	default:
		d.state = stateIdentity
	}
	return nil
}

// feedEvents parses event-stream bytes, carrying a partial line over to
// the next call.
func (d *streamDecoder) feedEvents(p []byte) error {
	for len(p) > 0 {
		if d.afterCR {
			d.afterCR = false
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		// The relay ends lines with LF: find it with one fast scan, then
		// look for a CR only before it.
		end := bytes.IndexByte(p, '\n')
		scan := p
		if end >= 0 {
			scan = p[:end]
		}
		next := end + 1
		if cr := bytes.IndexByte(scan, '\r'); cr >= 0 {
			end, next = cr, cr+1
			if cr+1 < len(p) && p[cr+1] == '\n' {
				next = cr + 2
			} else if cr+1 == len(p) {
				d.afterCR = true
			}
		}
		if end < 0 {
			if len(d.lineBuf)+len(p) > maxLine {
				return fmt.Errorf("event-stream line longer than %d bytes", maxLine)
			}
			d.lineBuf = append(d.lineBuf, p...)
			return nil
		}
		line := p[:end]
		if len(d.lineBuf)+len(line) > maxLine {
			return fmt.Errorf("event-stream line longer than %d bytes", maxLine)
		}
		if len(d.lineBuf) > 0 {
			d.lineBuf = append(d.lineBuf, line...)
			line = d.lineBuf
		}
		err := d.line(line)
		d.lineBuf = d.lineBuf[:0]
		if err != nil {
			return err
		}
		p = p[next:]
	}
	return nil
}

// line handles one complete event-stream line.
func (d *streamDecoder) line(l []byte) error {
	if len(l) == 0 {
		d.dispatch()
		return nil
	}
	if l[0] == ':' {
		d.comments++
		return nil
	}
	field, value := l, []byte(nil)
	if i := bytes.IndexByte(l, ':'); i >= 0 {
		field, value = l[:i], l[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if d.hasData {
			d.cur.data = append(d.cur.data, '\n')
		}
		if len(d.cur.data)+len(value) > maxFrame {
			return fmt.Errorf("event data longer than %d bytes", maxFrame)
		}
		d.cur.data = append(d.cur.data, value...)
		d.hasData = true
	case "event":
		d.cur.event = append(d.cur.event[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			d.cur.id = append(d.cur.id[:0], value...)
			d.cur.hasID = true
		}
	}
	// retry: and unknown fields are ignored, as a browser does.
	return nil
}

// dispatch hands the event being built to onFrame, when it has data.
func (d *streamDecoder) dispatch() {
	if d.hasData && d.onFrame != nil {
		d.onFrame(&d.cur)
	}
	d.cur.data = d.cur.data[:0]
	d.cur.event = d.cur.event[:0]
	d.cur.id = d.cur.id[:0]
	d.cur.hasID = false
	d.hasData = false
}
