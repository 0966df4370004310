package relay

import (
	"context"
	"fmt"
	"net/http"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

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
