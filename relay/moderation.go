package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// requireServer admits only the holder of the API key.
func (s *Server) requireServer(r *http.Request) error {
	id, err := s.identify(r, auth.StateChanging)
	if err != nil {
		return err
	}
	if !id.Server {
		if id.Anonymous() {
			return errorf(codeUnauthenticated, "moderation needs the API key")
		}
		return errorf(codeForbidden, "moderation needs the API key")
	}
	return s.checkOrigin(r)
}

// readJSONBody decodes a small JSON request body into v.
func readJSONBody(w http.ResponseWriter, r *http.Request, v any) error {
	if isJSON, err := classifyMediaType(r.Header.Get("Content-Type")); err != nil || !isJSON {
		return errorf(codeUnsupportedMediaType, "send application/json")
	}
	body, err := readBody(w, r, 16<<10)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(codeInvalidJSON, "the body is not valid: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(codeInvalidJSON, "the body holds more than one JSON value")
	}
	return nil
}

type banRequest struct {
	User     string `json:"user"`
	Duration string `json:"duration"`
}

type banAnswer struct {
	User  string `json:"user"`
	Until int64  `json:"until"`
}

// ban refuses a user for a while and closes their streams everywhere.
func (s *Server) ban(w http.ResponseWriter, r *http.Request) {
	var req banRequest
	err := s.requireServer(r)
	if err == nil {
		err = readJSONBody(w, r, &req)
	}
	if err == nil {
		err = rooms.ValidateUserID(req.User)
	}
	var d time.Duration
	if err == nil {
		d, err = time.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			err = errorf(codeInvalidParameter, `duration must be a positive duration such as "10m"`)
		}
	}
	if err == nil {
		err = s.hub.Ban(r.Context(), req.User, d)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, banAnswer{User: req.User, Until: time.Now().Add(d).UnixMilli()})
}

// unban lifts a ban.
func (s *Server) unban(w http.ResponseWriter, r *http.Request) {
	user := roomParam(r, "user")
	err := s.requireServer(r)
	if err == nil {
		err = rooms.ValidateUserID(user)
	}
	if err == nil {
		err = s.hub.Ban(r.Context(), user, 0)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type kickRequest struct {
	User string `json:"user"`
}

// kick takes a user's connections out of a room.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	var req kickRequest
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err == nil {
		err = s.requireServer(r)
	}
	if err == nil {
		err = readJSONBody(w, r, &req)
	}
	if err == nil {
		err = rooms.ValidateUserID(req.User)
	}
	if err == nil {
		err = s.hub.Kick(r.Context(), req.User, room.String())
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteEvent removes an event from a room's history.
func (s *Server) deleteEvent(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err == nil {
		err = s.requireServer(r)
	}
	if err == nil {
		err = s.hub.DeleteEvent(r.Context(), room.String(), roomParam(r, "id"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
