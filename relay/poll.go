package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// pollAnswer is the body of a poll.
type pollAnswer struct {
	Events []json.RawMessage `json:"events"`
	Cursor string            `json:"cursor"`
	Reset  bool              `json:"reset,omitempty"`
	// Client is the poller's client id and Connection a token proving it,
	// to send as Roomcast-Connection when publishing with exclude_self.
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
	channels, err := queryRooms(r.URL.Query()["room"])
	if err != nil {
		writeError(w, err)
		return
	}
	if len(channels) == 0 {
		writeError(w, errorf(http.StatusBadRequest, "invalid_room", "name at least one ?room="))
		return
	}
	s.poll(w, r, channels, true)
}

// pollUser polls everything addressed to the caller.
func (s *Server) pollUser(w http.ResponseWriter, r *http.Request) {
	s.poll(w, r, nil, false)
}

func (s *Server) poll(w http.ResponseWriter, r *http.Request, channels []string, multi bool) {
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
	q := r.URL.Query()
	timeout := s.opts.PollDefault
	if v := q.Get("timeout"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || !(n >= 0 && n <= s.opts.PollMax.Seconds()) { // also refuses NaN and Inf
			writeError(w, errorf(http.StatusBadRequest, codeInvalidParameter, "timeout must be 0 to %g seconds", s.opts.PollMax.Seconds()))
			return
		}
		timeout = time.Duration(n * float64(time.Second))
	}
	client := q.Get("client")
	if !validClientID(client) {
		client = rooms.NewClientID()
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
		m.Connections.WithLabelValues("poll").Inc()
		defer m.Connections.WithLabelValues("poll").Dec()
	}
	res, err := s.hub.Poll(r.Context(), rooms.PollRequest{
		Channels: channels,
		Cursor:   q.Get("cursor"),
		Client:   client,
		Timeout:  timeout,
		Identity: id,
		Multi:    multi,
	})
	if err != nil {
		writeError(w, err)
		return
	}
	ans := pollAnswer{
		Events:     make([]json.RawMessage, len(res.Events)),
		Cursor:     res.Cursor,
		Reset:      res.Reset,
		Client:     client,
		Connection: s.clientToken(client),
	}
	for i, d := range res.Events {
		ans.Events[i] = d.Event.Envelope(d.Index)
	}
	s.writeJSONMaybeGzip(w, r, http.StatusOK, ans)
}
