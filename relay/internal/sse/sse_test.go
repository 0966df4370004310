package sse_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/relay/internal/sse"
)

func TestAppend(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"event", sse.AppendEvent(nil, "c1", "chat", []byte(`{"a":1}`)), "id: c1\nevent: chat\ndata: {\"a\":1}\n\n"},
		{"event without id", sse.AppendEvent(nil, "", "roomcast:connected", []byte(`{}`)), "event: roomcast:connected\ndata: {}\n\n"},
		{"event without name", sse.AppendEvent(nil, "c1", "", []byte(`1`)), "id: c1\ndata: 1\n\n"},
		{"event with empty data", sse.AppendEvent(nil, "", "", nil), "data: \n\n"},
		{"appends", sse.AppendEvent([]byte("x"), "", "e", []byte("d")), "xevent: e\ndata: d\n\n"},
		{"line breaks and NUL replaced", sse.AppendEvent(nil, "a\nb\x00", "e\r\nf", []byte("1\n\ndata: 2\r3")), "id: a b \nevent: e  f\ndata: 1  data: 2 3\n\n"},
		{"event data", sse.AppendEventData(nil, "chat", []byte("x")), "event: chat\ndata: x\n\n"},
		{"comment", sse.AppendComment(nil, "ping"), ": ping\n\n"},
		{"comment with line break", sse.AppendComment(nil, "a\nevent: x"), ": a event: x\n\n"},
		{"retry", sse.AppendRetry(nil, 1500), "retry: 1500\n\n"},
		{"negative retry", sse.AppendRetry(nil, -5), "retry: 0\n\n"},
		{"no padding", sse.AppendPadding(nil, 0), ""},
		{"padding too small", sse.AppendPadding(nil, 2), ""},
		{"smallest padding", sse.AppendPadding(nil, 3), ": \n"},
		{"padding", sse.AppendPadding(nil, 10), ":" + strings.Repeat(" ", 8) + "\n"},
	}
	for _, tc := range cases {
		if string(tc.got) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

// TestPaddingParses checks that padding is a comment of exactly n bytes
// that dispatches nothing.
func TestPaddingParses(t *testing.T) {
	for _, n := range []int{3, 4, 100, 4096} {
		b := sse.AppendPadding(nil, n)
		if len(b) != n {
			t.Errorf("padding %d is %d bytes", n, len(b))
		}
		p := relaytest.Parse(append(b, "data: x\n\n"...))
		if len(p.Comments) != 1 || len(p.Events) != 1 || p.Events[0].Data != "x" {
			t.Errorf("padding %d parses as %+v", n, p)
		}
	}
}

// FuzzAppendEvent checks that no id, name or data can break a frame: a
// spec-following parser reads exactly one event, sees no field but id,
// event and data, and reads back the values with line breaks (and NUL)
// replaced.
func FuzzAppendEvent(f *testing.F) {
	f.Add("c1", "message", []byte(`{"a":1}`), "ping")
	f.Add("", "", []byte(""), "")
	f.Add("1\n\nid: 2", "x\r\nretry: 1", []byte("a\r\n\r\ndata: b\revent: c\n\n"), "\n\nevent: y\ndata: z\n\n")
	f.Add("\x00", "\r", []byte("\xff\xfe\n"), "\r\r")
	f.Add("\ufeff", ":", []byte(":\n:"), "\ufeffretry: 5")
	f.Fuzz(func(t *testing.T, id, name string, data []byte, comment string) {
		out := sse.AppendComment(nil, comment)
		out = sse.AppendEvent(out, id, name, data)
		p := relaytest.Parse(out)
		if len(p.Events) != 1 || p.Rest != "" {
			t.Fatalf("%q parses as %d events with rest %q", out, len(p.Events), p.Rest)
		}
		for _, f := range p.Fields {
			if f != "id" && f != "event" && f != "data" {
				t.Fatalf("%q has a %q field", out, f)
			}
		}
		var want []string
		if id != "" {
			want = append(want, "id")
		}
		if name != "" {
			want = append(want, "event")
		}
		want = append(want, "data")
		if !slices.Equal(p.Fields, want) {
			t.Fatalf("%q has fields %v, want %v", out, p.Fields, want)
		}
		ev := p.Events[0]
		if ev.HasID != (id != "") || ev.LastEventID != read(id) {
			t.Errorf("id %q read as %q (set %v)", id, ev.LastEventID, ev.HasID)
		}
		wantType := read(name)
		if wantType == "" {
			wantType = "message"
		}
		if ev.Type != wantType {
			t.Errorf("name %q read as %q", name, ev.Type)
		}
		if ev.Data != read(string(data)) {
			t.Errorf("data %q read as %q", data, ev.Data)
		}
	})
}

// read is what a parser reads back of a field value: line breaks and NUL
// replaced by the encoder, invalid UTF-8 by the decoder.
func read(v string) string {
	v = strings.NewReplacer("\r", " ", "\n", " ", "\x00", " ").Replace(v)
	return strings.ToValidUTF8(v, "\uFFFD")
}

// BenchmarkAppendEventData frames one delivery of a typical envelope: the
// per-subscriber cost of an event's data on a stream.
func BenchmarkAppendEventData(b *testing.B) {
	data := []byte(`{"id":"76a8f6d8-8","room":"bench","event":"bench","data":{"p":0,"s":12,"t":1795646506552263268,"x":"` +
		strings.Repeat("x", 180) + `"},"from":null,"client":null,"ts":1795641510424}`)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(data)))
	for range b.N {
		buf = sse.AppendEventData(buf[:0], "bench", data)
	}
}
