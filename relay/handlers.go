package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

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
	if _, err := s.hub.Backbone().Epoch(r.Context()); err != nil {
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
	s.publish(w, r, []string{room.String()}, false)
}

func (s *Server) publishMulti(w http.ResponseWriter, r *http.Request) {
	s.publish(w, r, nil, true)
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, channels []string, multi bool) {
	if m := s.opts.Metrics; m != nil {
		defer func(start time.Time) { m.PublishTime.Observe(time.Since(start).Seconds()) }(time.Now())
	}
	key := r.Header.Get("Idempotency-Key")
	if !validIdempotencyKey(key) {
		writeError(w, errorf(http.StatusBadRequest, codeInvalidParameter, "Idempotency-Key must be 1 to 255 printable ASCII characters"))
		return
	}
	client, err := s.senderClient(r.Context(), r.Header.Get("Roomcast-Connection"))
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, s.opts.MaxPayload)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := parsePublish(r.Header.Get("Content-Type"), body, r.URL.Query(), multi)
	if err != nil {
		writeError(w, err)
		return
	}
	if multi {
		if len(req.Rooms) > rooms.MaxEventRooms {
			writeError(w, errorf(http.StatusBadRequest, "too_many_rooms", "an event goes to at most %d rooms", rooms.MaxEventRooms))
			return
		}
		seen := make(map[string]bool, len(req.Rooms))
		for _, name := range req.Rooms {
			room, err := rooms.ParseRoom(name)
			if err != nil {
				writeError(w, err)
				return
			}
			if !seen[room.String()] {
				seen[room.String()] = true
				channels = append(channels, room.String())
			}
		}
	}
	if req.ExcludeSelf && client == "" {
		writeError(w, errorf(http.StatusBadRequest, codeInvalidParameter, "exclude_self needs a Roomcast-Connection header naming the sender's connection"))
		return
	}
	msg := rooms.Message{
		Channels: channels,
		Event:    req.Event,
		Data:     req.Data,
		Base64:   req.Base64,
		Client:   client,
		Volatile: req.Volatile,
	}
	if req.ExcludeSelf {
		msg.Exclude = []string{client}
	}
	res, err := s.hub.Backbone().Publish(r.Context(), msg, key)
	if err != nil {
		writeError(w, err)
		return
	}
	ans := publishAnswer{Event: res.Event}
	if res.ID != "" {
		ans.ID = &res.ID
	}
	if multi {
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

func (s *Server) changeRooms(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, id, channel string) error) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := change(r.Context(), roomParam(r, "connection"), room.String()); err != nil {
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
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, errorf(http.StatusBadRequest, codeInvalidParameter, "limit must be 1 to 1000"))
			return
		}
		limit = n
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		epoch, seq, err := rooms.ParseEventID(v)
		if err != nil {
			writeError(w, errorf(http.StatusBadRequest, codeInvalidParameter, "before must be an event id"))
			return
		}
		current, err := s.hub.Backbone().Epoch(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		if epoch != current {
			writeJSON(w, http.StatusOK, historyAnswer{Events: []json.RawMessage{}})
			return
		}
		before = seq
	}
	ch := room.String()
	events, err := s.hub.Backbone().Before(r.Context(), ch, before, limit+1)
	if err != nil {
		writeError(w, err)
		return
	}
	ans := historyAnswer{Events: []json.RawMessage{}}
	if len(events) > limit {
		events = events[1:]
		id := events[0].ID()
		ans.Before = &id
	}
	for _, ev := range events {
		ans.Events = append(ans.Events, ev.Envelope(ev.ChannelIndex(ch)))
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
