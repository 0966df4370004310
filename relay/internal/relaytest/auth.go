package relaytest

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay/auth"
)

// Test credentials: the HS256 secret Token signs with and the server API key
// of relays started with an Authenticator from NewAuth.
const (
	JWTSecret = "relaytest HS256 secret, 32 bytes or more"
	APIKey    = "relaytest-server-api-key"
)

// ticketKey signs the tickets of test relays.
var ticketKey = []byte("relaytest ticket key")

// NewAuth returns an Authenticator for cfg, with JWTSecret, APIKey and a
// ticket key filled in where cfg leaves them empty (set JWTPublicKeyPEM
// with JWTSecret "-" to configure a public key alone).
func NewAuth(t testing.TB, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	switch string(cfg.JWTSecret) {
	case "":
		cfg.JWTSecret = []byte(JWTSecret)
	case "-":
		cfg.JWTSecret = nil
	}
	switch cfg.APIKey {
	case "":
		cfg.APIKey = APIKey
	case "-":
		cfg.APIKey = ""
	}
	if cfg.TicketKey == nil {
		cfg.TicketKey = ticketKey
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Claims are a token's claims beyond sub and exp, e.g. "name" or
// "rooms": map[string]any{"subscribe": []string{"team-*"}}.
type Claims map[string]any

// Token returns an HS256 token signed with JWTSecret for user sub, expiring
// after ttl, with the extra claims.
func Token(t testing.TB, sub string, ttl time.Duration, extra Claims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	return Sign(t, jwt.SigningMethodHS256, []byte(JWTSecret), c)
}

// Sign signs claims with method and key; jwt.SigningMethodNone takes
// jwt.UnsafeAllowNoneSignatureType as its key.
func Sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Bearer returns a header carrying credential as Authorization: Bearer.
func Bearer(credential string) http.Header {
	return http.Header{"Authorization": {"Bearer " + credential}}
}

// BearerMap is Bearer for StreamOptions.Header.
func BearerMap(credential string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + credential}
}
