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
)
