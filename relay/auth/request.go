package auth

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/roomcast/roomcast/relay/internal/query"
	"github.com/roomcast/roomcast/rooms"
)

// cookieName is the cookie a browser may carry its token in, honoured on
// subscribing requests only.
const cookieName = "roomcast_token"

// Credentials says where a request may carry credentials.
type Credentials int

const (
	// StateChanging requests (POST, PUT, DELETE) authenticate by
	// Authorization: Bearer only (a JWT or the API key): never by cookie,
	// which a browser attaches to cross-site requests, and never by query
	// token or ticket.
	StateChanging Credentials = iota
	// Subscribing requests (GET streams and polls) may carry ?ticket=,
	// then Authorization: Bearer, then the roomcast_token cookie, then
	// ?access_token= when Config.AllowQueryTokens is set; the first present
	// is used, and a bad one is not made up for by the others.
	Subscribing
)

// FromRequest authenticates r, looking for credentials where mode allows;
// a mode other than Subscribing is taken as StateChanging.
// A request without credentials gets the zero (anonymous) Identity and a
// nil error: policy decides whether anonymous is fine. Credentials that are
// present but bad fail with ErrInvalidToken; so do a repeated
// Authorization header or query parameter, and an Authorization scheme
// other than Bearer. A Bearer equal to the API key gives
// rooms.Identity{Server: true}; the API key is honoured in the
// Authorization header only. Empty values count as absent. claim is passed
// to RedeemTicket.
func (a *Authenticator) FromRequest(r *http.Request, mode Credentials, claim func(context.Context, string, time.Duration) (bool, error)) (rooms.Identity, error) {
	if mode != Subscribing {
		return a.fromBearer(r)
	}
	ticket, err := single(r.URL.RawQuery, "ticket", "more than one ticket")
	if err != nil {
		return rooms.Identity{}, err
	}
	if ticket != "" {
		return a.RedeemTicket(r.Context(), ticket, claim)
	}
	if hasAuthorization(r) {
		return a.fromBearer(r)
	}
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
		return a.VerifyToken(c.Value)
	}
	if a.queryTokens {
		token, err := single(r.URL.RawQuery, "access_token", "more than one access_token")
		if err != nil {
			return rooms.Identity{}, err
		}
		if token != "" {
			return a.VerifyToken(token)
		}
	}
	return rooms.Identity{}, nil
}

// hasAuthorization reports whether r carries a non-blank Authorization
// header.
func hasAuthorization(r *http.Request) bool {
	for _, v := range r.Header.Values("Authorization") {
		if strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// fromBearer authenticates r by its Authorization header alone.
func (a *Authenticator) fromBearer(r *http.Request) (rooms.Identity, error) {
	if !hasAuthorization(r) {
		return rooms.Identity{}, nil
	}
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return rooms.Identity{}, invalid("more than one Authorization header")
	}
	// The scheme is never quoted in errors: a bare token would be taken
	// for one.
	scheme, credential, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return rooms.Identity{}, invalid("authorization scheme is not Bearer")
	}
	credential = strings.TrimSpace(credential)
	if credential == "" {
		return rooms.Identity{}, invalid("empty bearer token")
	}
	if a.IsAPIKey(credential) {
		return rooms.Identity{Server: true}, nil
	}
	return a.VerifyToken(credential)
}

// single returns the only value of query parameter key, "" when absent or
// empty, and an error when it is repeated.
func single(rawQuery, key, repeated string) (string, error) {
	switch v := query.Values(rawQuery, key); len(v) {
	case 0:
		return "", nil
	case 1:
		return v[0], nil
	default:
		return "", invalid(repeated)
	}
}
