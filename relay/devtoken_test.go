package relay_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/sign"
)

// devTokenAnswer is the answer of POST /v1/dev/token.
type devTokenAnswer struct {
	Token, User, Name string
}

// startDevRelay runs a relay that issues development tokens signed with
// the key its authenticator accepts.
func startDevRelay(t *testing.T) (*relaytest.Relay, *auth.Authenticator) {
	t.Helper()
	a := relaytest.NewAuth(t, auth.Config{})
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: a, DevTokenKey: []byte(relaytest.JWTSecret)}})
	return r, a
}

func postDevToken(t *testing.T, r *relaytest.Relay, body string, header http.Header) *relaytest.Response {
	t.Helper()
	if header == nil {
		header = http.Header{}
	}
	header.Set("Content-Type", "application/json")
	return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/dev/token", Body: []byte(body), Header: header})
}

func TestDevToken(t *testing.T) {
	r, a := startDevRelay(t)
	resp := postDevToken(t, r, `{"name":"  Alice <b>  "}`, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.Status, resp.Body)
	}
	var got devTokenAnswer
	resp.JSON(t, &got)
	if got.Name != "Alice <b>" || !strings.HasPrefix(got.User, "dev-") || len(got.User) < 16 {
		t.Errorf("answer %+v, want the trimmed name and a random dev- user", got)
	}
	id, err := a.VerifyToken(got.Token)
	if err != nil {
		t.Fatalf("the relay's authenticator refuses its development token: %v", err)
	}
	if id.User != got.User || id.Name != got.Name {
		t.Errorf("token identity %+v, want user %q named %q", id, got.User, got.Name)
	}
	if ttl := time.Until(id.Expires); ttl < 11*time.Hour || ttl > 12*time.Hour+time.Minute {
		t.Errorf("token expires in %s, want 12h", ttl)
	}

	// The user id is the server's choice: every request gets a new one...
	var other devTokenAnswer
	postDevToken(t, r, `{"name":"Alice <b>","sub":"alice"}`, nil).JSON(t, &other)
	if other.User == got.User || other.User == "alice" {
		t.Errorf("a second token got user %q (first %q): want a fresh random user", other.User, got.User)
	}
	// ...unless the caller renews its own development token, which keeps
	// its claims, the name included.
	var renewed devTokenAnswer
	postDevToken(t, r, `{"name":"Alice again"}`, relaytest.Bearer(got.Token)).JSON(t, &renewed)
	if renewed.User != got.User || renewed.Name != got.Name {
		t.Errorf("renewal %+v, want user %q named %q", renewed, got.User, got.Name)
	}
	// A real user's token does not make a development token of that user.
	var notRenewed devTokenAnswer
	postDevToken(t, r, `{"name":"x"}`, relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, nil))).JSON(t, &notRenewed)
	if notRenewed.User == "alice" || !strings.HasPrefix(notRenewed.User, "dev-") {
		t.Errorf("a token of user alice got a development token of %q", notRenewed.User)
	}

	// The token works: a ticket, then a stream whose events carry the name.
	var ticket struct{ Ticket string }
	tr := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(got.Token)})
	tr.JSON(t, &ticket)
	if tr.Status != http.StatusCreated || ticket.Ticket == "" {
		t.Fatalf("ticket: status %d, %s", tr.Status, tr.Body)
	}
}

func TestDevTokenRefusals(t *testing.T) {
	r, _ := startDevRelay(t)
	cases := []struct {
		name, body string
		header     http.Header
		status     int
		code       string
	}{
		{"empty name", `{"name":""}`, nil, 400, "invalid_parameter"},
		{"blank name", `{"name":"   "}`, nil, 400, "invalid_parameter"},
		{"long name", `{"name":"` + strings.Repeat("é", 65) + `"}`, nil, 400, "invalid_parameter"},
		{"control character", `{"name":"a\u0007b"}`, nil, 400, "invalid_parameter"},
		{"no JSON", `name=alice`, nil, 400, "invalid_json"},
		{"bad bearer", `{"name":"a"}`, relaytest.Bearer("not-a-token"), 401, "invalid_token"},
		{"other site", `{"name":"a"}`, http.Header{"Origin": {"https://evil.example"}}, 403, "forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := postDevToken(t, r, c.body, c.header)
			var e struct{ Error struct{ Code string } }
			resp.JSON(t, &e)
			if resp.Status != c.status || e.Error.Code != c.code {
				t.Errorf("status %d code %q, want %d %q (%s)", resp.Status, e.Error.Code, c.status, c.code, resp.Body)
			}
		})
	}
}

