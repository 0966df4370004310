package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// gotFrame is a frame copied out of the decoder.
type gotFrame struct {
	Event, Data, ID string
	HasID           bool
}

func (f gotFrame) String() string {
	return fmt.Sprintf("{%q %q id=%v:%q}", f.Event, f.Data, f.HasID, f.ID)
}

// decodeAll feeds input split at the given offsets and returns the frames
// and the first error.
func decodeAll(input []byte, splits ...int) ([]gotFrame, error) {
	var out []gotFrame
	d := newStreamDecoder(func(f *frame) {
		out = append(out, gotFrame{Event: string(f.event), Data: string(f.data), ID: string(f.id), HasID: f.hasID})
	})
	prev := 0
	for _, at := range append(splits, len(input)) {
		at = min(max(at, prev), len(input))
		if err := d.Feed(input[prev:at]); err != nil {
			return out, err
		}
		prev = at
	}
	return out, nil
}

const okHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

// chunked encodes parts as chunks of a body.
func chunked(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
	}
	return b.String()
}

func TestStreamDecoder(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    []gotFrame
		wantErr string
	}{
		{
			name:  "relay stream",
			input: okHead + chunked("retry: 1000\n\nevent: roomcast:connected\ndata: {\"connection\":\"c\"}\n\n", "id: A1\nevent: bench\ndata: {\"data\":\"0.1.2.x\"}\n\n"),
			want: []gotFrame{
				{Event: "roomcast:connected", Data: `{"connection":"c"}`},
				{Event: "bench", Data: `{"data":"0.1.2.x"}`, ID: "A1", HasID: true},
			},
		},
		{
			name:  "a line split across chunks",
			input: okHead + chunked("event: be", "nch\nda", "ta: x\n", "\n"),
			want:  []gotFrame{{Event: "bench", Data: "x"}},
		},
		{
			name:  "CRLF, CR and LF line ends",
			input: okHead + chunked("data: a\r\ndata: b\rdata: c\n\r\n", "data: d\r", "\r"),
			want:  []gotFrame{{Data: "a\nb\nc"}, {Data: "d"}},
		},
		{
			name:  "comments, unknown fields and an event without data",
			input: okHead + chunked(": ping\n\nfoo: bar\nevent: x\n\ndata\n\n"),
			want:  []gotFrame{{Data: ""}},
		},
		{
			name:  "no space after the colon, and a second space kept",
			input: okHead + chunked("event:e\ndata:  two\n\n"),
			want:  []gotFrame{{Event: "e", Data: " two"}},
		},
		{
			name:  "an id holding NUL is ignored",
			input: okHead + chunked("id: a\x00b\ndata: x\n\n"),
			want:  []gotFrame{{Data: "x"}},
		},
		{
			name:  "chunk extensions and upper-case sizes",
			input: okHead + "C;ext=1\r\ndata: 1234\n\n\r\n0\r\n\r\n",
			want:  []gotFrame{{Data: "1234"}},
		},
		{
			name:  "a body without transfer coding",
			input: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\ndata: x\n\n",
			want:  []gotFrame{{Data: "x"}},
		},
		{
			name:    "refused stream",
			input:   "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":\"b\"}",
			wantErr: "stream refused: 429 Too Many Requests",
		},
		{
			name:    "not an event stream",
			input:   "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantErr: "want text/event-stream",
		},
		{
			name:    "gzipped stream",
			input:   "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantErr: "Content-Encoding",
		},
		{
			name:    "a stream with a length",
			input:   "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 3\r\n\r\nabc",
			wantErr: "not a stream",
		},
		{
			name:    "garbage head",
			input:   "SSH-2.0-OpenSSH\r\n\r\n",
			wantErr: "bad response head",
		},
		{
			name:    "bad chunk size",
			input:   okHead + "zz\r\n",
			wantErr: "bad chunk size",
		},
		{
			name:    "empty chunk size",
			input:   okHead + "\r\n",
			wantErr: "empty chunk size",
		},
		{
			name:    "chunk size too large",
			input:   okHead + "123456789\r\n",
			wantErr: "too large",
		},
		{
			name:    "chunk not ended by CRLF",
			input:   okHead + "1\r\nxy",
			wantErr: "want CRLF",
		},
		{
			name:    "data after the last chunk",
			input:   okHead + chunked("data: x\n\n") + "0\r\n\r\nmore",
			want:    []gotFrame{{Data: "x"}},
			wantErr: errStreamEnded.Error(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.input)
			// Whole, byte by byte, and split in two everywhere.
			splits := [][]int{nil, make([]int, len(in))}
			for i := range in {
				splits[1][i] = i
			}
			for i := 0; i < len(in); i += max(1, len(in)/40) {
				splits = append(splits, []int{i})
			}
			for _, s := range splits {
				got, err := decodeAll(in, s...)
				if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
					t.Fatalf("splits %v: frames %v, want %v", s, got, tc.want)
				}
				switch {
				case tc.wantErr == "" && err != nil:
					t.Fatalf("splits %v: %v", s, err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Fatalf("splits %v: error %v, want one containing %q", s, err, tc.wantErr)
				}
			}
		})
	}
}

