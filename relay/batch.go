package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// POST /v1/batch: up to rooms.MaxBatchEvents publishes in one request, a
// JSON array or NDJSON (one event per line), each to its own target. Each
// event goes through the same publish operation as a single publish; the
// answer is 200 with one result per event, in order, as soon as the batch
// could be read.

// batchJSON is one event of a batch: a publish body and its target.
type batchJSON struct {
	Room           *string         `json:"room"`
	Rooms          []string        `json:"rooms"`
	User           *string         `json:"user"`
	Namespace      *string         `json:"namespace"`
	Event          *string         `json:"event"`
	Data           json.RawMessage `json:"data"`
	Volatile       bool            `json:"volatile"`
	ExcludeSelf    bool            `json:"exclude_self"`
	From           *rooms.Sender   `json:"from"`
	Exclude        []string        `json:"exclude"`
	IdempotencyKey string          `json:"idempotency_key"`
}

// batchEvent is one event of a batch as read: its publish body, channels
// and key, or why it cannot be published.
type batchEvent struct {
	body     publishBody
	channels []string
	key      string
	size     int64
	err      error
}

// parseBatch reads a batch body: a JSON array of events (application/json
// or any +json type) or NDJSON (application/x-ndjson), one event per
// non-blank line. A body that cannot be read as a batch is an error; an
// event that cannot be published (a line that is not JSON, an unknown
// field, a bad target) is an error of that event alone.
func parseBatch(contentType string, body []byte) ([]batchEvent, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, errorf(codeUnsupportedMediaType,
			"POST /v1/batch takes a JSON array (application/json) or NDJSON (application/x-ndjson)")
	}
	if !utf8.Valid(body) {
		return nil, errorf(codeInvalidJSON, "the body is not valid UTF-8")
	}
	var raws [][]byte
	switch {
	case mt == "application/x-ndjson":
		raws, err = splitNDJSON(body)
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		raws, err = splitJSONArray(body)
	default:
		return nil, errorf(codeUnsupportedMediaType,
			"%s is not accepted: POST /v1/batch takes a JSON array (application/json) or NDJSON (application/x-ndjson)", mt)
	}
	if err != nil {
		return nil, err
	}
	if len(raws) == 0 {
		return nil, errorf(codeInvalidParameter, "the batch holds no events")
	}
	events := make([]batchEvent, len(raws))
	for i, raw := range raws {
		events[i] = decodeBatchEvent(raw)
	}
	return events, nil
}

func tooManyEvents() error {
	return errorf(codeTooManyEvents, "a batch holds at most %d events", rooms.MaxBatchEvents)
}

// splitNDJSON cuts body into its non-blank lines.
func splitNDJSON(body []byte) ([][]byte, error) {
	var out [][]byte
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(out) == rooms.MaxBatchEvents {
			return nil, tooManyEvents()
		}
		out = append(out, line)
	}
	return out, nil
}

// splitJSONArray cuts a JSON array into its elements; anything but one
// well-formed array is unreadable.
func splitJSONArray(body []byte) ([][]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, errorf(codeInvalidJSON, "the body must be a JSON array of events (or NDJSON sent as application/x-ndjson)")
	}
	var out [][]byte
	for dec.More() {
		if len(out) == rooms.MaxBatchEvents {
			return nil, tooManyEvents()
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errorf(codeInvalidJSON, "the batch is not a valid JSON array: %s", jsonProblem(err))
		}
		out = append(out, raw)
	}
	if _, err := dec.Token(); err != nil {
		return nil, errorf(codeInvalidJSON, "the batch is not a valid JSON array: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(codeInvalidJSON, "the body holds more than one JSON value")
	}
	return out, nil
}

// decodeBatchEvent reads one event of a batch.
func decodeBatchEvent(raw []byte) batchEvent {
	ev := batchEvent{size: int64(len(raw))}
	fail := func(err error) batchEvent { ev.err = err; return ev }
	var in batchJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fail(errorf(codeInvalidJSON, "the event is not a valid publish object: %s", jsonProblem(err)))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(errorf(codeInvalidJSON, "the event holds more than one JSON value"))
	}
	if bytes.HasPrefix(raw, []byte("null")) {
		return fail(errorf(codeInvalidJSON, "the event must be a JSON object"))
	}
	if err := checkIdempotencyKey(in.IdempotencyKey); err != nil {
		return fail(err)
	}
	ev.key = in.IdempotencyKey
	var err error
	if ev.channels, err = batchTarget(in); err != nil {
		return fail(err)
	}
	ev.body = publishBody{Event: "message", Volatile: in.Volatile, ExcludeSelf: in.ExcludeSelf, From: in.From, Exclude: in.Exclude}
	if in.Event != nil {
		ev.body.Event = *in.Event
	}
	if err := rooms.ValidateEventName(ev.body.Event); err != nil {
		return fail(err)
	}
	ev.body.Data = json.RawMessage("null")
	if len(in.Data) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, in.Data); err != nil {
			return fail(errorf(codeInvalidJSON, "data is not valid JSON"))
		}
		ev.body.Data = buf.Bytes()
	}
	return ev
}

