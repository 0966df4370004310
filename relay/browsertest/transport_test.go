package browsertest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

func TestFallbackToPollingBehindBufferingProxy(t *testing.T) {
	r := startRelay(t, relayOptions{})
	proxy := newBufferingProxy(t, r.URL)
	alice := newUser(t, proxy.URL+"/", "Alice")
	alice.waitConnected("poll")
	bob := newUser(t, r.URL+"/", "Bob")
	bob.waitConnected("sse")
	alice.waitOnline("Alice (you)", "Bob")
	bob.waitOnline("Alice", "Bob (you)")

	alice.say("through the proxy")
	bob.waitMessage("Alice", "through the proxy")
	alice.waitMessage("Alice", "through the proxy")
	bob.say("back to you")
	alice.waitMessage("Bob", "back to you")
	if got, want := alice.messages(), []string{"through the proxy", "back to you"}; !slices.Equal(got, want) {
		t.Errorf("alice, polling, shows %q, want %q", got, want)
	}
	// Private messages reach a poller on its user channel.
	bob.do("choose Alice for a private message", evalVoid(`[...document.querySelectorAll('#online button.member')].find(b => b.textContent === 'Alice').click()`))
	bob.say("psst")
	alice.waitFor("the private message arrives by poll", `() => [...document.querySelectorAll('#messages li.private .text')].some(e => e.textContent === 'psst')`)

	streams := proxy.seen("GET /v1/stream")
	if len(streams) == 0 || !strings.Contains(streams[0], "padding=2048") {
		t.Errorf("streams tried through the proxy: %q; want a first attempt asking for padding=2048", streams)
	}
	if polls := proxy.seen("GET /v1/poll"); len(polls) == 0 {
		t.Error("no long-poll went through the proxy")
	}
	var token string
	alice.eval(`JSON.parse(localStorage.getItem('roomcast-demo-identity')).token`, &token)
	for _, req := range proxy.seen("") {
		if strings.Contains(req, token) || strings.Contains(req, "access_token") {
			t.Errorf("a URL carries the token: %s", req)
		}
	}
}

