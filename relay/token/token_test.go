package token

import (
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := Main(args, func(k string) string { return env[k] }, &stdout, &stderr)
	return code, strings.TrimSpace(stdout.String()), stderr.String()
}

// The tokens it mints are what the relay accepts: the user, name and room
// patterns hold on a relay configured with the same secret.
func TestTokenOnRelay(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth:       relaytest.NewAuth(t, auth.Config{}),
		Namespaces: &rooms.Namespaces{Default: rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true}},
	}})
	env := map[string]string{"ROOMCAST_JWT_SECRET": relaytest.JWTSecret}
	code, tok, stderr := run(t, env, "-name", "Alice", "-subscribe", "team-*,lobby", "-publish", "team-*", "-ttl", "2m", "alice")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	s := r.Subscribe(t, "/v1/rooms/team-a/events", relaytest.StreamOptions{Header: relaytest.BearerMap(tok)})
	s.Expect(t, "roomcast:connected")
	r.Publish(t, "/v1/rooms/team-a/events", "text/plain", []byte("hi"), relaytest.Bearer(tok))
	if env := s.Expect(t, "message").Envelope(t); string(env.From) != `{"user":"alice","name":"Alice"}` {
		t.Errorf("from %s", env.From)
	}
	resp := r.Do(t, relaytest.Request{Method: "POST", Path: "/v1/rooms/lobby/events", Header: relaytest.Bearer(tok), Body: []byte("hi")})
	if resp.Status != 403 {
		t.Errorf("publish to a room outside -publish: %d %s", resp.Status, resp.Body)
	}
	resp = r.Do(t, relaytest.Request{Path: "/v1/rooms/other/history", Header: relaytest.Bearer(tok)})
	if resp.Status != 403 {
		t.Errorf("history of a room outside -subscribe: %d %s", resp.Status, resp.Body)
	}

	// Another secret: the relay refuses the token.
	_, other, _ := run(t, map[string]string{"ROOMCAST_JWT_SECRET": strings.Repeat("x", 32)}, "alice")
	resp = r.Do(t, relaytest.Request{Path: "/v1/rooms/lobby/history", Header: relaytest.Bearer(other)})
	if resp.Status != 401 || !strings.Contains(string(resp.Body), "bad signature") {
		t.Errorf("token of another secret: %d %s", resp.Status, resp.Body)
	}
}

// Its lifetime is -ttl: a token minted already expired is refused.
func TestTokenLifetime(t *testing.T) {
	tok, err := mint([]string{"alice"}, relaytest.JWTSecret, "", "", "", time.Minute, "", "", time.Now().Add(-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	a := relaytest.NewAuth(t, auth.Config{Leeway: -1})
	if _, err := a.VerifyToken(tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
}

func TestTokenUsage(t *testing.T) {
	secret := map[string]string{"ROOMCAST_JWT_SECRET": relaytest.JWTSecret}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no secret", nil, []string{"alice"}, "set ROOMCAST_JWT_SECRET"},
		{"short secret", nil, []string{"-secret", "short", "alice"}, "at least 32 bytes"},
		{"no user", secret, nil, "exactly one USER"},
		{"bad user", secret, []string{"al\x01ice"}, "invalid user id"},
		// Minted for "al\ufffdice": JSON cannot carry the byte.
		{"user not UTF-8", secret, []string{"al\xffice"}, "must be UTF-8"},
		{"no lifetime", secret, []string{"-ttl", "0s", "alice"}, "-ttl"},
		// exp is in whole seconds: the token was expired when minted.
		{"lifetime below a second", secret, []string{"-ttl", "500ms", "alice"}, "-ttl must be at least 1s"},
		// -subscribe "$ROOMS" with ROOMS empty minted a token without any
		// limit, and -publish ' ' one allowed nothing.
		{"empty -subscribe", secret, []string{"-subscribe", "", "alice"}, "-subscribe names no room pattern"},
		{"blank -publish", secret, []string{"-publish", " , ", "alice"}, "-publish names no room pattern"},
		// Patterns no room can match denied everything silently.
		{"default namespace prefix", secret, []string{"-subscribe", "lobby,default:news", "alice"}, `("news", not "default:news")`},
		{"upper-case namespace", secret, []string{"-publish", "Chat:*", "alice"}, `-publish "Chat:*" matches no room`},
		{"space in a pattern", secret, []string{"-publish", "team a", "alice"}, `-publish "team a" matches no room`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.env, tt.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout, stderr, tt.want)
			}
		})
	}
}
