package pub

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startRelay runs a relay where users need a token to publish, with the
// test API key, and publishes limited to a burst of burst per caller.
func startRelay(t *testing.T, burst int) *relaytest.Relay {
	t.Helper()
	return relaytest.Start(t, relaytest.Options{Relay: relay.Options{
		Auth: relaytest.NewAuth(t, auth.Config{}),
		Namespaces: &rooms.Namespaces{Default: rooms.NamespaceOptions{
			Anonymous: true, Publish: rooms.PublishAuthenticated, Presence: true,
		}},
		Limits: relay.Limits{PublishRate: 0.001, PublishBurst: burst},
	}})
}

// pub runs the command and returns its exit code, stdout and stderr.
func pub(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := Main(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// answer is the relay's 202 body as pub prints it.
type answer struct {
	ID    *string
	Room  string
	Rooms []string
	Event string
}

func decode(t *testing.T, stdout string) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal([]byte(stdout), &a); err != nil {
		t.Fatalf("stdout is not the relay's answer (%v): %q", err, stdout)
	}
	return a
}

// Each option of the HTTP API reaches the relay, and what subscribers
// receive is what the command line said.
func TestPublish(t *testing.T) {
	r := startRelay(t, 1000)
	alice := relaytest.Token(t, "alice", time.Hour, relaytest.Claims{"name": "Alice"})
	env := map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_TOKEN": alice}
	lobby := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{})
	lobby.Expect(t, "roomcast:connected")
	news := r.Subscribe(t, "/v1/rooms/news/events", relaytest.StreamOptions{})
	news.Expect(t, "roomcast:connected")
	chat := r.Subscribe(t, "/v1/rooms/chat:x/events", relaytest.StreamOptions{})
	chat.Expect(t, "roomcast:connected")
	bob := r.Subscribe(t, "/v1/users/me/events", relaytest.StreamOptions{Header: relaytest.BearerMap(relaytest.Token(t, "bob", time.Hour, nil))})
	bob.Expect(t, "roomcast:connected")

	tests := []struct {
		name     string
		env      map[string]string
		stdin    string
		args     []string
		stream   *relaytest.Stream
		event    string
		data     string // JSON
		from     string // JSON
		volatile bool
		encoding string
	}{
		{name: "a string", args: []string{"lobby", "hello"}, stream: lobby, event: "message", data: `"hello"`, from: `{"user":"alice","name":"Alice"}`},
		{name: "event name and JSON", args: []string{"-event", "chat", "-json", "lobby", `{"text":"hi"}`}, stream: lobby, event: "chat", data: `{"text":"hi"}`, from: `{"user":"alice","name":"Alice"}`},
		{name: "from stdin", stdin: "line one\nline two", args: []string{"lobby", "-"}, stream: lobby, event: "message", data: `"line one\nline two"`, from: `{"user":"alice","name":"Alice"}`},
		// Bytes that are not UTF-8 were replaced by U+FFFD on the way
		// into a JSON string; they now arrive as curl --data-binary's do.
		{name: "binary from stdin", stdin: "\xff\xfe\x00\x01", args: []string{"-event", "blob", "lobby", "-"}, stream: lobby, event: "blob", data: `"//4AAQ=="`, from: `{"user":"alice","name":"Alice"}`, encoding: "base64"},
		{name: "binary private message", args: []string{"-user", "bob", "-event", "blob", "-volatile", "\xffx"}, stream: bob, event: "blob", data: `"/3g="`, from: `{"user":"alice","name":"Alice"}`, volatile: true, encoding: "base64"},
		{name: "volatile", args: []string{"-volatile", "-event", "typing", "lobby", "x"}, stream: lobby, event: "typing", data: `"x"`, from: `{"user":"alice","name":"Alice"}`, volatile: true},
		{name: "several rooms", args: []string{"-event", "notice", "lobby,news", "both"}, stream: news, event: "notice", data: `"both"`, from: `{"user":"alice","name":"Alice"}`},
		{name: "private message", args: []string{"-user", "bob", "-event", "pm", "psst"}, stream: bob, event: "pm", data: `"psst"`, from: `{"user":"alice","name":"Alice"}`},
		{name: "namespace broadcast", env: map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_API_KEY": relaytest.APIKey},
			args: []string{"-namespace", "chat", "-event", "notice", "closing"}, stream: chat, event: "notice", data: `"closing"`, from: `null`},
		{name: "API key as a user", env: map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_API_KEY": relaytest.APIKey},
			args: []string{"-as", "support:Support", "news", "welcome"}, stream: news, event: "message", data: `"welcome"`, from: `{"user":"support","name":"Support"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env
			if tt.env != nil {
				e = tt.env
			}
			code, stdout, stderr := pub(t, e, tt.stdin, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			a := decode(t, stdout)
			if a.Event != tt.event || (a.ID == nil) != tt.volatile {
				t.Errorf("answer %s", stdout)
			}
			if tt.name == "several rooms" {
				lobby.Expect(t, tt.event) // the same event reached both rooms
			}
			env := tt.stream.Expect(t, tt.event).Envelope(t)
			if string(env.Data) != tt.data || string(env.From) != tt.from || (env.ID == nil) != tt.volatile || env.Encoding != tt.encoding {
				t.Errorf("received data %s (encoding %q) from %s id %v, want %s (%q) from %s", env.Data, env.Encoding, env.From, env.ID, tt.data, tt.encoding, tt.from)
			}
		})
	}
	if t.Failed() {
		return
	}

	// A repeat with the same idempotency key publishes nothing and answers
	// as the first time did.
	_, first, _ := pub(t, env, "", "-idempotency-key", "order-42", "lobby", "paid")
	lobby.Expect(t, "message")
	code, again, stderr := pub(t, env, "", "-idempotency-key", "order-42", "lobby", "paid")
	if code != 0 || again != first || !strings.Contains(stderr, "nothing was published again") {
		t.Errorf("repeat: exit %d, %q after %q; stderr %q", code, again, first, stderr)
	}
	_, _, _ = pub(t, env, "", "lobby", "marker")
	if env := lobby.Expect(t, "message").Envelope(t); string(env.Data) != `"marker"` {
		t.Errorf("after the repeat the stream got %s, want the marker (the repeat published again)", env.Data)
	}
}

// A refusal exits 1 with the relay's status and error, and a hint where
// there is a usual remedy; a usage error exits 2 without asking the relay.
func TestRefused(t *testing.T) {
	r := startRelay(t, 1)
	alice := relaytest.Token(t, "alice", time.Hour, nil)
	url := map[string]string{"ROOMCAST_URL": r.URL}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want []string
	}{
		{"no token", url, []string{"lobby", "x"}, 1, []string{"401 Unauthorized", "unauthenticated", "-token"}},
		{"bad token", url, []string{"-token", "nonsense", "lobby", "x"}, 1, []string{"401", "invalid_token"}},
		{"first of the burst", url, []string{"-token", alice, "lobby", "x"}, 0, nil},
		{"over the rate", url, []string{"-token", alice, "lobby", "x"}, 1, []string{"429 Too Many Requests", "rate_limited", "retry after"}},
		{"exclude without the API key", url, []string{"-token", relaytest.Token(t, "bob", time.Hour, nil), "-exclude", "c1", "lobby", "x"}, 1, []string{"403 Forbidden", "forbidden", "exclude"}},
		{"no DATA", url, []string{"lobby"}, 2, []string{"give ROOM and DATA"}},
		{"bad room", url, []string{"bad room", "x"}, 2, []string{"invalid room"}},
		{"bad JSON", url, []string{"-json", "lobby", "{"}, 2, []string{"not a JSON value"}},
		{"bad URL", map[string]string{"ROOMCAST_URL": "localhost:8080"}, []string{"lobby", "x"}, 2, []string{"-url"}},
		{"URL with a query", map[string]string{"ROOMCAST_URL": r.URL + "/?x=1"}, []string{"lobby", "x"}, 2, []string{"-url", "no query or fragment"}},
		{"no time to publish", url, []string{"-timeout", "0s", "lobby", "x"}, 2, []string{"-timeout must be above 0"}},
		{"two targets", url, []string{"-user", "bob", "-namespace", "chat", "x"}, 2, []string{"give ROOM and DATA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := pub(t, tt.env, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
	if resp := r.Get(t, "/readyz"); resp.Status != http.StatusOK {
		t.Errorf("relay: %d", resp.Status)
	}
}

// DATA that pub cannot send as it is, it refuses rather than altering it:
// bytes that are not UTF-8 with options only a JSON body carries, and stdin
// beyond what any relay accepts (it was cut at 64 MiB and sent truncated).
func TestDataRefused(t *testing.T) {
	r := startRelay(t, 1000)
	env := map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_API_KEY": relaytest.APIKey}
	lobby := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{})
	lobby.Expect(t, "roomcast:connected")
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"binary as a user", "", []string{"-as", "support", "lobby", "\xff"}, "not UTF-8"},
		{"binary to several rooms", "", []string{"lobby,news", "\xff"}, "not UTF-8"},
		{"binary with -exclude", "", []string{"-exclude", "c1", "lobby", "\xff"}, "not UTF-8"},
		{"stdin too large", strings.Repeat("x", 16<<20+1), []string{"lobby", "-"}, "more than 16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := pub(t, env, tt.stdin, tt.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, stdout, stderr, tt.want)
			}
		})
	}
	// Nothing reached the room: the next event is the marker.
	if code, _, stderr := pub(t, env, "", "lobby", "marker"); code != 0 {
		t.Fatalf("marker: %s", stderr)
	}
	if got := lobby.Expect(t, "message").Envelope(t); string(got.Data) != `"marker"` {
		t.Errorf("the room received %s before the marker", got.Data)
	}
}
