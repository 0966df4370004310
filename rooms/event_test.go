package rooms

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// envelopeKeys returns the top-level keys of a JSON object in wire order.
func envelopeKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("envelope %s is not an object", b)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing data after envelope %s", b)
	}
	return keys
}

func TestEnvelope(t *testing.T) {
	base := Message{Channels: []string{"lobby"}, Event: "message", Data: json.RawMessage(`{"text":"hi"}`)}
	with := func(f func(m *Message)) Message {
		m := base
		m.Channels = slices.Clone(base.Channels)
		f(&m)
		return m
	}
	tests := []struct {
		name string
		msg  Message
		// want is the exact envelope seen through each channel.
		want []string
	}{
		{
			name: "anonymous single room",
			msg:  base,
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":{"text":"hi"},"from":null,"client":null,"ts":1700000000123}`},
		},
		{
			name: "sender and client",
			msg: with(func(m *Message) {
				m.From = &Sender{User: "u1", Name: "Ann"}
				m.Client = "client-abc"
			}),
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":{"text":"hi"},"from":{"user":"u1","name":"Ann"},"client":"client-abc","ts":1700000000123}`},
		},
		{
			name: "volatile has a null id",
			msg:  with(func(m *Message) { m.Volatile = true; m.Event = "typing" }),
			want: []string{`{"id":null,"room":"lobby","event":"typing","data":{"text":"hi"},"from":null,"client":null,"ts":1700000000123}`},
		},
		{
			name: "multi-room lists rooms, room is the one it came through",
			msg:  with(func(m *Message) { m.Channels = []string{"a", "ns:b"} }),
			want: []string{
				`{"id":"ep-7","room":"a","rooms":["a","ns:b"],"event":"message","data":{"text":"hi"},"from":null,"client":null,"ts":1700000000123}`,
				`{"id":"ep-7","room":"ns:b","rooms":["a","ns:b"],"event":"message","data":{"text":"hi"},"from":null,"client":null,"ts":1700000000123}`,
			},
		},
		{
			name: "base64 body",
			msg:  with(func(m *Message) { m.Data = json.RawMessage(`"/w=="`); m.Base64 = true }),
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":"/w==","encoding":"base64","from":null,"client":null,"ts":1700000000123}`},
		},
		{
			name: "no data is null",
			msg:  with(func(m *Message) { m.Data = nil }),
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":null,"from":null,"client":null,"ts":1700000000123}`},
		},
		{
			name: "data is compacted onto one line",
			msg:  with(func(m *Message) { m.Data = json.RawMessage("{\n  \"a\": [1,\r\n 2]\t}") }),
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":{"a":[1,2]},"from":null,"client":null,"ts":1700000000123}`},
		},
		{
			name: "a string with line separators stays on one line",
			msg:  with(func(m *Message) { m.Data = json.RawMessage(`"a\nb\u2028c"`) }),
			want: []string{`{"id":"ep-7","room":"lobby","event":"message","data":"a\nb\u2028c","from":null,"client":null,"ts":1700000000123}`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := NewEvent(tt.msg, "ep", 7, 1700000000123)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.want {
				got := ev.Envelope(i)
				if string(got) != want {
					t.Errorf("envelope %d:\n got %s\nwant %s", i, got, want)
				}
				if bytes.ContainsAny(got, "\r\n") {
					t.Errorf("envelope %d spans lines: %q", i, got)
				}
				keys := envelopeKeys(t, got)
				wantKeys := []string{"id", "room", "event", "data", "from", "client", "ts"}
				if len(tt.msg.Channels) > 1 {
					wantKeys = slices.Insert(wantKeys, 2, "rooms")
				}
				if tt.msg.Base64 {
					wantKeys = slices.Insert(wantKeys, slices.Index(wantKeys, "data")+1, "encoding")
				}
				if !slices.Equal(keys, wantKeys) {
					t.Errorf("envelope %d keys %v; want %v", i, keys, wantKeys)
				}
			}
		})
	}
}

func TestNewEventStamps(t *testing.T) {
	m := Message{Channels: []string{"a", "b"}, Event: "e", Data: json.RawMessage(`1`)}
	ev, err := NewEvent(m, "ep", 42, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Epoch != "ep" || ev.Seq != 42 || ev.TS != 5 || ev.ID() != "ep-42" {
		t.Fatalf("event stamped %q/%d/%d id %q", ev.Epoch, ev.Seq, ev.TS, ev.ID())
	}
	m.Volatile = true
	vol, err := NewEvent(m, "ep", 43, 5)
	if err != nil {
		t.Fatal(err)
	}
	if vol.Seq != 0 || vol.ID() != "" {
		t.Fatalf("volatile event has Seq %d and id %q; want 0 and none", vol.Seq, vol.ID())
	}
	if got := ev.ChannelIndex("b"); got != 1 {
		t.Fatalf("ChannelIndex(b) = %d", got)
	}
	if got := ev.ChannelIndex("c"); got != -1 {
		t.Fatalf("ChannelIndex(c) = %d; want -1", got)
	}
}

func TestNewEventRejectsInvalidData(t *testing.T) {
	m := Message{Channels: []string{"a"}, Event: "e", Data: json.RawMessage(`{"a":`)}
	if _, err := NewEvent(m, "ep", 1, 1); err == nil {
		t.Fatal("invalid JSON data was encoded")
	}
}

func TestEventExcludes(t *testing.T) {
	ev, err := NewEvent(Message{Channels: []string{"a"}, Event: "e", Exclude: []string{"alice", "bob"}}, "ep", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for client, want := range map[string]bool{"alice": true, "bob": true, "carol": false, "": false} {
		if got := ev.Excludes(client); got != want {
			t.Errorf("Excludes(%q) = %v; want %v", client, got, want)
		}
	}
}

func TestEventID(t *testing.T) {
	tests := []struct {
		id    string
		epoch string
		seq   uint64
	}{
		{"a1b2c3d4-1", "a1b2c3d4", 1},
		{"ep-18446744073709551615", "ep", 1<<64 - 1},
		{"with-dash-5", "with-dash", 5},

		{"", "", 0},
		{"-5", "", 0},
		{"ep-", "", 0},
		{"ep-0", "", 0},
		{"ep-x", "", 0},
		{"ep--1", "ep-", 1},
		{"ep-18446744073709551616", "", 0},
		{"nodash", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			epoch, seq, err := ParseEventID(tt.id)
			if tt.seq == 0 {
				if !errors.Is(err, ErrInvalidCursor) {
					t.Fatalf("ParseEventID(%q) = %q, %d, %v; want ErrInvalidCursor", tt.id, epoch, seq, err)
				}
				return
			}
			if err != nil || epoch != tt.epoch || seq != tt.seq {
				t.Fatalf("ParseEventID(%q) = %q, %d, %v", tt.id, epoch, seq, err)
			}
			if back := FormatEventID(epoch, seq); back != tt.id {
				t.Fatalf("FormatEventID round trip: %q -> %q", tt.id, back)
			}
		})
	}
}

// The envelope is encoded once per channel and shared by every subscriber.
func TestEnvelopeEncodedOnce(t *testing.T) {
	ev, err := NewEvent(Message{Channels: []string{"a"}, Event: "e", Data: json.RawMessage(strings.Repeat(`1`, 10))}, "ep", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() { _ = ev.Envelope(0) })
	first, second := ev.Envelope(0), ev.Envelope(0)
	if allocs != 0 || &first[0] != &second[0] {
		t.Fatalf("Envelope allocates (%v) or returns a copy", allocs)
	}
}
