package relay

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/sign"
)

// Development tokens let the demo chat and local experiments sign in without
// an identity provider: anyone who can reach the relay gets one, so they are
// served only where anyone may publish anyway (open mode) unless the
// operator enables them on purpose.
const (
	// devTokenTTL is how long a development token is valid.
	devTokenTTL = 12 * time.Hour
	// devTokenRate and devTokenBurst limit token requests per client
	// address: enough for a few tabs and people behind one address, not
	// enough to mint identities in bulk.
	devTokenRate  = 0.5
	devTokenBurst = 20
	// devUserPrefix starts every development user id, so that a renewal
	// never reissues a real user's identity.
	devUserPrefix = "dev-"
	// devMarkClaim holds the mark of a token this relay minted: an HMAC of
	// its subject under the sign.DevTokenMark key, derived from the
	// development key. A token signed with the same
	// secret by a backend (say, for a user "dev-…" limited to some rooms)
	// has none, so it is never renewed into an unrestricted one.
	devMarkClaim = "roomcast_dev"
	// maxDevName bounds a display name, in characters.
	maxDevName = 64
)

// devTokenRequest is the body of POST /v1/dev/token.
type devTokenRequest struct {
	Name string `json:"name"`
}

// devTokenAnswer is its answer.
type devTokenAnswer struct {
	Token string `json:"token"`
	User  string `json:"user"`
	Name  string `json:"name"`
}

// devToken issues a development token for the display name in the body. The
// user id is chosen by the server: a fresh random one, or the caller's own
// when it renews a valid development token sent as Authorization: Bearer.
// The route is a 404 unless Options.DevTokenKey is set.
func (s *Server) devToken(w http.ResponseWriter, r *http.Request) {
	if len(s.opts.DevTokenKey) == 0 {
		writeError(w, errorf(codeNotFound, "development tokens are not enabled on this relay"))
		return
	}
	if s.devMarks == nil {
		writeError(w, errorf(codeInternal, "this relay cannot issue development tokens it accepts"))
		return
	}
	if err := s.checkOrigin(r); err != nil {
		writeError(w, err)
		return
	}
	if err := s.takeToken(r, rooms.Identity{}, "devtoken", devTokenRate, devTokenBurst); err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, 4<<10)
	if err != nil {
		writeError(w, err)
		return
	}
	var req devTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, errorf(codeInvalidJSON, `the body must be {"name":"..."}`))
		return
	}
	name, err := devName(req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	var claims jwt.MapClaims
	if s.opts.Auth != nil && r.Header.Get("Authorization") != "" {
		// The token must pass as any token would (issuer, audience,
		// expiry), then prove that this relay minted it.
		if _, err := s.opts.Auth.FromRequest(r, auth.StateChanging, nil); err != nil {
			writeError(w, err)
			return
		}
		claims = s.ownDevToken(bearerToken(r))
	}
	if claims == nil {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		user := devUserPrefix + base64.RawURLEncoding.EncodeToString(b)
		claims = jwt.MapClaims{"sub": user, "name": name, devMarkClaim: s.devMark(user)}
	}
	// A renewal keeps every claim of the token it renews (its name, any
	// restriction); only its lifetime is new, and its mark, which a token
	// marked under the legacy key must shed before that key goes.
	now := time.Now()
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(devTokenTTL).Unix()
	delete(claims, "nbf")
	user, _ := claims["sub"].(string)
	claims[devMarkClaim] = s.devMark(user)
	if n, ok := claims["name"].(string); ok {
		name = n
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.opts.DevTokenKey)
	if err == nil && s.opts.Auth != nil {
		// A token this relay would refuse (an issuer or audience is
		// required) helps nobody: say so instead of handing it out.
		_, err = s.opts.Auth.VerifyToken(token)
	}
	if err != nil {
		s.log.Error("development token not usable", "err", err)
		writeError(w, errorf(codeInternal, "this relay cannot issue development tokens it accepts"))
		return
	}
	writeJSON(w, http.StatusOK, devTokenAnswer{Token: token, User: user, Name: name})
}

// devName checks a display name: 1 to 64 printable characters once trimmed.
func devName(name string) (string, error) {
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	if n == 0 || n > maxDevName || !utf8.ValidString(name) {
		return "", errorf(codeInvalidParameter, "name must be 1 to %d characters", maxDevName)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return "", errorf(codeInvalidParameter, "name must not contain control or invisible characters")
		}
	}
	return name, nil
}

// ownDevToken returns the claims of token when this relay minted it as a
// development token: signed with the development key (HS256, whatever
// else the authenticator accepts) and carrying the mark of its dev- subject
// that only that key makes. Anything else is nil. The token's times were
// checked by the authenticator already.
func (s *Server) ownDevToken(token string) jwt.MapClaims {
	claims := jwt.MapClaims{}
	p := jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithoutClaimsValidation())
	if _, err := p.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return s.opts.DevTokenKey, nil }); err != nil {
		return nil
	}
	sub, _ := claims["sub"].(string)
	mark, _ := claims[devMarkClaim].(string)
	if !strings.HasPrefix(sub, devUserPrefix) || !s.devMarked(sub, mark) {
		return nil
	}
	return claims
}

// legacyDevMarkPrefix began the message of a mark, keyed with the
// development key itself, before rooms/sign.
const legacyDevMarkPrefix = "roomcast development token\x00"

// newDevMarks returns the signer of development-token marks keyed from key,
// nil when key is empty or too short to derive from (devToken then
// refuses to mint).
func newDevMarks(key []byte, log *slog.Logger) *sign.Signer {
	if len(key) == 0 {
		return nil
	}
	marks, err := sign.New(key, sign.DevTokenMark)
	if err != nil {
		log.Error("development tokens cannot be marked", "err", err)
		return nil
	}
	// LEGACY(sign, 2026-12): tokens minted before rooms/sign carry a mark
	// keyed with the development key itself after a fixed prefix. They
	// keep renewing for the one release that brings rooms/sign (a token
	// lives 12 hours, and each renewal marks it anew); remove this in the
	// release after it.
	return marks.WithLegacy(sign.Legacy{Key: key, Prefix: []byte(legacyDevMarkPrefix)})
}

// devMark is the mark of a development token of user.
func (s *Server) devMark(user string) string {
	return base64.RawURLEncoding.EncodeToString(s.devMarks.Append(nil, []byte(user)))
}

// devMarked reports whether mark is the mark of a development token of
// user.
func (s *Server) devMarked(user, mark string) bool {
	tag, err := base64.RawURLEncoding.Strict().DecodeString(mark)
	return err == nil && s.devMarks.Verify([]byte(user), tag)
}

// bearerToken is the token of r's Authorization: Bearer header, which the
// authenticator accepted.
func bearerToken(r *http.Request) string {
	scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
