package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz fails only while starting and draining. The backbone's state is
// reported, not acted on: if it is down it is down for every instance, and
// taking them all out of routing would only turn a degraded service into
// an outage.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	status, code := "ready", http.StatusOK
	switch {
	case s.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case !s.ready.Load():
		status, code = "starting", http.StatusServiceUnavailable
	}
	backbone := "up"
	if _, err := s.hub.Epoch(r.Context()); err != nil {
		backbone = "down"
	}
	writeJSON(w, code, map[string]any{"status": status, "backbone": backbone, "connections": s.hub.Connections()})
}

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

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	s.changeRooms(w, r, s.hub.Join)
}

func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	s.changeRooms(w, r, s.hub.Leave)
}

func (s *Server) changeRooms(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, caller rooms.Identity, id, channel string) error) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := s.identify(r, auth.StateChanging)
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil && r.Method == http.MethodPut {
		err = s.limitRequest(r, id, "join")
	}
	if err == nil {
		err = change(r.Context(), id, roomParam(r, "connection"), room.String())
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// historyAnswer is the body of GET /v1/rooms/{room}/history.
type historyAnswer struct {
	Events []json.RawMessage `json:"events"`
	// Before pages further back: pass it as ?before=; null on the oldest page.
	Before *string `json:"before"`
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := s.identify(r, auth.Subscribing)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	req := rooms.HistoryRequest{Identity: id, Channel: room.String(), Limit: 100, Before: q.Get("before")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, errorf(codeInvalidParameter, "limit must be 1 to 1000"))
			return
		}
		req.Limit = n
	}
	if req.Before != "" {
		if _, _, err := rooms.ParseEventID(req.Before); err != nil {
			writeError(w, errorf(codeInvalidParameter, "before must be an event id"))
			return
		}
	}
	page, err := s.hub.History(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	ans := historyAnswer{Events: make([]json.RawMessage, 0, len(page.Events))}
	if page.Before != "" {
		ans.Before = &page.Before
	}
	for _, ev := range page.Events {
		ans.Events = append(ans.Events, ev.Envelope(ev.ChannelIndex(req.Channel)))
	}
	writeJSON(w, http.StatusOK, ans)
}

// queryRooms parses every ?room= of a multi-room request.
func queryRooms(values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			room, err := rooms.ParseRoom(name)
			if err != nil {
				return nil, err
			}
			out = append(out, room.String())
		}
	}
	return out, nil
}

// refreshToken extends a stream with a fresh token of the same user.
func (s *Server) refreshToken(w http.ResponseWriter, r *http.Request) {
	id, err := s.identify(r, auth.StateChanging)
	switch {
	case err != nil:
	case id.Server:
		err = fmt.Errorf("%w: a connection is refreshed with its user's token, not the API key", rooms.ErrForbidden)
	case id.User == "":
		err = fmt.Errorf("%w: send the new token as Authorization: Bearer", rooms.ErrUnauthenticated)
	}
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil {
		err = s.limitRequest(r, id, "token")
	}
	if err == nil {
		err = s.hub.Refresh(r.Context(), id, roomParam(r, "connection"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
