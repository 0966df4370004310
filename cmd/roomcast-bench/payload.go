package main

import (
	"bytes"
	"math"
	"strconv"
)

// A payload is the body of one benchmark publish, sent as text/plain so
// that the relay carries it as a JSON string without re-encoding anything:
//
//	<publisher>.<seq>.<send time, Unix nanoseconds>.xxxx…
//
// padded with 'x' to the requested size. Every byte is JSON-safe, so the
// envelope holds it verbatim after "data":".

// minPayload is the longest header a payload can have.
const minPayload = 3*20 + 3

// appendPayload appends the payload of publisher pub's message seq, sent
// at unixNanos and padded to size bytes, to b.
func appendPayload(b []byte, pub, seq int, unixNanos int64, size int) []byte {
	start := len(b)
	b = strconv.AppendInt(b, int64(pub), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, unixNanos, 10)
	b = append(b, '.')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return b
}

// dataMarker precedes the data of an envelope whose data is a string. The
// envelope's fields before "data" (id, room, rooms, event) are names and
// ids whose grammar has no quote, so the first match is the data field.
var dataMarker = []byte(`"data":"`)

// parseEnvelope finds the payload in an envelope and reads its header.
func parseEnvelope(env []byte) (pub, seq int, sent int64, ok bool) {
	i := bytes.Index(env, dataMarker)
	if i < 0 {
		return 0, 0, 0, false
	}
	return parsePayload(env[i+len(dataMarker):])
}

// parsePayload reads the header of a payload (followed by anything).
func parsePayload(p []byte) (pub, seq int, sent int64, ok bool) {
	var v [3]int64
	for k := range v {
		n, digits := int64(0), 0
		for digits < len(p) && p[digits] >= '0' && p[digits] <= '9' {
			d := int64(p[digits] - '0')
			if n > (math.MaxInt64-d)/10 {
				return 0, 0, 0, false
			}
			n = n*10 + d
			digits++
		}
		if digits == 0 || digits == len(p) || p[digits] != '.' {
			return 0, 0, 0, false
		}
		v[k] = n
		p = p[digits+1:]
	}
	if v[0] > 1<<20 || v[1] > 1<<40 {
		return 0, 0, 0, false
	}
	return int(v[0]), int(v[1]), v[2], true
}
