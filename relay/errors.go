package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// errCode is an error code of the v1 API: an index into codeTable, which
// gives its text, status and default message.
type errCode int

// The error codes, every one the relay writes. To add one: a constant here
// (anywhere before numCodes), its line in codeTable (a line with no
// constant does not compile; TestCodeTable fails on a constant with no
// line), and its row in the Errors table of docs/api.md
// (TestErrorCodesDocumented fails on a code missing there, and on a row
// naming a code that does not exist or another status).
const (
	codeInternal errCode = iota
	codeInvalidRoom
	codeInvalidEvent
	codeReservedEvent
	codeInvalidUser
	codeInvalidJSON
	codeInvalidParameter
	codeInvalidCursor
	codeTooManyRooms
	codeInvalidToken
	codeUnauthenticated
	codeForbidden
	codeBanned
	codeNotFound
	codeUnknownConnection
	codeUnknownNamespace
	codePresenceOff
	codeMethodNotAllowed
	codeRequestTimeout
	codeSingleRoomStream
	codeIdempotencyKeyExpired
	codeClientInUse
	codePayloadTooLarge
	codeUnsupportedMediaType
	codeHostNotAllowed
	codeIdempotencyKeyReused
	codeRateLimited
	codeTooManyConnections
	codeTooManySessions
	codeLimitExceeded
	codeDraining
	codeOverloaded
	codeBackboneUnavailable
	codeOutcomeUnknown
	codeTooManyEvents

	numCodes
)

// codeSpec is a code's line in the table.
type codeSpec struct {
	name    string // what the JSON body's "code" says; stable
	status  int
	message string // what the body says when the error brings none
}

// codeTable is the one table of error codes: every answer's code and status
// come from it.
var codeTable = [numCodes]codeSpec{
	codeInternal:              {"internal", http.StatusInternalServerError, "internal error"},
	codeInvalidRoom:           {"invalid_room", http.StatusBadRequest, "invalid room name"},
	codeInvalidEvent:          {"invalid_event", http.StatusBadRequest, "invalid event name"},
	codeReservedEvent:         {"reserved_event", http.StatusBadRequest, `event names starting with "roomcast:" are reserved`},
	codeInvalidUser:           {"invalid_user", http.StatusBadRequest, "invalid user id"},
	codeInvalidJSON:           {"invalid_json", http.StatusBadRequest, "the body is not valid JSON"},
	codeInvalidParameter:      {"invalid_parameter", http.StatusBadRequest, "invalid parameter"},
	codeInvalidCursor:         {"invalid_cursor", http.StatusBadRequest, "invalid cursor"},
	codeTooManyRooms:          {"too_many_rooms", http.StatusBadRequest, "too many rooms"},
	codeInvalidToken:          {"invalid_token", http.StatusUnauthorized, "invalid token"},
	codeUnauthenticated:       {"unauthenticated", http.StatusUnauthorized, "authentication required"},
	codeForbidden:             {"forbidden", http.StatusForbidden, "forbidden"},
	codeBanned:                {"banned", http.StatusForbidden, "banned"},
	codeNotFound:              {"not_found", http.StatusNotFound, "not found"},
	codeUnknownConnection:     {"unknown_connection", http.StatusNotFound, "unknown connection"},
	codeUnknownNamespace:      {"unknown_namespace", http.StatusNotFound, "unknown namespace"},
	codePresenceOff:           {"presence_off", http.StatusNotFound, "presence is off for this room"},
	codeMethodNotAllowed:      {"method_not_allowed", http.StatusMethodNotAllowed, "method not allowed"},
	codeRequestTimeout:        {"request_timeout", http.StatusRequestTimeout, "the request body did not arrive in time"},
	codeSingleRoomStream:      {"single_room_stream", http.StatusConflict, "the connection is not a multi-room stream"},
	codeIdempotencyKeyExpired: {"idempotency_key_expired", http.StatusConflict, "the publish token expired"},
	codeClientInUse:           {"client_in_use", http.StatusConflict, "the client id belongs to another caller"},
	codePayloadTooLarge:       {"payload_too_large", http.StatusRequestEntityTooLarge, "the body is too large"},
	codeUnsupportedMediaType:  {"unsupported_media_type", http.StatusUnsupportedMediaType, "unsupported Content-Type"},
	codeHostNotAllowed:        {"host_not_allowed", http.StatusMisdirectedRequest, "this relay does not answer to this host"},
	codeIdempotencyKeyReused:  {"idempotency_key_reused", http.StatusUnprocessableEntity, "the publish token named another publish"},
	codeRateLimited:           {"rate_limited", http.StatusTooManyRequests, "too many requests; retry after the Retry-After delay"},
	codeTooManyConnections:    {"too_many_connections", http.StatusTooManyRequests, "too many open connections"},
	codeTooManySessions:       {"too_many_sessions", http.StatusTooManyRequests, "too many sessions"},
	codeLimitExceeded:         {"limit_exceeded", http.StatusTooManyRequests, "limit exceeded"},
	codeDraining:              {"draining", http.StatusServiceUnavailable, "the instance is shutting down; connect to another"},
	codeOverloaded:            {"overloaded", http.StatusServiceUnavailable, "the instance is overloaded; retry after the Retry-After delay"},
	codeBackboneUnavailable:   {"backbone_unavailable", http.StatusServiceUnavailable, "the backbone is unavailable; retry after the Retry-After delay"},
	codeTooManyEvents:         {"too_many_events", http.StatusRequestEntityTooLarge, "too many events in one batch"},
	codeOutcomeUnknown: {"outcome_unknown", http.StatusServiceUnavailable,
		"the backbone did not confirm the write: it may have taken effect; a publish resent with this answer's Idempotency-Key is stored once"},
}

