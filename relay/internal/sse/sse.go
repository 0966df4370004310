// Package sse writes the Server-Sent Events wire format. Its functions append
// to a caller's buffer so a connection's whole backlog becomes one write.
//
// Framing safety: a field value may never contain CR or LF, or it would end
// the field early and let the rest be read as new fields. Event names, ids
// and cursors are validated tokens; data is compact JSON, which has no raw
// line breaks. The Append functions still replace any CR or LF they are
// handed, so no input can break a frame.
package sse

import (
	"bytes"
	"strconv"
	"strings"
)

// AppendEvent appends one event. id is omitted when empty, as is name.
func AppendEvent(dst []byte, id, name string, data []byte) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = appendField(dst, id)
		dst = append(dst, '\n')
	}
	return AppendEventData(dst, name, data)
}

// AppendEventData appends the event and data lines and the terminating blank
// line of an event whose id line, if any, the caller already wrote.
func AppendEventData(dst []byte, name string, data []byte) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = appendField(dst, name)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = appendField(dst, data)
	return append(dst, '\n', '\n')
}

// AppendComment appends a comment line, which clients ignore.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ": "...)
	dst = appendField(dst, text)
	return append(dst, '\n', '\n')
}

// AppendPadding appends a comment of n bytes in all, to push a response past
// the buffers of proxies that hold back the first bytes.
func AppendPadding(dst []byte, n int) []byte {
	if n < 3 {
		return dst
	}
	dst = append(dst, ':')
	for range n - 2 {
		dst = append(dst, ' ')
	}
	return append(dst, '\n')
}

// AppendRetry appends a retry field: the client's reconnect delay.
func AppendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, max(ms, 0), 10)
	return append(dst, '\n', '\n')
}

// appendField copies v, replacing CR and LF, which would end the field, and
// NUL, which the id field may not carry, with a space.
func appendField[T string | []byte](dst []byte, v T) []byte {
	// Three vectorised scans cost a fraction of one byte-by-byte loop; the
	// data of every delivered event goes through here.
	if indexByte(v, '\n') < 0 && indexByte(v, '\r') < 0 && indexByte(v, 0) < 0 {
		return append(dst, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\n' || c == '\r' || c == 0 {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// AppendID appends a frame holding only an id field: it sets the client's
// last event id and dispatches nothing.
func AppendID(dst []byte, id string) []byte {
	dst = append(dst, "id: "...)
	dst = appendField(dst, id)
	return append(dst, '\n', '\n')
}

func indexByte[T string | []byte](v T, c byte) int {
	switch v := any(v).(type) {
	case string:
		return strings.IndexByte(v, c)
	case []byte:
		return bytes.IndexByte(v, c)
	}
	return -1
}
