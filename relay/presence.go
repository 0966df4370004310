package relay

import (
	"net/http"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// presence lists who is in a room.
func (s *Server) presence(w http.ResponseWriter, r *http.Request) {
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
	list, err := s.hub.Presence(r.Context(), id, room.String())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}
