package relay

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// publishAnswer is the 202 body of a publish.
type publishAnswer struct {
	ID    *string  `json:"id"`
	Room  string   `json:"room,omitempty"`
	Rooms []string `json:"rooms,omitempty"`
	Event string   `json:"event"`
}

func (s *Server) publishRoom(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.publish(w, r, publishTarget{channels: []string{room.String()}})
}

func (s *Server) publishMulti(w http.ResponseWriter, r *http.Request) {
	s.publish(w, r, publishTarget{multi: true})
}

func (s *Server) publishUser(w http.ResponseWriter, r *http.Request) {
	user := roomParam(r, "user")
	if err := rooms.ValidateUserID(user); err != nil {
		writeError(w, err)
		return
	}
	s.publish(w, r, publishTarget{channels: []string{rooms.UserChannel(user)}})
}

func (s *Server) publishNamespace(w http.ResponseWriter, r *http.Request) {
	ns := roomParam(r, "ns")
	if _, err := rooms.ParseRoom(ns + ":x"); err != nil {
		writeError(w, errorf(codeInvalidRoom, "namespace %q must match [a-z0-9_-]{1,32}", ns))
		return
	}
	s.publish(w, r, publishTarget{channels: []string{rooms.NamespaceChannel(ns)}})
}

// publishTarget is where a publish request goes: rooms, a user's channel
// (a private message) or a namespace's channel (a broadcast).
type publishTarget struct {
	channels []string // nil when the body names the rooms
	multi    bool     // POST /v1/events: rooms from the body
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, t publishTarget) {
	if m := s.opts.Metrics; m != nil {
		defer func(start time.Time) { m.PublishTime.Observe(time.Since(start).Seconds()) }(time.Now())
	}
	req, err := s.readPublish(w, r, &t)
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := s.publisher.Publish(r.Context(), req)
	if err != nil {
		var unknown *rooms.OutcomeUnknownError
		if errors.As(err, &unknown) {
			// The caller resends with this key: its own when it sent one
			// (the same script recorded both), else the publish's token.
			resend := r.Header.Get("Idempotency-Key")
			if resend == "" {
				resend = unknown.Token.String()
			}
			w.Header().Set("Idempotency-Key", resend)
		}
		writeError(w, err)
		return
	}
	ans := publishAnswer{Event: res.Event}
	if res.ID != "" {
		ans.ID = &res.ID
	}
	if t.multi {
		ans.Rooms = make([]string, len(res.Channels))
		for i, ch := range res.Channels {
			ans.Rooms[i] = rooms.DisplayName(ch)
		}
	} else {
		ans.Room = rooms.DisplayName(res.Channels[0])
	}
	if res.Duplicate {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, ans)
}

// readPublish authenticates and reads a publish request into what the
// publish operation (rooms.Publisher) decides on: the caller, the targets
// and the body. A caller who may not publish to the targets named in the
// URL is refused before its body is read.
func (s *Server) readPublish(w http.ResponseWriter, r *http.Request, t *publishTarget) (rooms.PublishRequest, error) {
	id, err := s.identify(r, auth.StateChanging)
	if err != nil {
		return rooms.PublishRequest{}, err
	}
	if err := s.checkOrigin(r); err != nil {
		return rooms.PublishRequest{}, err
	}
	key := r.Header.Get("Idempotency-Key")
	if err := checkIdempotencyKey(key); err != nil {
		return rooms.PublishRequest{}, err
	}
	client, err := s.senderClient(r.Context(), id, r.Header.Get("Roomcast-Connection"))
	if err != nil {
		return rooms.PublishRequest{}, err
	}
	// The body is read up to its targets' limit (when they are in the
	// body, the largest of the namespaces the caller may publish in); the
	// publish operation decides on its size.
	if err := s.publisher.Authorize(id, t.channels); err != nil {
		return rooms.PublishRequest{}, err
	}
	body, err := readBody(w, r, s.publisher.PayloadLimit(id, t.channels))
	if err != nil {
		return rooms.PublishRequest{}, err
	}
	req, err := parsePublish(r.Header.Get("Content-Type"), body, r.URL.Query(), t.multi)
	if err != nil {
		return rooms.PublishRequest{}, err
	}
	if t.multi {
		if t.channels, err = eventRooms(req.Rooms); err != nil {
			return rooms.PublishRequest{}, err
		}
	}
	return s.publishRequest(r, id, client, t.channels, int64(len(body)), req, key), nil
}

// publishRequest is what the publish operation decides on, for a request
// of caller id whose body (size bytes) was read into req.
func (s *Server) publishRequest(r *http.Request, id rooms.Identity, client string, channels []string, size int64, req publishBody, key string) rooms.PublishRequest {
	return rooms.PublishRequest{
		Identity:       id,
		Address:        s.clientIP(r),
		Caller:         s.rateKey(r, id),
		Channels:       channels,
		Size:           size,
		Event:          req.Event,
		Data:           req.Data,
		Base64:         req.Base64,
		Volatile:       req.Volatile,
		Client:         client,
		ExcludeSelf:    req.ExcludeSelf,
		From:           req.From,
		Exclude:        req.Exclude,
		IdempotencyKey: key,
	}
}

// eventRooms are the channels of a body's "rooms": parsed, without
// duplicates, at most rooms.MaxEventRooms.
func eventRooms(names []string) ([]string, error) {
	if len(names) > rooms.MaxEventRooms {
		return nil, errorf(codeTooManyRooms, "an event goes to at most %d rooms", rooms.MaxEventRooms)
	}
	channels := make([]string, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		room, err := rooms.ParseRoom(name)
		if err != nil {
			return nil, err
		}
		if !seen[room.String()] {
			seen[room.String()] = true
			channels = append(channels, room.String())
		}
	}
	return channels, nil
}

