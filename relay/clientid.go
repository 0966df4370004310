package relay

import (
	"context"

	"github.com/roomcast/roomcast/rooms"
)

// senderClient resolves a Roomcast-Connection header to the client id it
// proves for caller: a client proof, or the id of a live connection. ""
// means no header.
func (s *Server) senderClient(ctx context.Context, caller rooms.Identity, header string) (string, error) {
	if header == "" {
		return "", nil
	}
	return s.hub.ProveClient(ctx, caller, header)
}

// validClientID reports whether id is 8 to 64 URL-safe characters.
func validClientID(id string) bool { return rooms.ValidClientID(id) }
