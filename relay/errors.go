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

// apiError is an error the edge answers with a given status and code.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) error {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// Error codes of the v1 API that are not mapped from domain errors.
const (
	codeInvalidJSON          = "invalid_json"
	codePayloadTooLarge      = "payload_too_large"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeInvalidParameter     = "invalid_parameter"
	codeNotFound             = "not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeHostNotAllowed       = "host_not_allowed"
	codeRequestTimeout       = "request_timeout"
	codeInternal             = "internal"
)

// domainErrors maps the rooms package's sentinels to status and code, in
// one place for the whole API.
var domainErrors = []struct {
	err    error
	status int
	code   string
}{
	{rooms.ErrInvalidRoom, http.StatusBadRequest, "invalid_room"},
	{rooms.ErrInvalidEvent, http.StatusBadRequest, "invalid_event"},
	{rooms.ErrReservedEvent, http.StatusBadRequest, "reserved_event"},
	{rooms.ErrInvalidCursor, http.StatusBadRequest, "invalid_cursor"},
	{rooms.ErrInvalidIdempotency, http.StatusBadRequest, codeInvalidParameter},
	{rooms.ErrNoSenderConnection, http.StatusBadRequest, codeInvalidParameter},
	{rooms.ErrTooManyRooms, http.StatusBadRequest, "too_many_rooms"},
	{rooms.ErrPayloadTooLarge, http.StatusRequestEntityTooLarge, codePayloadTooLarge},
	{rooms.ErrUnknownConnection, http.StatusNotFound, "unknown_connection"},
	{rooms.ErrClientInUse, http.StatusConflict, "client_in_use"},
	{rooms.ErrClientsFull, http.StatusServiceUnavailable, "overloaded"},
	{rooms.ErrSingleRoom, http.StatusConflict, "single_room_stream"},
	{rooms.ErrDraining, http.StatusServiceUnavailable, "draining"},
	{auth.ErrInvalidToken, http.StatusUnauthorized, "invalid_token"},
	{rooms.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{rooms.ErrBanned, http.StatusForbidden, "banned"},
	{rooms.ErrForbidden, http.StatusForbidden, "forbidden"},
	{rooms.ErrUnknownNamespace, http.StatusNotFound, "unknown_namespace"},
	{rooms.ErrInvalidUser, http.StatusBadRequest, "invalid_user"},
	{rooms.ErrPresenceOff, http.StatusNotFound, "presence_off"},
	{rooms.ErrNotFound, http.StatusNotFound, codeNotFound},
	{rooms.ErrPublishTokenExpired, http.StatusConflict, "idempotency_key_expired"},
	{rooms.ErrPublishTokenReused, http.StatusUnprocessableEntity, "idempotency_key_reused"},
	{rooms.ErrOutcomeUnknown, http.StatusServiceUnavailable, "outcome_unknown"},
	{rooms.ErrBackboneDown, http.StatusServiceUnavailable, "backbone_unavailable"},
	{rooms.ErrTooManySessions, http.StatusTooManyRequests, "too_many_sessions"},
	{rooms.ErrLimitExceeded, http.StatusTooManyRequests, "limit_exceeded"},
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
		code, msg := rl.code, rl.msg
		if code == "" {
			code, msg = "rate_limited", "too many requests; retry after the Retry-After delay"
		}
		writeJSON(w, http.StatusTooManyRequests, errorBody{Error: errorDetail{Code: code, Message: msg}})
		return
	}
	status, code, msg := classify(err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="roomcast"`)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	if status == http.StatusTooManyRequests {
		// Held state is freed as it expires or its holder ends it.
		w.Header().Set("Retry-After", strconv.Itoa(quotaRetryAfterSeconds))
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

// retryAfterSeconds is what a 503 asks clients to wait.
const retryAfterSeconds = 2

// quotaRetryAfterSeconds is what a 429 for held state asks clients to wait:
// poll sessions and leases last seconds, keys and tickets minutes.
const quotaRetryAfterSeconds = 5

func classify(err error) (status int, code, msg string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code, ae.message
	}
	if errors.Is(err, rooms.ErrOutcomeUnknown) {
		// Before ErrBackboneDown, which it also matches.
		return http.StatusServiceUnavailable, "outcome_unknown",
			"the backbone did not confirm the write: it may have taken effect; a publish resent with this answer's Idempotency-Key is stored once"
	}
	if errors.Is(err, rooms.ErrLimitExceeded) {
		// Checked first: a bound the backbone enforces reaches the edge
		// wrapped as a backbone failure too.
		return http.StatusTooManyRequests, "limit_exceeded", limitMessage(err)
	}
	if errors.Is(err, rooms.ErrBackboneDown) {
		// The cause names internal addresses: it is for the logs, not
		// for clients.
		return http.StatusServiceUnavailable, "backbone_unavailable", "the backbone is unavailable; retry after the Retry-After delay"
	}
	for _, d := range domainErrors {
		if errors.Is(err, d.err) {
			return d.status, d.code, err.Error()
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusServiceUnavailable, "backbone_unavailable", "the backbone did not answer in time"
	}
	return http.StatusInternalServerError, codeInternal, "internal error"
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
		b = []byte(`{"error":{"code":"internal","message":"encode failed"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
