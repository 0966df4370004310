package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/roomcast/roomcast/rooms"
)

// maxTokenLen bounds the work an unauthenticated caller can cause.
const maxTokenLen = 8 << 10

// claims are the JWT claims roomcast reads.
type claims struct {
	jwt.RegisteredClaims
	Name  string      `json:"name"`
	Rooms *roomsClaim `json:"rooms"`
}

// roomsClaim limits what a token may do. A nil list means "no restriction
// from the token", an empty one "nothing".
type roomsClaim struct {
	Subscribe []string `json:"subscribe"`
	Publish   []string `json:"publish"`
}

// errAlgorithm is returned by the key function when jwt's view of the
// algorithm differs from ours; it cannot happen unless the two header
// parsers disagree, and then the token is refused.
var errAlgorithm = errors.New("algorithm not allowed")

// VerifyToken verifies a JWT and returns the identity it carries.
//
// Algorithms are pinned to the configured keys: HS256 only with a secret,
// RS256 or ES256 only for the configured public key's type. Everything
// else — "none", an HS256 token when only a public key is configured (the
// HS/RS confusion), unknown algorithms — fails with "algorithm not
// allowed". exp is required; exp and nbf are checked with the configured
// leeway; iss and aud are checked when configured; sub is required and
// must be a valid user id (rooms.ValidateUserID). Every failure wraps
// ErrInvalidToken with a message naming the check and never the token.
//
// sub becomes Identity.User, name Identity.Name (sub when absent), the
// optional "rooms" claim {"subscribe":[...],"publish":[...]} becomes
// Identity.Subscribe and Identity.Publish, and exp Identity.Expires.
func (a *Authenticator) VerifyToken(token string) (rooms.Identity, error) {
	if len(token) > maxTokenLen {
		return rooms.Identity{}, invalid("token too large")
	}
	if len(a.algs) == 0 {
		return rooms.Identity{}, invalid("no JWT key is configured")
	}
	alg, err := headerAlg(token)
	if err != nil {
		return rooms.Identity{}, err
	}
	if !slices.Contains(a.algs, alg) {
		return rooms.Identity{}, invalid("algorithm not allowed")
	}

	var c claims
	p := jwt.NewParser(
		jwt.WithValidMethods(a.algs),
		jwt.WithStrictDecoding(),
		jwt.WithLeeway(a.leeway),
		jwt.WithTimeFunc(a.now),
	)
	if _, err := p.ParseWithClaims(token, &c, a.key); err != nil {
		return rooms.Identity{}, tokenError(err)
	}
	switch {
	case c.ExpiresAt == nil:
		return rooms.Identity{}, invalid("token has no exp")
	case a.issuer != "" && c.Issuer != a.issuer:
		return rooms.Identity{}, invalid("wrong issuer")
	case a.audience != "" && !slices.Contains(c.Audience, a.audience):
		return rooms.Identity{}, invalid("wrong audience")
	case c.Subject == "":
		return rooms.Identity{}, invalid("token has no sub")
	}
	if rooms.ValidateUserID(c.Subject) != nil {
		return rooms.Identity{}, invalid("token sub is not a valid user id")
	}
	id := rooms.Identity{
		User:    c.Subject,
		Name:    c.Name,
		Expires: c.ExpiresAt.Time,
	}
	if id.Name == "" {
		id.Name = id.User
	}
	if c.Rooms != nil {
		id.Subscribe = c.Rooms.Subscribe
		id.Publish = c.Rooms.Publish
	}
	return id, nil
}

// headerAlg returns the alg of token's header, read the way jwt reads it
// (a JSON object, exact key "alg"), so that the algorithm is checked before
// jwt does any work. A header with "crit" is refused: roomcast understands
// no critical extension (RFC 7515 §4.1.11).
func headerAlg(token string) (string, error) {
	seg, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", invalid("malformed token")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return "", invalid("malformed token")
	}
	var header map[string]any
	if err := json.Unmarshal(raw, &header); err != nil || header == nil {
		return "", invalid("malformed token")
	}
	if _, ok := header["crit"]; ok {
		return "", invalid("unsupported critical header")
	}
	alg, _ := header["alg"].(string)
	return alg, nil
}

// key returns the verification key for the token's algorithm.
func (a *Authenticator) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case "HS256":
		if a.secret != nil {
			return a.secret, nil
		}
	case "RS256":
		if a.rsaKey != nil {
			return a.rsaKey, nil
		}
	case "ES256":
		if a.ecKey != nil {
			return a.ecKey, nil
		}
	}
	return nil, errAlgorithm
}

// tokenError maps jwt's errors to ours; jwt's own messages may quote parts
// of the token, so they are never passed on.
func tokenError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed token")
	case errors.Is(err, errAlgorithm), errors.Is(err, jwt.ErrTokenUnverifiable):
		return invalid("algorithm not allowed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return invalid("bad signature")
	case errors.Is(err, jwt.ErrTokenExpired):
		return invalid("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid("token not valid yet")
	default:
		return invalid("invalid claims")
	}
}
