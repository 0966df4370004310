package relay_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// ticketFor exchanges token for a ticket.
func ticketFor(t *testing.T, r *relaytest.Relay, token string) (string, int) {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(token)})
	if resp.Status != http.StatusCreated {
		t.Fatalf("POST /v1/tickets: status %d, want 201: %s", resp.Status, resp.Body)
	}
	if got := objectKeys(t, resp.Body); strings.Join(got, ",") != "expires_in,ticket" {
		t.Errorf("ticket answer keys %v, want expires_in and ticket", got)
	}
	var a struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	resp.JSON(t, &a)
	if a.Ticket == "" || a.ExpiresIn < 1 || a.ExpiresIn > 60 {
		t.Fatalf("ticket answer %s: want a ticket valid 1 to 60 s", resp.Body)
	}
	return a.Ticket, a.ExpiresIn
}

// TestTickets walks a browser through tickets: one is issued for a bearer
// token, opens one stream or poll and no more, carries the token's
// identity, and is worth nothing on a state-changing route.
func TestTickets(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	token := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"name": "Alice"})

	ticket, ttl := ticketFor(t, r, token)
	if ttl != 60 {
		t.Errorf("expires_in %d for an hour-long token, want 60", ttl)
	}
	// A ticket never outlives its token.
	if _, ttl := ticketFor(t, r, relaytest.Token(t, "alice", 10*time.Second, nil)); ttl > 10 {
		t.Errorf("expires_in %d for a token expiring in 10 s", ttl)
	}

	// The ticket opens the user's own stream: it carries the identity.
	s := r.Subscribe(t, "/v1/users/me/events?ticket="+ticket, relaytest.StreamOptions{})
	s.Connected(t)
	publishAs(t, r, "x", userHeader(t, "bob"), `{"data":0}`) // unrelated
	postJSON(t, r, "/v1/users/alice/events", server(), `{"data":"for alice"}`)
	if env := s.Expect(t, "message").Envelope(t); string(env.Data) != `"for alice"` {
		t.Errorf("user stream got %s", env.Data)
	}

	// Spent: a second use is refused, wherever it is used.
	for _, path := range []string{"/v1/users/me/events?ticket=", "/v1/rooms/room1/events?ticket=", "/v1/rooms/room1/poll?timeout=0&ticket="} {
		resp := r.Open(t, relaytest.Request{Path: path + ticket})
		if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "already used") {
			t.Errorf("%s: message %q", path, msg)
		}
		if bytes.Contains(resp.Body, []byte(ticket[:20])) {
			t.Errorf("the answer repeats the ticket: %s", resp.Body)
		}
	}

	// A poll takes a ticket too.
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/poll?timeout=0&ticket=" + mustTicket(t, r, token)}); resp.Status != http.StatusOK {
		t.Errorf("poll with a ticket: status %d: %s", resp.Status, resp.Body)
	}

	// State-changing routes ignore ?ticket= and refuse a ticket as bearer;
	// neither spends it.
	unspent := mustTicket(t, r, token)
	wantError(t, postJSON(t, r, "/v1/rooms/room1/events?ticket="+unspent, nil, `{}`), http.StatusUnauthorized, "unauthenticated")
	wantError(t, postJSON(t, r, "/v1/rooms/room1/events", relaytest.Bearer(unspent), `{}`), http.StatusUnauthorized, "invalid_token")
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets?ticket=" + unspent}), http.StatusUnauthorized, "unauthenticated")
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + unspent}); resp.Status != http.StatusOK {
		t.Errorf("the ticket used on POST routes no longer opens a stream: %d %s", resp.Status, resp.Body)
	}

	// Tampered and repeated tickets.
	resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + relaytest.Tamper(mustTicket(t, r, token))})
	if msg := wantError(t, resp, http.StatusUnauthorized, "invalid_token"); !strings.Contains(msg, "ticket") {
		t.Errorf("tampered ticket: message %q", msg)
	}
	one, two := mustTicket(t, r, token), mustTicket(t, r, token)
	wantError(t, r.Open(t, relaytest.Request{Path: "/v1/rooms/room1/events?ticket=" + one + "&ticket=" + two}), http.StatusUnauthorized, "invalid_token")

	// Only users get tickets: the API key's rights never reach a URL.
	wantError(t, r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: server()}), http.StatusForbidden, "forbidden")
}

func mustTicket(t *testing.T, r *relaytest.Relay, token string) string {
	t.Helper()
	ticket, _ := ticketFor(t, r, token)
	return ticket
}
