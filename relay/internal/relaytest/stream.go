package relaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// Event is one event as r3labs/sse's Client parsed it. The client fills ID
// of an event without an id line with the last id it saw, so "no id line"
// is asserted with RawStream instead.
type Event struct {
	ID, Event, Data, Retry string
}

// Envelope is the v1 envelope, with raw values where the exact JSON matters.
type Envelope struct {
	ID       *string         `json:"id"`
	Room     string          `json:"room"`
	Rooms    []string        `json:"rooms"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	Encoding string          `json:"encoding"`
	From     json.RawMessage `json:"from"`
	Client   *string         `json:"client"`
	TS       int64           `json:"ts"`
}

// Envelope decodes the event's data as an envelope.
func (e Event) Envelope(t testing.TB) Envelope {
	t.Helper()
	var env Envelope
	if err := json.Unmarshal([]byte(e.Data), &env); err != nil {
		t.Fatalf("event %q: data is not an envelope (%v): %q", e.Event, err, e.Data)
	}
	return env
}

// EventID returns the envelope's id, "" when it is null.
func (e Event) EventID(t testing.TB) string {
	t.Helper()
	if id := e.Envelope(t).ID; id != nil {
		return *id
	}
	return ""
}

// Connected is the data of roomcast:connected.
type Connected struct {
	Connection string   `json:"connection"`
	Client     string   `json:"client"`
	Proof      string   `json:"proof"`
	Rooms      []string `json:"rooms"`
}

// StreamOptions configure Subscribe.
type StreamOptions struct {
	// LastEventID is the cursor the first request resumes from, sent as
	// the Last-Event-ID header.
	LastEventID string
	// Header is sent with every request.
	Header map[string]string
	// Reconnect makes the stream behave like a browser's EventSource:
	// when the server ends it, it reconnects to the same URL with the
	// last id it saw, and (as roomcast.js does) the client proof of its
	// last roomcast:connected as ?proof=, so that an anonymous client
	// keeps its id. Without it, the stream ends with the response.
	Reconnect bool
	// ReconnectGate, when set, is received from before each reconnect,
	// so a test can act while the client is away.
	ReconnectGate <-chan struct{}
}

// Stream is one SSE subscription read by its own r3labs/sse Client (the
// client keeps the last event id per Client, so streams never share one).
// Events are collected without bound so the reader never stalls.
type Stream struct {
	Client *sse.Client

	cancel context.CancelFunc
	done   chan struct{}
	notify chan struct{}

	mu          sync.Mutex
	proof       string // of the last roomcast:connected
	events      []Event
	read        int
	header      http.Header
	connects    int
	disconnects int
	ended       bool
	err         error
}

// clientBuffer lifts r3labs/sse's 64 KiB line cap above any envelope the
// tests send.
const clientBuffer = 4 << 20

// Subscribe opens an SSE stream on path and reads it until the test ends
// or Close.
func (r *Relay) Subscribe(t testing.TB, path string, opts StreamOptions) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := sse.NewClient(r.URL+path, sse.ClientMaxBufferSize(clientBuffer))
	c.Connection = r.Client()
	for k, v := range opts.Header {
		c.Headers[k] = v
	}
	if opts.LastEventID != "" {
		c.LastEventID.Store([]byte(opts.LastEventID))
	}
	s := &Stream{Client: c, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	if opts.Reconnect {
		// The default backoff gives up after 15 minutes and ignores the
		// context.
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = 10 * time.Millisecond
		b.MaxInterval = 200 * time.Millisecond
		b.MaxElapsedTime = 0
		c.ReconnectStrategy = backoff.WithContext(b, ctx)
	} else {
		c.ReconnectStrategy = &backoff.StopBackOff{}
	}
	c.ResponseValidator = func(_ *sse.Client, resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		s.mu.Lock()
		s.header = resp.Header.Clone()
		s.connects++
		s.mu.Unlock()
		s.signal()
		return nil
	}
	go func() {
		defer close(s.done)
		for {
			// A clean end of the response returns nil and is not
			// retried by the client: reconnecting is up to us.
			err := c.SubscribeWithContext(ctx, "", s.add)
			s.mu.Lock()
			s.disconnects++
			s.mu.Unlock()
			s.signal()
			if ctx.Err() != nil || !opts.Reconnect || err != nil {
				s.mu.Lock()
				s.ended, s.err = true, err
				s.mu.Unlock()
				s.signal()
				return
			}
			if opts.ReconnectGate != nil {
				select {
				case <-opts.ReconnectGate:
				case <-ctx.Done():
				}
			}
			s.mu.Lock()
			if s.proof != "" {
				c.URL = withQuery(r.URL+path, "proof", s.proof)
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *Stream) add(msg *sse.Event) {
	s.mu.Lock()
	if string(msg.Event) == "roomcast:connected" {
		var c Connected
		if json.Unmarshal(msg.Data, &c) == nil && c.Proof != "" {
			s.proof = c.Proof
		}
	}
	s.events = append(s.events, Event{ID: string(msg.ID), Event: string(msg.Event), Data: string(msg.Data), Retry: string(msg.Retry)})
	s.mu.Unlock()
	s.signal()
}

func (s *Stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Close disconnects the stream and waits for its reader to stop.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// Header returns the headers of the last successful response.
func (s *Stream) Header() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.header
}

// Connects returns how many responses the stream has been given.
func (s *Stream) Connects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connects
}

// Disconnects returns how many times a response ended.
func (s *Stream) Disconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disconnects
}

// LastEventID returns the id the client would resume from.
func (s *Stream) LastEventID() string {
	b, _ := s.Client.LastEventID.Load().([]byte)
	return string(b)
}

// Next returns the next event of any kind, including retry-only blocks,
// failing the test if none comes within Wait or the stream ended.
func (s *Stream) Next(t testing.TB) Event {
	t.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.read < len(s.events) {
			ev := s.events[s.read]
			s.read++
			s.mu.Unlock()
			return ev
		}
		ended, err := s.ended, s.err
		s.mu.Unlock()
		if ended {
			t.Fatalf("stream ended (%v) while an event was expected", err)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			t.Fatalf("no event within %s", Wait)
		}
	}
}

// NextEvent returns the next event that is not a retry-only block.
func (s *Stream) NextEvent(t testing.TB) Event {
	t.Helper()
	for {
		if ev := s.Next(t); ev.Event != "" || ev.Data != "" {
			return ev
		}
	}
}

// Expect returns the next event that is not a retry-only block and fails
// unless it is named name.
func (s *Stream) Expect(t testing.TB, name string) Event {
	t.Helper()
	ev := s.NextEvent(t)
	if ev.Event != name {
		t.Fatalf("got event %q (data %.200s), want %q", ev.Event, ev.Data, name)
	}
	return ev
}

// Connected reads up to roomcast:connected, which must come before any
// other event, and returns its data.
func (s *Stream) Connected(t testing.TB) Connected {
	t.Helper()
	ev := s.Expect(t, "roomcast:connected")
	var c Connected
	if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
		t.Fatalf("roomcast:connected data %q: %v", ev.Data, err)
	}
	return c
}

// Until returns the events up to and including the first one for which
// stop is true, skipping retry-only blocks.
func (s *Stream) Until(t testing.TB, stop func(Event) bool) []Event {
	t.Helper()
	var out []Event
	for {
		ev := s.NextEvent(t)
		out = append(out, ev)
		if stop(ev) {
			return out
		}
	}
}

// UntilEventID reads up to the event whose envelope id is id.
func (s *Stream) UntilEventID(t testing.TB, id string) []Event {
	t.Helper()
	return s.Until(t, func(ev Event) bool {
		return !isSystem(ev.Event) && ev.EventID(t) == id
	})
}

// WaitEnded waits until the stream's response ended for good.
func (s *Stream) WaitEnded(t testing.TB) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(Wait):
		t.Fatalf("stream did not end within %s", Wait)
	}
}

func isSystem(name string) bool {
	return len(name) >= len("roomcast:") && name[:len("roomcast:")] == "roomcast:"
}

// withQuery returns u with the query parameter name set to value.
func withQuery(u, name, value string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := p.Query()
	q.Set(name, value)
	p.RawQuery = q.Encode()
	return p.String()
}
