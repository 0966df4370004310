package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/query"
	"github.com/roomcast/roomcast/rooms"
)

// pollAnswer is the body of a poll.
type pollAnswer struct {
	Events []json.RawMessage `json:"events"`
	Cursor string            `json:"cursor"`
	Reset  bool              `json:"reset,omitempty"`
	// Client is the poller's client id and Connection its proof, to send
	// as ?proof= to use the id again and as Roomcast-Connection when
	// publishing.
	Client     string `json:"client"`
	Connection string `json:"connection"`
}

func (s *Server) pollRoom(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.poll(w, r, []string{room.String()}, false)
}

func (s *Server) pollMulti(w http.ResponseWriter, r *http.Request) {
	channels, err := queryRooms(query.Values(r.URL.RawQuery, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	if len(channels) == 0 {
		writeError(w, errorf(codeInvalidRoom, "name at least one ?room="))
		return
	}
	s.poll(w, r, channels, true)
}

// pollUser polls everything addressed to the caller.
func (s *Server) pollUser(w http.ResponseWriter, r *http.Request) {
	s.poll(w, r, nil, false)
}

func (s *Server) poll(w http.ResponseWriter, r *http.Request, channels []string, multi bool) {
	noteRoutine(r.Context())
	id, err := s.identify(r, auth.Subscribing)
	if err != nil {
		writeError(w, err)
		return
	}
	if channels == nil {
		if id.User == "" {
			writeError(w, fmt.Errorf("%w: the user poll needs a user's token", rooms.ErrUnauthenticated))
			return
		}
		channels = []string{rooms.UserChannel(id.User)}
	}
	raw := r.URL.RawQuery
	timeout := s.opts.PollDefault
	if v := query.Get(raw, "timeout"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || !(n >= 0 && n <= s.opts.PollMax.Seconds()) { // also refuses NaN and Inf
			writeError(w, errorf(codeInvalidParameter, "timeout must be 0 to %g seconds", s.opts.PollMax.Seconds()))
			return
		}
		timeout = time.Duration(n * float64(time.Second))
	}
	client, proof := query.Get(raw, "client"), query.Get(raw, "proof")
	if !validClientID(client) {
		client = ""
	}
	if s.draining.Load() {
		timeout = 0
	}
	slots, err := s.acquireConnection(r, id)
	if err != nil {
		writeError(w, err)
		return
	}
	defer slots.release()
	if m := s.opts.Metrics; m != nil {
		m.PollConnections.Inc()
		defer m.PollConnections.Dec()
	}
	res, err := s.hub.Poll(r.Context(), rooms.PollRequest{
		Channels: channels,
		Cursor:   query.Get(raw, "cursor"),
		Client:   client,
		Caller:   s.rateKey(r, id),
		Proof:    proof,
		Timeout:  timeout,
		Identity: id,
		Multi:    multi,
		// A client that names itself can be known again at its next
		// poll; one that does not gets a new id every time.
		KeepSession: client != "" || proof != "",
	})
	if err != nil {
		writeError(w, err)
		return
	}
	bp := answerBufs.Get().(*[]byte)
	b := appendPollAnswer((*bp)[:0], res)
	s.writeBodyMaybeGzip(w, r, http.StatusOK, b)
	if cap(b) <= 1<<20 {
		*bp = b[:0]
		answerBufs.Put(bp)
	}
}

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// appendPollAnswer encodes a poll's answer (pollAnswer's JSON) by hand: the
// events' envelopes are already JSON, encoded once per event for every
// poller and stream, and go out as they are, neither re-encoded nor
// re-validated.
func appendPollAnswer(b []byte, res rooms.PollResult) []byte {
	b = append(b, `{"events":[`...)
	for i, d := range res.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, d.Event.Envelope(d.Index)...)
	}
	b = append(b, `],"cursor":`...)
	b = appendJSONString(b, res.Cursor)
	if res.Reset {
		b = append(b, `,"reset":true`...)
	}
	b = append(b, `,"client":`...)
	b = appendJSONString(b, res.Client)
	b = append(b, `,"connection":`...)
	b = appendJSONString(b, res.Proof)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (HTML characters included).
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			m, _ := json.Marshal(string(s))
			return append(b, m...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
