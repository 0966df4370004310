package browsertest

import (
	"flag"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

var screenshot = flag.String("screenshot", "", "write a PNG of the demo chat to this file (docs/demo.png)")

// relayOptions configure startRelay.
type relayOptions struct {
	// grace is how long a user's last connection may be gone before
	// roomcast:leave (default 300 ms).
	grace time.Duration
	// wrap wraps the relay's handler.
	wrap func(http.Handler) http.Handler
}

// startRelay runs a relay over real HTTP as main runs it in open mode:
// anyone may subscribe and publish, presence is on, and development tokens
// are signed with the key the authenticator accepts. Reconnect delays and
// the presence grace are short so that the tests are quick.
func startRelay(t *testing.T, o relayOptions) *relaytest.Relay {
	t.Helper()
	if o.grace == 0 {
		o.grace = 300 * time.Millisecond
	}
	open := rooms.Namespaces{Default: rooms.NamespaceOptions{
		Anonymous: true, Publish: rooms.PublishAnyone, Presence: true, JoinLeaveEvents: true,
	}}
	return relaytest.Start(t, relaytest.Options{
		Relay: relay.Options{
			Auth:        relaytest.NewAuth(t, auth.Config{}),
			DevTokenKey: []byte(relaytest.JWTSecret),
			Namespaces:  &open,
			RetryMin:    100 * time.Millisecond,
			RetryMax:    300 * time.Millisecond,
		},
		Memory: memory.Options{PresenceGrace: o.grace},
		Wrap:   o.wrap,
	})
}

func TestTwoUsersChat(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	bob := newUser(t, r.URL+"/", "Bob")

	alice.waitOnline("Alice (you)", "Bob")
	bob.waitOnline("Alice", "Bob (you)")
	alice.waitNote("a note that Bob joined", "Bob joined #lobby")

	alice.say("Hello Bob!")
	bob.waitMessage("Alice", "Hello Bob!")
	alice.waitMessage("Alice", "Hello Bob!")
	// Text that looks like markup stays text.
	hostile := `<img src=x onerror="document.title='pwned'"><b>bold</b>`
	bob.say(hostile)
	alice.waitMessage("Bob", hostile)
	var injected bool
	alice.eval(`document.querySelector('#messages img, #messages b') !== null || document.title === 'pwned'`, &injected)
	if injected {
		t.Error("a message was inserted as HTML")
	}
	for _, p := range []*page{alice, bob} {
		if got, want := p.messages(), []string{"Hello Bob!", hostile}; !slices.Equal(got, want) {
			t.Errorf("%s shows %q, want %q", p.name, got, want)
		}
	}
	alice.waitFor("the transport is SSE", `() => document.getElementById('status').dataset.transport === 'sse'`)

	// Someone who comes later sees the conversation from history.
	carol := newUser(t, r.URL+"/", "Carol")
	carol.waitMessage("Alice", "Hello Bob!")
	if got, want := carol.messages(), []string{"Hello Bob!", hostile}; !slices.Equal(got, want) {
		t.Errorf("carol's history shows %q, want %q", got, want)
	}

	// Switching rooms: Bob leaves the lobby for #random.
	bob.do("switch to #random", chromedp.Click(chromedp.CSS(`#rooms button[data-room="random"]`)))
	bob.waitOnline("Bob (you)")
	alice.waitOnline("Alice (you)", "Carol")
	bob.say("anyone here?")
	bob.waitMessage("Bob", "anyone here?")
	alice.say("still in the lobby")
	carol.waitMessage("Alice", "still in the lobby")
	if got := bob.messages(); slices.Contains(got, "still in the lobby") {
		t.Errorf("bob, in #random, got a lobby message: %q", got)
	}
	if got := alice.messages(); slices.Contains(got, "anyone here?") {
		t.Errorf("alice, in the lobby, got a #random message: %q", got)
	}

	if *screenshot != "" {
		alice.say("Welcome, Carol. This demo runs on roomcast: SSE, with long-polling as a fallback.")
		carol.waitMessage("Alice", "Welcome, Carol. This demo runs on roomcast: SSE, with long-polling as a fallback.")
		carol.do("type", chromedp.SendKeys(chromedp.CSS("#message"), "Thanks! Where is the"))
		alice.waitTyping("Carol typing", "Carol is typing…")
		png, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTypingIndicator(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	bob := newUser(t, r.URL+"/", "Bob")
	bob.waitOnline("Alice", "Bob (you)")

	alice.do("type", chromedp.SendKeys(chromedp.CSS("#message"), "I am writ"))
	bob.waitTyping("Bob sees Alice typing", "Alice is typing…")
	var own string
	alice.eval(`document.getElementById('typing').textContent`, &own)
	if own != "" {
		t.Errorf("alice sees %q about her own typing", own)
	}
	alice.do("send", chromedp.Click(chromedp.CSS("#send")))
	bob.waitMessage("Alice", "I am writ")
	bob.waitTyping("the indicator clears", "")

	// Typing that stops without a message clears too.
	alice.do("type again", chromedp.SendKeys(chromedp.CSS("#message"), "hmm"))
	bob.waitTyping("Bob sees Alice typing again", "Alice is typing…")
	bob.waitTyping("the indicator clears after a pause", "")
}

func TestPrivateMessage(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	bob := newUser(t, r.URL+"/", "Bob")
	carol := newUser(t, r.URL+"/", "Carol")
	alice.waitOnline("Alice (you)", "Bob", "Carol")

	alice.do("choose Bob for a private message", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll('#online button.member')].find(b => b.textContent === 'Bob').click()`))
	alice.waitFor("the composer addresses Bob", `() => !document.getElementById('pm-target').hidden && document.getElementById('pm-name').textContent === 'Bob'`)
	alice.say("just between us")
	bob.waitFor("Bob gets the private message", `() => [...document.querySelectorAll('#messages li.private')].some(li =>
		li.querySelector('.label').textContent === 'Private from ' && li.querySelector('.sender').textContent === 'Alice' &&
		li.querySelector('.text').textContent === 'just between us')`)
	alice.waitFor("Alice sees it as sent", `() => [...document.querySelectorAll('#messages li.private')].some(li =>
		li.querySelector('.label').textContent === 'Private to ' && li.querySelector('.sender').textContent === 'Bob')`)

	// Back to the room: a public message after the private one reaches
	// Carol, who never sees the private one.
	alice.do("back to the room", chromedp.Click(chromedp.CSS("#pm-cancel")))
	alice.say("public again")
	carol.waitMessage("Alice", "public again")
	bob.waitMessage("Alice", "public again")
	var leaked bool
	carol.eval(`document.getElementById('messages').textContent.includes('just between us')`, &leaked)
	if leaked {
		t.Error("carol saw the private message to bob")
	}
}

func TestPresenceWhenTabCloses(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	bob := newUser(t, r.URL+"/", "Bob")
	alice.waitOnline("Alice (you)", "Bob")

	bob.close()
	alice.waitOnline("Alice (you)")
	alice.waitNote("a note that Bob left", "Bob left #lobby")
	var p rooms.PresenceList
	r.Get(t, "/v1/rooms/lobby/presence").JSON(t, &p)
	if p.Users != 1 || len(p.Members) != 1 || p.Members[0].Name != "Alice" {
		t.Errorf("presence after Bob closed his tab: %+v, want Alice alone", p)
	}
}