func TestDevTokenOffWithoutKey(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})}})
	resp := postDevToken(t, r, `{"name":"Alice"}`, nil)
	var e struct{ Error struct{ Code string } }
	resp.JSON(t, &e)
	if resp.Status != http.StatusNotFound || e.Error.Code != "not_found" {
		t.Errorf("status %d %s, want 404 not_found", resp.Status, resp.Body)
	}
}

func TestDevTokenRateLimit(t *testing.T) {
	r, _ := startDevRelay(t)
	var limited *relaytest.Response
	for i := 0; i < 40 && limited == nil; i++ {
		if resp := postDevToken(t, r, `{"name":"n"}`, nil); resp.Status == http.StatusTooManyRequests {
			limited = resp
		} else if resp.Status != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.Status)
		}
	}
	if limited == nil {
		t.Fatal("40 development tokens in a row from one address were all issued")
	}
	var e struct{ Error struct{ Code string } }
	if json.Unmarshal(limited.Body, &e); e.Error.Code != "rate_limited" || limited.Header.Get("Retry-After") == "" {
		t.Errorf("429 %s without rate_limited and Retry-After", limited.Body)
	}
}

// TestDevTokenRenewalHostile: with development tokens on beside a real
// secret, only tokens the relay minted itself are renewed, and a renewal
// keeps every claim. A backend's token for a "dev-" user limited to some
// rooms was once renewed into a 12-hour token without the limit.
func TestDevTokenRenewalHostile(t *testing.T) {
	t.Parallel()
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth: relaytest.NewAuth(t, auth.Config{}), DevTokenKey: []byte(relaytest.JWTSecret), Namespaces: testNamespaces(),
	}})
	var minted devTokenAnswer
	if resp := postDevToken(t, r, `{"name":"Mallory"}`, nil); resp.Status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.Status, resp.Body)
	} else {
		resp.JSON(t, &minted)
	}
	mintedClaims := tokenClaims(t, minted.Token)
	limited := map[string]any{"subscribe": []string{"team-1"}, "publish": []string{"team-1"}}
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(c jwt.MapClaims) string {
		return relaytest.Sign(t, jwt.SigningMethodHS256, []byte(relaytest.JWTSecret), c)
	}

	// Tokens that must not be renewed as their subject: the answer is a
	// fresh development user (anyone may have one), never the subject.
	notRenewed := []struct{ name, token, sub string }{
		{"a backend's restricted dev- token", relaytest.Token(t, "dev-victim", time.Hour, relaytest.Claims{"rooms": limited}), "dev-victim"},
		{"a forged mark", relaytest.Token(t, "dev-victim", time.Hour, relaytest.Claims{"rooms": limited, "roomcast_dev": "forged"}), "dev-victim"},
		{"another token's mark", sign(jwt.MapClaims{"sub": "dev-victim", "exp": exp, "roomcast_dev": mintedClaims["roomcast_dev"]}), "dev-victim"},
		{"a real user's token", relaytest.Token(t, "alice", time.Hour, nil), "alice"},
	}
	for _, c := range notRenewed {
		t.Run(c.name, func(t *testing.T) {
			resp := postDevToken(t, r, `{"name":"x"}`, relaytest.Bearer(c.token))
			var got devTokenAnswer
			resp.JSON(t, &got)
			if resp.Status != http.StatusOK || got.User == c.sub || !strings.HasPrefix(got.User, "dev-") {
				t.Fatalf("status %d, user %q: want a fresh development user, not %q", resp.Status, got.User, c.sub)
			}
			if _, ok := tokenClaims(t, got.Token)["rooms"]; ok {
				t.Error("the fresh token carries a rooms claim")
			}
		})
	}
	// Tokens that are not valid at all are refused, as anywhere.
	refused := []struct{ name, token string }{
		{"alg none", relaytest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": minted.User, "exp": exp, "roomcast_dev": mintedClaims["roomcast_dev"]})},
		{"another key", relaytest.Sign(t, jwt.SigningMethodHS256, []byte("another secret of 32 bytes, or more"), jwt.MapClaims{"sub": minted.User, "exp": exp, "roomcast_dev": mintedClaims["roomcast_dev"]})},
		{"expired", sign(jwt.MapClaims{"sub": minted.User, "exp": time.Now().Add(-time.Hour).Unix(), "roomcast_dev": mintedClaims["roomcast_dev"]})},
		{"truncated", minted.Token[:len(minted.Token)-4]},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, postDevToken(t, r, `{"name":"x"}`, relaytest.Bearer(c.token)), http.StatusUnauthorized, "invalid_token")
		})
	}

	t.Run("the relay's own token keeps every claim", func(t *testing.T) {
		// A minted token with a restriction added (by whoever holds the
		// secret): renewing it must not drop the restriction.
		c := jwt.MapClaims{}
		for k, v := range mintedClaims {
			c[k] = v
		}
		c["rooms"] = limited
		resp := postDevToken(t, r, `{"name":"Someone else"}`, relaytest.Bearer(sign(c)))
		var got devTokenAnswer
		resp.JSON(t, &got)
		if resp.Status != http.StatusOK || got.User != minted.User || got.Name != "Mallory" {
			t.Fatalf("status %d, answer %+v: want %q named Mallory", resp.Status, got, minted.User)
		}
		renewed := tokenClaims(t, got.Token)
		if rooms, _ := json.Marshal(renewed["rooms"]); string(rooms) != `{"publish":["team-1"],"subscribe":["team-1"]}` {
			t.Errorf("renewed rooms claim %s, want the token's", rooms)
		}
		if ttl := time.Until(time.Unix(int64(renewed["exp"].(float64)), 0)); ttl < 11*time.Hour {
			t.Errorf("renewed token expires in %s, want 12h", ttl)
		}
		// The restriction holds over HTTP.
		h := relaytest.Bearer(got.Token)
		publishAs(t, r, "team-1", h, `{}`)
		wantError(t, postJSON(t, r, "/v1/rooms/team-2/events", h, `{}`), http.StatusForbidden, "forbidden")
	})
}

