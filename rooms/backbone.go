package rooms

import (
	"context"
	"time"
)

// Receiver is handed the live events of the channels it subscribed to.
// Backbones tell receivers apart with ==, so a Receiver must be comparable
// (a pointer, typically).
type Receiver interface {
	// Receive hands over ev as published on its channel ev.Channels[i]. It
	// is called once per event and subscribed channel, in Seq order per
	// channel. It must not block: it runs on the backbone's delivery path.
	Receive(ev *Event, i int)
}

// Backbone stores history and carries live events between the instances of a
// relay. Implementations must pass the suite in rooms/backbonetest.
//
// Guarantees every implementation makes:
//   - Publish of a non-volatile message appends it to the history of every
//     one of its channels under ONE Seq, and delivers it live, atomically: a
//     receiver never gets a live event that is not in history, and live order
//     equals history order within a channel.
//   - Seq grows strictly across all channels of one epoch, so events of
//     different channels can be merged into one order.
//   - An event is delivered to a Receiver for each channel it subscribed to,
//     at most once per subscription; every event with Seq above the head
//     returned by Subscribe is delivered, in Seq order per channel, unless the
//     backbone reports its loss by changing its epoch.
//   - History keeps at least the configured number of events per channel and
//     for at least the configured age, and says when a requested position is
//     older than what it keeps.
//   - Volatile messages are delivered live only, best effort, with Seq 0.
type Backbone interface {
	// Publish accepts m. When idemKey is not empty and a message with the
	// same key was accepted within the retention window, Publish publishes
	// nothing and returns the first result with Duplicate set.
	//
	// Every publish is named by a PublishToken: m.Token, or else one the
	// backbone mints where an answer can be lost on the way, recorded in the same atomic step as the event and kept for
	// PublishTokenWindow (plus PublishTokenSkew), not for the history's age.
	// A publish whose token was accepted before publishes nothing: when m
	// carries the token (a resend) it returns the first result's ID and Seq
	// with Duplicate set; when the backbone minted it (its own retry of a
	// request whose answer was lost) it returns the first result as is.
	// A token minted outside the window is refused with
	// ErrPublishTokenExpired. When Publish cannot tell whether m was stored
	// (the request was sent and no answer came) it returns an
	// *OutcomeUnknownError naming the token to resend with; it returns
	// other errors only when nothing was stored. A multi-channel publish
	// has one token, whatever the channels.
	Publish(ctx context.Context, m Message, idemKey string) (Published, error)
	// Subscribe registers r for live events of channel and returns the
	// channel's head at that moment (see Head).
	Subscribe(ctx context.Context, channel string, r Receiver) (head uint64, err error)
	// Unsubscribe undoes Subscribe; events already in flight may still arrive.
	Unsubscribe(ctx context.Context, channel string, r Receiver) error
	// Since returns the retained events of channel with Seq greater than
	// after, oldest first, at most limit of them.
	Since(ctx context.Context, channel string, after uint64, limit int) (History, error)
	// Before returns the newest retained events of channel with Seq lower
	// than before (0: no bound), at most limit, oldest first.
	Before(ctx context.Context, channel string, before uint64, limit int) ([]*Event, error)
	// Head returns the Seq of the last event accepted on channel. For a
	// channel without events it may be 0 or any Seq up to the current one:
	// every later event of the channel is above it either way.
	Head(ctx context.Context, channel string) (uint64, error)
	// Epoch names the current history; a new epoch means earlier positions
	// are meaningless.
	Epoch(ctx context.Context) (string, error)
	// SaveSession stores the channel set of a multi-room session for ttl.
	SaveSession(ctx context.Context, id string, channels []string, ttl time.Duration) error
	// LoadSession returns a session's channels; ok is false when it expired or never existed.
	LoadSession(ctx context.Context, id string) (channels []string, ok bool, err error)
}

// Published is a backbone's answer to an accepted publish.
type Published struct {
	// ID is the event's id, "" for volatile events.
	ID string
	// Seq is the event's position, 0 for volatile events.
	Seq uint64
	// Channels and Event repeat what was published, so that a duplicate
	// publish answers exactly what the first one did.
	Channels []string
	Event    string
	// Duplicate is set when an earlier publish with the same idempotency key,
	// or a resend's token, answered this.
	Duplicate bool
}

// History is a page of retained events.
type History struct {
	Events []*Event
	// Truncated is set when events after the requested position were
	// dropped by retention: the page starts at the oldest retained event,
	// and the gap cannot be replayed.
	Truncated bool
	// More is set when limit cut the page short.
	More bool
}

// Claimer is implemented by backbones that can record a key exactly once
// across every instance that shares them, for single-use credentials.
type Claimer interface {
	// ClaimOnce returns true the first time key is claimed within ttl, and
	// false on every later claim.
	ClaimOnce(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// BackboneAs finds an optional interface (Directory, Claimer, ...) on bb or
// on the backbones it wraps; wrappers expose what they wrap with
// Unwrap() Backbone.
func BackboneAs[T any](bb Backbone) (T, bool) {
	for bb != nil {
		if t, ok := bb.(T); ok {
			return t, true
		}
		u, ok := bb.(interface{ Unwrap() Backbone })
		if !ok {
			break
		}
		bb = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Limiter is implemented by backbones that keep rate limits for every
// instance sharing them.
type Limiter interface {
	// Take spends one request of key's allowance of rate per second with
	// burst; when there is none it returns false and when to retry.
	Take(ctx context.Context, key string, rate float64, burst int) (ok bool, retryAfter time.Duration, err error)
	// TakeAll spends one request of every limit's allowance, atomically:
	// when any has none left, it spends none and returns false and the
	// longest wait. Keys of one call may be required to share a Redis
	// Cluster hash tag.
	TakeAll(ctx context.Context, limits []RateLimit) (ok bool, retryAfter time.Duration, err error)
}

// SlotCounter is implemented by backbones that count connections for every
// instance sharing them. A slot is held until released or, when its
// instance stops renewing it (it died), until its lease runs out.
type SlotCounter interface {
	// AcquireSlot takes (or renews) slot id of key's limit for ttl; ok is
	// false when key already holds limit other slots.
	AcquireSlot(ctx context.Context, key, id string, limit int, ttl time.Duration) (ok bool, err error)
	// ReleaseSlot gives slot id of key back.
	ReleaseSlot(ctx context.Context, key, id string) error
}
