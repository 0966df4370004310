package relay

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

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