// tokenClaims decodes a JWT's claims without verifying it.
func tokenClaims(t *testing.T, token string) jwt.MapClaims {
	t.Helper()
	c := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A development token minted by the release before rooms/sign carries a
// mark keyed with the development key itself: it still renews as its user
// (LEGACY(sign, 2026-12)), and the renewal carries the new mark, which a
// mark made for another purpose does not pass for.
func TestDevTokenLegacyMarkRenews(t *testing.T) {
	t.Parallel()
	r, a := startDevRelay(t)
	key := []byte(relaytest.JWTSecret)
	// The mark as the previous release made it.
	legacyMark := func(user string) string {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("roomcast development token\x00"))
		m.Write([]byte(user))
		return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	const user = "dev-minted-last-week"
	old := relaytest.Sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": user, "name": "Old",
		"exp": time.Now().Add(time.Hour).Unix(), "roomcast_dev": legacyMark(user)})
	var renewed devTokenAnswer
	if resp := postDevToken(t, r, `{"name":"x"}`, relaytest.Bearer(old)); resp.Status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.Status, resp.Body)
	} else {
		resp.JSON(t, &renewed)
	}
	if renewed.User != user || renewed.Name != "Old" {
		t.Fatalf("renewal of a legacy-marked token: %+v, want user %q named Old", renewed, user)
	}
	if _, err := a.VerifyToken(renewed.Token); err != nil {
		t.Fatal(err)
	}
	mark, _ := tokenClaims(t, renewed.Token)["roomcast_dev"].(string)
	if mark == "" || mark == legacyMark(user) {
		t.Fatalf("renewed mark %q: want one under the derived key, not the legacy one", mark)
	}

	// A tag of the same length made with another purpose's key is no
	// mark.
	ticketKey, err := sign.Key(key, sign.Ticket)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, ticketKey)
	m.Write([]byte(user))
	crossed := relaytest.Sign(t, jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": user,
		"exp": time.Now().Add(time.Hour).Unix(), "roomcast_dev": base64.RawURLEncoding.EncodeToString(m.Sum(nil))})
	var fresh devTokenAnswer
	postDevToken(t, r, `{"name":"x"}`, relaytest.Bearer(crossed)).JSON(t, &fresh)
	if fresh.User == user || !strings.HasPrefix(fresh.User, "dev-") {
		t.Fatalf("a token marked with the ticket key renewed as %q", fresh.User)
	}
}
