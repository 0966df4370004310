package relay_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/relaytest"
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
	// ...unless the caller renews its own development token.
	var renewed devTokenAnswer
	postDevToken(t, r, `{"name":"Alice again"}`, relaytest.Bearer(got.Token)).JSON(t, &renewed)
	if renewed.User != got.User || renewed.Name != "Alice again" {
		t.Errorf("renewal %+v, want user %q named Alice again", renewed, got.User)
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