func TestSharedTabsHoldOneStream(t *testing.T) {
	r := startRelay(t, relayOptions{grace: 3 * time.Second})
	url := r.URL + "/?share=1"
	tabs := []*page{newProfile(t, "alice-tab1")}
	tabs[0].signIn(url, "Alice")
	for i := 2; i <= 3; i++ {
		tab := tabs[0].newTab(fmt.Sprintf("alice-tab%d", i))
		tab.open(url)
		tabs = append(tabs, tab)
	}
	bob := newUser(t, r.URL+"/", "Bob")
	bob.waitOnline("Alice", "Bob (you)")

	aliceConnections := func() int {
		var p rooms.PresenceList
		r.Get(t, "/v1/rooms/lobby/presence").JSON(t, &p)
		for _, m := range p.Members {
			if m.Name == "Alice" {
				return m.Connections
			}
		}
		return 0
	}
	if n := aliceConnections(); n != 1 {
		t.Errorf("Alice's three tabs hold %d connections, want 1", n)
	}
	if n := r.Hub.Connections(); n != 2 {
		t.Errorf("the relay holds %d connections, want 2 (Alice's shared one and Bob's)", n)
	}
	leader := -1
	for i, tab := range tabs {
		var leading bool
		tab.eval(`roomcastDemo.rc.leading`, &leading)
		if leading {
			if leader >= 0 {
				t.Fatalf("tabs %d and %d both lead", leader+1, i+1)
			}
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no tab leads")
	}

	bob.say("hello, all of you")
	for _, tab := range tabs {
		tab.waitMessage("Bob", "hello, all of you")
	}
	follower := tabs[(leader+1)%3]
	follower.say("from a follower tab")
	for _, p := range append([]*page{bob}, tabs...) {
		p.waitMessage("Alice", "from a follower tab")
	}

	// exclude_self is per tab: the others, Alice's other tabs included,
	// get a broadcast; the sending tab does not.
	for _, p := range append([]*page{bob}, tabs...) {
		p.do("listen for pings", evalVoid(`window.pings = []; roomcastDemo.rc.on('ping', (d) => pings.push(d))`))
	}
	var id any
	follower.eval(`roomcastDemo.rc.broadcast.to('lobby').emit('ping', 'from one tab')`, &id)
	for _, p := range append([]*page{bob}, tabs...) {
		if p == follower {
			continue
		}
		p.waitFor("the ping arrives", `() => pings.length === 1 && pings[0] === 'from one tab'`)
	}
	var own []string
	follower.eval(`pings`, &own)
	if len(own) != 0 {
		t.Errorf("the sending tab got its own broadcast: %q", own)
	}

	// The leading tab closes: another takes over, resuming the stream.
	tabs[leader].close()
	rest := slices.Delete(slices.Clone(tabs), leader, leader+1)
	relaytest.Eventually(t, "one tab leads again", func() bool {
		n := 0
		for _, tab := range rest {
			var leading bool
			tab.eval(`roomcastDemo.rc.leading`, &leading)
			if leading {
				n++
			}
		}
		return n == 1
	})
	bob.say("after the hand-over")
	for _, tab := range rest {
		tab.waitMessage("Bob", "after the hand-over")
	}
	rest[0].say("still here")
	bob.waitMessage("Alice", "still here")
	relaytest.Eventually(t, "Alice holds one connection again", func() bool {
		return aliceConnections() == 1 && r.Hub.Connections() == 2
	})
	var left bool
	bob.eval(`[...document.querySelectorAll('#messages .note')].some(n => n.textContent === 'Alice left #lobby')`, &left)
	if left {
		t.Error("the hand-over told Bob that Alice left")
	}
	for _, tab := range rest {
		if got := tab.messages(); len(got) != 4 {
			t.Errorf("%s shows %q, want each of the 4 messages once", tab.name, got)
		}
	}
}

func TestRedisRestartMissesNothing(t *testing.T) {
	startBrowser(t)
	redis := redistest.NewServer(t)
	addr := relaytest.FreeAddr(t)
	relay1 := startBinary(t, addr, redis.URL())
	front := newGate(t, "http://"+addr)

	alice := newUser(t, front.URL+"/", "Alice")
	bob := newUser(t, front.URL+"/", "Bob")
	bob.waitOnline("Alice", "Bob (you)")
	alice.say("before the restart")
	bob.waitMessage("Alice", "before the restart")

	// The relay restarts behind a load balancer that turns clients away
	// meanwhile. Alice writes during the outage; a backend publishes.
	front.shut.Store(true)
	relay1.stop(t)
	for _, p := range []*page{alice, bob} {
		p.waitFor("the page shows the disconnection", `() => document.getElementById('status').dataset.state === 'reconnecting'`)
	}
	alice.say("written while the relay was down")
	alice.waitFor("the message waits", `() => document.querySelector('#messages li.pending') !== null`)
	startBinary(t, addr, redis.URL())
	resp, err := http.Post("http://"+addr+"/v1/rooms/lobby/events", "application/json",
		strings.NewReader(`{"event":"chat","data":{"text":"published during the outage"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publishing during the outage: %s", resp.Status)
	}
	front.shut.Store(false)

	want := []string{"before the restart", "published during the outage", "written while the relay was down"}
	for _, p := range []*page{alice, bob} {
		p.waitConnected("sse")
		p.waitMessage("anonymous", "published during the outage")
		p.waitMessage("Alice", "written while the relay was down")
		p.waitFor("nothing is pending", `() => document.querySelector('#messages li.pending') === null`)
		if got := p.messages(); !slices.Equal(got, want) {
			t.Errorf("%s shows %q, want %q", p.name, got, want)
		}
	}
}

// evalVoid is an action that evaluates expr for its effect.
func evalVoid(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](expr)
}

var binary struct {
	once sync.Once
	path string
	err  error
}

// buildBinary builds roomcast once for the package.
func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "roomcast-browsertest-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path, binary.err = relaytest.BuildRoomcast(dir, "")
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// process is a running roomcast binary.
type process struct{ *relaytest.Process }

// startBinary runs roomcast on addr with the Redis backbone at redisURL
// (the in-memory one when it is ""), in open mode (development tokens on),
// with env added to its environment, and waits until it is ready. The
// tests restart it on the same address, so addr is theirs to choose
// (relaytest.FreeAddr); at the warn level the relay does not log it.
func startBinary(t *testing.T, addr, redisURL string, env ...string) *process {
	t.Helper()
	cmd := exec.Command(buildBinary(t))
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"ROOMCAST_ADDR=" + addr,
		"REDIS_URL=" + redisURL,
		"ROOMCAST_RETRY_MIN=100ms",
		"ROOMCAST_RETRY_MAX=300ms",
		"ROOMCAST_DRAIN_TIMEOUT=5s",
		"ROOMCAST_LOG_FORMAT=text",
		"ROOMCAST_LOG_LEVEL=warn",
	}, env...)
	p := &process{relaytest.StartProcess(t, cmd, relaytest.ProcessOptions{Name: "roomcast on " + addr, Combined: true})}
	// Registered after StartProcess's cleanup, so run before it: the
	// relay drains as a platform would stop it, and is killed only if
	// it does not.
	t.Cleanup(func() { p.stop(t) })
	relaytest.EventuallyOK(t, "roomcast on "+addr+" is ready", func() error {
		select {
		case <-p.Done():
			t.Fatalf("roomcast exited at start:\n%s", p.Stdout.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	return p
}

// stop sends SIGTERM, as a platform restarting the relay does, and waits
// for the graceful drain to end.
func (p *process) stop(t *testing.T) { p.Stop(t) }

// TestSharedTabsLeaveTheRoomsOfAClosedTab: a tab sharing the stream of
// another says goodbye when it closes, so that the shared stream leaves
// the rooms only that tab was in. Its goodbye was never sent (the client
// marked itself closed first), and Alice stayed listed in #random for as
// long as her other tab stayed open.
func TestSharedTabsLeaveTheRoomsOfAClosedTab(t *testing.T) {
	r := startRelay(t, relayOptions{})
	leader := newProfile(t, "alice-lobby")
	leader.signIn(r.URL+"/?share=1", "Alice")
	follower := leader.newTab("alice-random")
	follower.open(r.URL + "/?share=1&room=random")
	var leading bool
	follower.eval(`roomcastDemo.rc.leading`, &leading)
	if leading {
		t.Fatal("the second tab leads")
	}
	inRandom := func() bool {
		var p rooms.PresenceList
		r.Get(t, "/v1/rooms/random/presence").JSON(t, &p)
		return p.Users == 1
	}
	relaytest.Eventually(t, "Alice is listed in #random", inRandom)
	follower.close()
	relaytest.Eventually(t, "Alice is no longer listed in #random", func() bool { return !inRandom() })
	leader.say("still in the lobby")
	leader.waitMessage("Alice", "still in the lobby")
}