// String is the code as the JSON body spells it.
func (c errCode) String() string { return codeTable[c].name }

// status is the code's HTTP status.
func (c errCode) status() int { return codeTable[c].status }

// apiError is an error the edge answers with its code.
type apiError struct {
	code    errCode
	message string
}

func (e *apiError) Error() string { return e.code.String() + ": " + e.message }

// errorf is an error answered with code and the formatted message.
func errorf(code errCode, format string, args ...any) error {
	return &apiError{code: code, message: fmt.Sprintf(format, args...)}
}

// domainErrors maps the rooms package's sentinels to their codes, in one
// place for the whole API.
var domainErrors = []struct {
	err  error
	code errCode
}{
	{rooms.ErrInvalidRoom, codeInvalidRoom},
	{rooms.ErrInvalidEvent, codeInvalidEvent},
	{rooms.ErrReservedEvent, codeReservedEvent},
	{rooms.ErrInvalidCursor, codeInvalidCursor},
	{rooms.ErrInvalidIdempotency, codeInvalidParameter},
	{rooms.ErrNoSenderConnection, codeInvalidParameter},
	{rooms.ErrTooManyRooms, codeTooManyRooms},
	{rooms.ErrPayloadTooLarge, codePayloadTooLarge},
	{rooms.ErrUnknownConnection, codeUnknownConnection},
	{rooms.ErrClientInUse, codeClientInUse},
	{rooms.ErrClientsFull, codeOverloaded},
	{rooms.ErrSingleRoom, codeSingleRoomStream},
	{rooms.ErrDraining, codeDraining},
	{auth.ErrInvalidToken, codeInvalidToken},
	{rooms.ErrUnauthenticated, codeUnauthenticated},
	{rooms.ErrBanned, codeBanned},
	{rooms.ErrForbidden, codeForbidden},
	{rooms.ErrUnknownNamespace, codeUnknownNamespace},
	{rooms.ErrInvalidUser, codeInvalidUser},
	{rooms.ErrPresenceOff, codePresenceOff},
	{rooms.ErrNotFound, codeNotFound},
	{rooms.ErrPublishTokenExpired, codeIdempotencyKeyExpired},
	{rooms.ErrPublishTokenReused, codeIdempotencyKeyReused},
	{rooms.ErrOutcomeUnknown, codeOutcomeUnknown},
	{rooms.ErrBackboneDown, codeBackboneUnavailable},
	{rooms.ErrTooManySessions, codeTooManySessions},
	{rooms.ErrLimitExceeded, codeLimitExceeded},
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers err as {"error":{"code","message"}} with its status.
func writeError(w http.ResponseWriter, err error) {
	var rl *rateLimitError
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", rl.header())
		msg := rl.msg
		if msg == "" {
			msg = rl.code.message()
		}
		writeCode(w, rl.code, msg)
		return
	}
	code, msg := classify(err)
	switch code.status() {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="roomcast"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	case http.StatusTooManyRequests:
		// Held state is freed as it expires or its holder ends it.
		w.Header().Set("Retry-After", strconv.Itoa(quotaRetryAfterSeconds))
	}
	writeCode(w, code, msg)
}

// writeCode writes the error body of code with msg, and its status. Callers
// set any header the answer needs first; writeError is the one to use
// unless the answer's headers differ from its.
func writeCode(w http.ResponseWriter, code errCode, msg string) {
	writeJSON(w, code.status(), errorBody{Error: errorDetail{Code: code.String(), Message: msg}})
}

// message is the code's default message.
func (c errCode) message() string { return codeTable[c].message }

// retryAfterSeconds is what a 503 asks clients to wait.
const retryAfterSeconds = 2

// quotaRetryAfterSeconds is what a 429 for held state asks clients to wait:
// poll sessions and leases last seconds, keys and tickets minutes.
const quotaRetryAfterSeconds = 5

func classify(err error) (code errCode, msg string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.code, ae.message
	}
	if errors.Is(err, rooms.ErrOutcomeUnknown) {
		// Before ErrBackboneDown, which it also matches.
		return codeOutcomeUnknown, codeOutcomeUnknown.message()
	}
	if errors.Is(err, rooms.ErrLimitExceeded) {
		// Checked first: a bound the backbone enforces reaches the edge
		// wrapped as a backbone failure too.
		return codeLimitExceeded, limitMessage(err)
	}
	if errors.Is(err, rooms.ErrNotTried) {
		return codeBackboneUnavailable, "not tried: the backbone failed an earlier event of this batch; nothing of this one was stored"
	}
	if errors.Is(err, rooms.ErrBackboneDown) {
		// The cause names internal addresses: it is for the logs, not
		// for clients.
		return codeBackboneUnavailable, codeBackboneUnavailable.message()
	}
	for _, d := range domainErrors {
		if errors.Is(err, d.err) {
			return d.code, err.Error()
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codeBackboneUnavailable, "the backbone did not answer in time"
	}
	return codeInternal, codeInternal.message()
}

// limitMessage is err's text from the bound on: the wrapping names
// internal steps.
func limitMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, rooms.ErrLimitExceeded.Error()); i > 0 {
		return msg[i:]
	}
	return msg
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"` + codeInternal.String() + `","message":"encode failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