// checkIdempotencyKey refuses a malformed key, and a publish token the
// relay did not make, before anything else is read.
func checkIdempotencyKey(key string) error {
	if !validIdempotencyKey(key) {
		return errorf(codeInvalidParameter, "Idempotency-Key must be 1 to 255 printable ASCII characters")
	}
	if rooms.IsPublishToken(key) {
		_, err := rooms.ParsePublishToken(key)
		return err
	}
	return nil
}

func validIdempotencyKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for _, c := range k {
		if c > unicode.MaxASCII || !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

// publishBody is a parsed publish request body.
type publishBody struct {
	Event       string
	Data        json.RawMessage // compact JSON
	Base64      bool
	Volatile    bool
	ExcludeSelf bool
	Rooms       []string // POST /v1/events only
	// From and Exclude are honoured for the API key's holder only.
	From    *rooms.Sender
	Exclude []string
}

// publishJSON is the JSON form of a publish body.
type publishJSON struct {
	Event       *string         `json:"event"`
	Data        json.RawMessage `json:"data"`
	Volatile    bool            `json:"volatile"`
	ExcludeSelf bool            `json:"exclude_self"`
	Rooms       []string        `json:"rooms"`
	From        *rooms.Sender   `json:"from"`
	Exclude     []string        `json:"exclude"`
}

// parsePublish reads a publish body. A JSON body (application/json or any
// +json type) is {"event","data","volatile","exclude_self"} plus "rooms"
// when multi is set; any other body is the data itself, as a JSON string
// (base64 when it is not UTF-8), with event, volatile and exclude_self taken
// from the query. It never returns data containing a line break.
func parsePublish(contentType string, body []byte, q url.Values, multi bool) (publishBody, error) {
	isJSON, err := classifyMediaType(contentType)
	if err != nil {
		return publishBody{}, err
	}
	if !isJSON {
		if multi {
			return publishBody{}, errorf(codeUnsupportedMediaType,
				"POST /v1/events takes an application/json body")
		}
		return parseRawPublish(body, q)
	}
	if !utf8.Valid(body) {
		return publishBody{}, errorf(codeInvalidJSON, "the JSON body is not valid UTF-8")
	}
	var in publishJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return publishBody{}, errorf(codeInvalidJSON, "the body is not a valid publish object: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return publishBody{}, errorf(codeInvalidJSON, "the body holds more than one JSON value")
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("null")) {
		return publishBody{}, errorf(codeInvalidJSON, "the body must be a JSON object")
	}
	out := publishBody{Event: "message", Volatile: in.Volatile, ExcludeSelf: in.ExcludeSelf, From: in.From, Exclude: in.Exclude}
	if in.Event != nil {
		out.Event = *in.Event
	}
	if err := rooms.ValidateEventName(out.Event); err != nil {
		return publishBody{}, err
	}
	if multi {
		if len(in.Rooms) == 0 {
			return publishBody{}, errorf(codeInvalidParameter, `"rooms" must name at least one room`)
		}
		out.Rooms = in.Rooms
	} else if in.Rooms != nil {
		return publishBody{}, errorf(codeInvalidParameter, `"rooms" belongs in POST /v1/events`)
	}
	out.Data = json.RawMessage("null")
	if len(in.Data) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, in.Data); err != nil {
			return publishBody{}, errorf(codeInvalidJSON, "data is not valid JSON")
		}
		out.Data = buf.Bytes()
	}
	return out, nil
}

func parseRawPublish(body []byte, q url.Values) (publishBody, error) {
	out := publishBody{Event: "message"}
	if q.Has("event") {
		out.Event = q.Get("event")
	}
	if err := rooms.ValidateEventName(out.Event); err != nil {
		return publishBody{}, err
	}
	var err error
	if out.Volatile, err = queryBool(q, "volatile"); err != nil {
		return publishBody{}, err
	}
	if out.ExcludeSelf, err = queryBool(q, "exclude_self"); err != nil {
		return publishBody{}, err
	}
	var s string
	if utf8.Valid(body) {
		s = string(body)
	} else {
		s = base64.StdEncoding.EncodeToString(body)
		out.Base64 = true
	}
	out.Data, err = json.Marshal(s)
	return out, err
}

// classifyMediaType tells JSON bodies from raw ones; multipart bodies and
// unparseable types are refused.
func classifyMediaType(contentType string) (isJSON bool, err error) {
	if contentType == "" {
		return false, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, errorf(codeUnsupportedMediaType, "unparseable Content-Type")
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return true, nil
	case strings.HasPrefix(mt, "multipart/"):
		return false, errorf(codeUnsupportedMediaType,
			"%s is not accepted: send application/json, or the raw data as any other type", mt)
	}
	return false, nil
}

func queryBool(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, errorf(codeInvalidParameter, "%s must be true or false", name)
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		if te.Field != "" {
			return "field " + te.Field + " has the wrong type"
		}
		return "expected a JSON object"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}

// readBody reads at most limit bytes of the request body; more is a 413,
// whether announced by Content-Length or only discovered while reading a
// chunked body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errorf(codePayloadTooLarge, "the body is larger than %d bytes", limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, bodyError(err, limit)
	}
	return body, nil
}

// bodyError is the answer to a failed read of a body of at most limit
// bytes: 413 past the limit, boundBody's own (408 request_timeout, 429
// too_many_connections), else 400.
func bodyError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	var ae *apiError
	var rl *rateLimitError
	switch {
	case errors.As(err, &mbe):
		return errorf(codePayloadTooLarge, "the body is larger than %d bytes", limit)
	case errors.As(err, &ae), errors.As(err, &rl):
		return err
	}
	return errorf(codeInvalidParameter, "reading the body failed")
}
