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
	"unicode/utf8"

	"github.com/roomcast/roomcast/rooms"
)

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
