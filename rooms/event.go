package rooms

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// MaxEventRooms is the most rooms one event may be published to at once.
const MaxEventRooms = 64

// Sender is the identity an event is stamped with. It is set by the server,
// never taken from an ordinary client's request.
type Sender struct {
	User string `json:"user"`
	Name string `json:"name"`
}

// Message is what a publisher asks the backbone to deliver.
type Message struct {
	// Channels are the canonical names of the channels (rooms) the message
	// goes to; at least one, at most MaxEventRooms, without duplicates.
	Channels []string
	// Event is the event name, already validated.
	Event string
	// Data is one compact JSON value: it never contains a line break.
	Data json.RawMessage
	// Base64 marks Data as a JSON string holding base64 of a non-UTF-8 body.
	Base64 bool
	// From is the sender's identity, nil for anonymous senders.
	From *Sender
	// Client is the sending client's id, "" when unknown.
	Client string
	// Exclude lists client ids that must not receive the message.
	Exclude []string
	// Volatile messages are not retained, carry no id and may be dropped.
	Volatile bool
	// Retention overrides the backbone's history limits for the message's
	// channels (zero fields: the backbone's own).
	Retention Retention
	// Token is set when the message is resent with the token of an earlier
	// publish whose outcome was unknown (see Backbone.Publish); the zero
	// token asks the backbone to mint one.
	Token PublishToken
	// Caller names who asks ("user:bob", "server"; "" for anonymous
	// callers, whose tokens are bare capabilities): a token answers only
	// the caller it was handed to (see Message.TokenRecord).
	Caller string
}

// Retention is how much history a channel keeps: at most Size events, none
// older than Age.
type Retention struct {
	Size int
	Age  time.Duration
}

// Event is a Message as the backbone accepted it: stamped with a position and
// time, and encoded once per channel for every subscriber to share.
// An Event is immutable once created.
type Event struct {
	Message
	// Epoch identifies the history the event belongs to; it changes when
	// the backbone's history is lost.
	Epoch string
	// Seq orders all events of one epoch across every channel; 0 for volatile events.
	Seq uint64
	// TS is the server time of acceptance in Unix milliseconds.
	TS int64

	envelopes [][]byte
	// cursors caches, per channel, the cursor of a single-room subscriber
	// that has just seen this event: the same for every such subscriber.
	cursors []atomic.Pointer[cachedCursor]
}

// cachedCursor is a signed cursor and the positions it stands for.
type cachedCursor struct {
	epoch     string
	positions []Position
	text      []byte
}

// envelope is the frozen v1 wire shape of an event.
type envelope struct {
	ID       *string         `json:"id"`
	Room     string          `json:"room"`
	Rooms    []string        `json:"rooms,omitempty"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	Encoding string          `json:"encoding,omitempty"`
	From     *Sender         `json:"from"`
	Client   *string         `json:"client"`
	TS       int64           `json:"ts"`
}

// NewEvent stamps m and encodes its envelope for each of its channels.
// Backbones call it once per accepted message.
func NewEvent(m Message, epoch string, seq uint64, ts int64) (*Event, error) {
	e := &Event{Message: m, Epoch: epoch, Seq: seq, TS: ts}
	if m.Volatile {
		e.Seq = 0
	}
	env := envelope{Event: m.Event, Data: m.Data, From: m.From, TS: ts}
	if len(env.Data) == 0 {
		env.Data = json.RawMessage("null")
	}
	if !m.Volatile {
		id := e.ID()
		env.ID = &id
	}
	if m.Base64 {
		env.Encoding = "base64"
	}
	if m.Client != "" {
		c := m.Client
		env.Client = &c
	}
	if len(m.Channels) > 1 {
		env.Rooms = make([]string, len(m.Channels))
		for i, ch := range m.Channels {
			env.Rooms[i] = DisplayName(ch)
		}
	}
	e.envelopes = make([][]byte, len(m.Channels))
	e.cursors = make([]atomic.Pointer[cachedCursor], len(m.Channels))
	for i, ch := range m.Channels {
		env.Room = DisplayName(ch)
		b, err := json.Marshal(env)
		if err != nil {
			return nil, fmt.Errorf("encode envelope: %w", err)
		}
		e.envelopes[i] = b
	}
	return e, nil
}

// ID returns the event's id, "" for a volatile event.
func (e *Event) ID() string {
	if e.Volatile {
		return ""
	}
	return FormatEventID(e.Epoch, e.Seq)
}

// Position returns the event's position in its channel i, the order of
// that channel's history; 0 for a volatile event. Positions of different
// channels are never compared: today each is the epoch-wide Seq.
func (e *Event) Position(i int) uint64 { return e.Seq }

// sameAs reports whether e and o are copies of one event: with Redis
// each channel's copy is decoded on its own. The event's id says it.
func (e *Event) sameAs(o *Event) bool {
	return e == o || !e.Volatile && e.Epoch == o.Epoch && e.Seq == o.Seq
}

// Envelope returns the encoded envelope of the event as seen through channel
// index i. The slice is shared: callers must not modify it.
func (e *Event) Envelope(i int) []byte { return e.envelopes[i] }

// ChannelIndex returns the index of ch in the event's channels, or -1.
func (e *Event) ChannelIndex(ch string) int {
	for i, c := range e.Channels {
		if c == ch {
			return i
		}
	}
	return -1
}

// Excludes reports whether client must not receive the event.
func (e *Event) Excludes(client string) bool {
	return client != "" && slices.Contains(e.Exclude, client)
}

// FormatEventID returns the public id of the event at seq in epoch.
func FormatEventID(epoch string, seq uint64) string {
	return epoch + "-" + strconv.FormatUint(seq, 10)
}

// ParseEventID splits an id made by FormatEventID.
func ParseEventID(id string) (epoch string, seq uint64, err error) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, fmt.Errorf("%w: event id %q", ErrInvalidCursor, truncate(id))
	}
	seq, err = strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, fmt.Errorf("%w: event id %q", ErrInvalidCursor, truncate(id))
	}
	return id[:i], seq, nil
}

// DisplayName is the room name subscribers see for a channel.
func DisplayName(channel string) string { return channel }