func TestStreamDecoderLimits(t *testing.T) {
	long := strings.Repeat("x", maxLine+1)
	tests := []struct {
		name, input, wantErr string
	}{
		{"head", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", maxHead) + "\r\n\r\n", "response head longer"},
		{"line", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: " + long + "\n", "line longer"},
		{"unended line", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + long, "line longer"},
		{"event", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" +
			strings.Repeat("data: "+strings.Repeat("z", maxLine-8)+"\n", maxFrame/maxLine+1), "data longer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{-1, len(tc.input) / 2, 1000} {
				var err error
				if split < 0 {
					_, err = decodeAll([]byte(tc.input))
				} else {
					_, err = decodeAll([]byte(tc.input), split)
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("split %d: error %v, want %q", split, err, tc.wantErr)
				}
			}
		})
	}
}

// FuzzStreamDecoder feeds the decoder arbitrary bytes: it must never
// panic, never hand out more data than its limit, and decode the same
// frames however the bytes are split between reads.
func FuzzStreamDecoder(f *testing.F) {
	f.Add([]byte(okHead+chunked("event: bench\ndata: {\"data\":\"0.1.2.x\"}\nid: 1\n\n")), uint16(7))
	f.Add([]byte(okHead+chunked("data: a\r\ndata: b\rdata: c\n\r\n", "data: d\r", "\r")), uint16(90))
	f.Add([]byte(okHead+"C;ext=1\r\ndata: 1234\n\n\r\n0\r\n\r\n"), uint16(3))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: ping\n\ndata\n\n"), uint16(60))
	f.Add([]byte("HTTP/1.1 500 Oops\r\n\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, input []byte, split uint16) {
		whole, errWhole := decodeAll(input)
		at := int(split) % (len(input) + 1)
		parts, errParts := decodeAll(input, at)
		bytewise := make([]int, len(input))
		for i := range bytewise {
			bytewise[i] = i
		}
		bytes, errBytes := decodeAll(input, bytewise...)
		for _, fs := range [][]gotFrame{whole, parts, bytes} {
			for _, fr := range fs {
				if len(fr.Data) > maxFrame {
					t.Fatalf("frame data of %d bytes", len(fr.Data))
				}
			}
		}
		if (errWhole == nil) != (errParts == nil) || (errWhole == nil) != (errBytes == nil) {
			t.Fatalf("errors differ: whole %v, split at %d %v, bytewise %v", errWhole, at, errParts, errBytes)
		}
		if !reflect.DeepEqual(whole, parts) || !reflect.DeepEqual(whole, bytes) {
			t.Fatalf("frames differ:\nwhole    %v\nsplit %d %v\nbytewise %v", whole, at, parts, bytes)
		}
	})
}
