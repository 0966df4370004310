package relaytest

import (
	"bufio"
	"bytes"
	"strings"
	"unicode/utf8"
)

// Dispatched is an event as the WHATWG EventSource parser dispatches it.
type Dispatched struct {
	// Type is the event type ("message" when no event field was given).
	Type string
	Data string
	// LastEventID is the last event ID buffer at dispatch, which carries
	// over from earlier events; HasID says whether this event's own block
	// set it.
	LastEventID string
	HasID       bool
}

// Parsed is everything a spec-following parser sees in a stream.
type Parsed struct {
	Events []Dispatched
	// Fields lists the name of every field line in order, comments excluded.
	Fields []string
	// Comments lists the text of every comment line after its colon.
	Comments []string
	// Retry is the last valid retry value ("" when none).
	Retry string
	// Rest is an incomplete last block, which the spec discards.
	Rest string
}

// Parse runs the "interpret an event stream" algorithm of the HTML
// standard over a complete stream: UTF-8 decoding with replacement, one
// leading BOM dropped, lines ended by CRLF, LF or CR, one optional space
// after a field's colon, data lines joined with LF, ids with NUL ignored.
func Parse(stream []byte) Parsed {
	s := strings.ToValidUTF8(string(stream), string(utf8.RuneError))
	s = strings.TrimPrefix(s, "\uFEFF")
	var p Parsed
	var data strings.Builder
	var typ, lastID string
	hasData, hasID := false, false
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			p.Rest = s
			return p
		}
		line := s[:i]
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			s = s[i+2:]
		} else {
			s = s[i+1:]
		}
		if line == "" {
			if hasData {
				p.Events = append(p.Events, Dispatched{
					Type:        cmpOr(typ, "message"),
					Data:        strings.TrimSuffix(data.String(), "\n"),
					LastEventID: lastID,
					HasID:       hasID,
				})
			}
			data.Reset()
			typ, hasData, hasID = "", false, false
			continue
		}
		if line[0] == ':' {
			p.Comments = append(p.Comments, line[1:])
			continue
		}
		field, value := line, ""
		if j := strings.IndexByte(line, ':'); j >= 0 {
			field, value = line[:j], strings.TrimPrefix(line[j+1:], " ")
		}
		p.Fields = append(p.Fields, field)
		switch field {
		case "event":
			typ = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				lastID, hasID = value, true
			}
		case "retry":
			if value != "" && strings.Trim(value, "0123456789") == "" {
				p.Retry = value
			}
		}
	}
}

// Frame is one SSE frame as a line-by-line client reads the relay's
// framing: the last value of each field it knows. Parse is the
// spec-complete reader; ReadFrame is the one for a live stream.
type Frame struct {
	ID, Event, Data, Retry string
	HasID                  bool
}

// IDOnly reports whether the frame has an id and no other field: it moves
// a client's cursor and dispatches nothing, as in a browser.
func (f Frame) IDOnly() bool {
	return f.HasID && f.Event == "" && f.Data == "" && f.Retry == ""
}

// ReadFrame reads r up to the blank line that ends the next frame with a
// field in it, passing the text after the colon of each comment line on
// the way to comment (when not nil). A failed read returns its error (io.EOF
// at the end of the stream) and the part of the frame read before it.
func ReadFrame(r *bufio.Reader, comment func(string)) (Frame, error) {
	var f Frame
	fields := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if fields > 0 {
				return f, nil
			}
		case strings.HasPrefix(line, ":"):
			if comment != nil {
				comment(line[1:])
			}
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			fields++
			switch name {
			case "id":
				f.ID, f.HasID = value, true
			case "event":
				f.Event = value
			case "data":
				f.Data = value
			case "retry":
				f.Retry = value
			}
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// splitFrames cuts complete "\n\n"-terminated frames off buf, as the relay
// frames them, and returns them and the unfinished rest.
func splitFrames(buf []byte) (frames []string, rest []byte) {
	for {
		i := bytes.Index(buf, []byte("\n\n"))
		if i < 0 {
			return frames, buf
		}
		frames = append(frames, string(buf[:i+2]))
		buf = buf[i+2:]
	}
}
