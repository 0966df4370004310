package relay

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
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
		writeError(w, errorf(http.StatusNotFound, codeNotFound, "development tokens are not enabled on this relay"))
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
		writeError(w, errorf(http.StatusBadRequest, codeInvalidJSON, `the body must be {"name":"..."}`))
		return
	}
	name, err := devName(req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	user := ""
	if s.opts.Auth != nil && r.Header.Get("Authorization") != "" {
		id, err := s.opts.Auth.FromRequest(r, auth.StateChanging, nil)
		if err != nil {
			writeError(w, err)
			return
		}
		if strings.HasPrefix(id.User, devUserPrefix) {
			user = id.User
		}
	}
	if user == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		user = devUserPrefix + base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":  user,
		"name": name,
		"iat":  now.Unix(),
		"exp":  now.Add(devTokenTTL).Unix(),
	}).SignedString(s.opts.DevTokenKey)
	if err == nil && s.opts.Auth != nil {
		// A token this relay would refuse (an issuer or audience is
		// required) helps nobody: say so instead of handing it out.
		_, err = s.opts.Auth.VerifyToken(token)
	}
	if err != nil {
		s.log.Error("development token not usable", "err", err)
		writeError(w, errorf(http.StatusInternalServerError, codeInternal, "this relay cannot issue development tokens it accepts"))
		return
	}
	writeJSON(w, http.StatusOK, devTokenAnswer{Token: token, User: user, Name: name})
}

// devName checks a display name: 1 to 64 printable characters once trimmed.
func devName(name string) (string, error) {
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	if n == 0 || n > maxDevName || !utf8.ValidString(name) {
		return "", errorf(http.StatusBadRequest, codeInvalidParameter, "name must be 1 to %d characters", maxDevName)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return "", errorf(http.StatusBadRequest, codeInvalidParameter, "name must not contain control or invisible characters")
		}
	}
	return name, nil
}