// batchTarget is the channels of the one target an event names.
func batchTarget(in batchJSON) ([]string, error) {
	named := 0
	for _, set := range []bool{in.Room != nil, in.Rooms != nil, in.User != nil, in.Namespace != nil} {
		if set {
			named++
		}
	}
	if named != 1 {
		return nil, errorf(codeInvalidParameter, `an event names exactly one target: "room", "rooms", "user" or "namespace"`)
	}
	switch {
	case in.Room != nil:
		room, err := rooms.ParseRoom(*in.Room)
		if err != nil {
			return nil, err
		}
		return []string{room.String()}, nil
	case in.Rooms != nil:
		if len(in.Rooms) == 0 {
			return nil, errorf(codeInvalidParameter, `"rooms" must name at least one room`)
		}
		return eventRooms(in.Rooms)
	case in.User != nil:
		if err := rooms.ValidateUserID(*in.User); err != nil {
			return nil, err
		}
		return []string{rooms.UserChannel(*in.User)}, nil
	}
	if _, err := rooms.ParseRoom(*in.Namespace + ":x"); err != nil {
		return nil, errorf(codeInvalidRoom, "namespace %q must match [a-z0-9_-]{1,32}", *in.Namespace)
	}
	return []string{rooms.NamespaceChannel(*in.Namespace)}, nil
}

// batchAnswer is the 200 body of POST /v1/batch.
type batchAnswer struct {
	Results []any `json:"results"`
}

// batchStored answers a stored event; ID is null for a volatile one.
type batchStored struct {
	ID       *string `json:"id"`
	Replayed bool    `json:"replayed,omitempty"`
}

// batchRefused answers an event that was not stored (or may have been:
// outcome_unknown, with the key to resend it with).
type batchRefused struct {
	Error          errorDetail `json:"error"`
	IdempotencyKey string      `json:"idempotency_key,omitempty"`
	RetryAfter     int         `json:"retry_after,omitempty"`
}

func (s *Server) publishBatch(w http.ResponseWriter, r *http.Request) {
	if m := s.opts.Metrics; m != nil {
		defer func(start time.Time) { m.PublishTime.Observe(time.Since(start).Seconds()) }(time.Now())
	}
	id, err := s.identify(r, auth.StateChanging)
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil && r.Header.Get("Idempotency-Key") != "" {
		err = errorf(codeInvalidParameter, `a batch takes no Idempotency-Key header: give each event its "idempotency_key"`)
	}
	var client string
	if err == nil {
		client, err = s.senderClient(r.Context(), id, r.Header.Get("Roomcast-Connection"))
	}
	var body []byte
	if err == nil {
		body, err = readBody(w, r, s.opts.MaxBatchBytes)
	}
	var events []batchEvent
	if err == nil {
		events, err = parseBatch(r.Header.Get("Content-Type"), body)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	reqs := make([]rooms.PublishRequest, 0, len(events))
	at := make([]int, 0, len(events)) // reqs[j] is events[at[j]]
	results := make([]any, len(events))
	for i, ev := range events {
		if ev.err != nil {
			results[i] = refusal(ev.err, "")
			continue
		}
		reqs = append(reqs, s.publishRequest(r, id, client, ev.channels, ev.size, ev.body, ev.key))
		at = append(at, i)
	}
	for j, res := range s.publisher.PublishBatch(r.Context(), reqs) {
		i := at[j]
		if res.Err != nil {
			results[i] = refusal(res.Err, events[i].key)
			continue
		}
		ans := batchStored{Replayed: res.Duplicate}
		if res.ID != "" {
			ans.ID = &res.ID
		}
		results[i] = ans
	}
	writeJSON(w, http.StatusOK, batchAnswer{Results: results})
}

// refusal is the answer to one event of a batch that failed with err; key
// is the event's own idempotency key.
func refusal(err error, key string) batchRefused {
	var rl *rateLimitError
	if errors.As(err, &rl) {
		msg := rl.msg
		if msg == "" {
			msg = rl.code.message()
		}
		return batchRefused{Error: errorDetail{Code: rl.code.String(), Message: msg}, RetryAfter: int(math.Ceil(max(rl.retryAfter.Seconds(), 1)))}
	}
	code, msg := classify(err)
	ans := batchRefused{Error: errorDetail{Code: code.String(), Message: msg}}
	var unknown *rooms.OutcomeUnknownError
	if errors.As(err, &unknown) {
		// Resent with this key, the event is stored once.
		ans.IdempotencyKey = key
		if ans.IdempotencyKey == "" {
			ans.IdempotencyKey = unknown.Token.String()
		}
	}
	return ans
}
