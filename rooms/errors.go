// Package rooms is roomcast's domain: rooms and their names, events and their
// envelopes, cursors, history, the local fan-out hub and the Backbone contract
// that replicates events between instances. It knows nothing of HTTP.
package rooms

import "errors"

// Sentinel errors returned (wrapped with detail) by this package. The HTTP
// edge maps each one, in one place, to a status and an error code.
var (
	ErrInvalidRoom        = errors.New("invalid room")
	ErrInvalidEvent       = errors.New("invalid event name")
	ErrReservedEvent      = errors.New("reserved event name")
	ErrInvalidCursor      = errors.New("invalid cursor")
	ErrUnknownConnection  = errors.New("unknown connection")
	ErrTooManyRooms       = errors.New("too many rooms")
	ErrBackboneDown       = errors.New("backbone unavailable")
	ErrDraining           = errors.New("draining")
	ErrInvalidIdempotency = errors.New("invalid idempotency key")
	// ErrPayloadTooLarge refuses a publish whose body is over the limit
	// of one of its targets.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrOutcomeUnknown is returned, as an *OutcomeUnknownError, when a
	// publish may or may not have been stored: the request reached the
	// backbone and its answer did not come back. It also matches
	// ErrBackboneDown.
	ErrOutcomeUnknown = errors.New("publish outcome unknown")
	// ErrNotTried answers the publishes of a batch left after the backbone
	// failed an earlier one's checks: nothing of them was spent or stored.
	// It also matches ErrBackboneDown.
	ErrNotTried = errors.New("not tried")
	// ErrPublishTokenExpired refuses a resend whose token is too old for
	// the backbone to tell whether it was stored (see PublishTokenWindow).
	ErrPublishTokenExpired = errors.New("publish token expired")
	// ErrPublishTokenReused refuses a resend whose token named another
	// message of its caller (other rooms, event or body): answering it with
	// that publish's event would confirm an event stored nowhere.
	ErrPublishTokenReused = errors.New("publish token reused for another message")
	// ErrClientInUse: the client id is bound to another caller.
	ErrClientInUse = errors.New("client id in use")
	// ErrClientsFull: the store of client-id bindings is at its bound.
	ErrClientsFull = errors.New("too many client ids")
)

// OutcomeUnknownError is a publish that may have been stored. Publishing
// the same message again with Token is answered with the stored event when
// the first one was stored, and stores it otherwise: never twice.
type OutcomeUnknownError struct {
	Token PublishToken
	Err   error // the cause, matching ErrBackboneDown
}

func (e *OutcomeUnknownError) Error() string {
	return ErrOutcomeUnknown.Error() + ": " + e.Err.Error()
}

// Is makes the error match ErrOutcomeUnknown.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Unwrap returns the cause.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Sentinels of the per-caller and global bounds on the state requests
// create (see Quota).
var (
	// ErrTooManySessions refuses a long-poll that would keep one more
	// connection parked between polls than its caller may.
	ErrTooManySessions = errors.New("too many poll sessions")
	// ErrLimitExceeded refuses a request that would hold more of some
	// state (presence leases, idempotency keys, tickets) than its caller,
	// or everyone together, may.
	ErrLimitExceeded = errors.New("limit exceeded")
)
