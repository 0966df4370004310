package relay

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

// identify authenticates r. Streams and polls (auth.Subscribing) may carry
// a ticket, a bearer token, the roomcast_token cookie or, when allowed, a
// query token; every state-changing request only a bearer token or the API
// key, so that no other site can act with a browser's cookie.
func (s *Server) identify(r *http.Request, mode auth.Credentials) (rooms.Identity, error) {
	if s.opts.Auth == nil {
		return rooms.Identity{}, nil
	}
	return s.opts.Auth.FromRequest(r, mode, s.claim)
}

// claim spends a single-use key on the backbone, shared by every instance.
func (s *Server) claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	c := s.hub.Claimer()
	if c == nil {
		return false, errors.New("the backbone cannot claim single-use keys")
	}
	return c.ClaimOnce(ctx, key, ttl)
}

// checkOrigin refuses a state-changing request sent by a page of another
// origin than the relay's own (scheme, host and port; the host is one
// checkHost allowed) or an allowed one. Requests without Origin (curl,
// backends) pass: they carry no ambient browser credentials.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" || s.originAllowed(origin) || s.sameOrigin(origin, r) {
		return nil
	}
	return originRefused(origin)
}

// originRefused is the answer to a request, or a preflight, from a page of
// an origin the relay does not allow.
func originRefused(origin string) error {
	return errorf(codeForbidden, "requests from origin %s are not allowed (the relay's ROOMCAST_ALLOWED_ORIGINS does not list it)", origin)
}

func (s *Server) originAllowed(origin string) bool {
	return slices.Contains(s.opts.AllowedOrigins, "*") || slices.Contains(s.opts.AllowedOrigins, origin)
}
