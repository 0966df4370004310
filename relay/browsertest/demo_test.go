package browsertest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/web"
)

// userID returns the user the demo is signed in as.
func (p *page) userID() string {
	p.t.Helper()
	var user string
	p.eval(`JSON.parse(localStorage.getItem('roomcast-demo-identity')).user`, &user)
	return user
}

// TestDemoRecoversFromRelayRestart restarts an open-mode relay with the
// in-memory backbone under two people chatting: the pages reconnect by
// themselves, as the same users, and chat on.
func TestDemoRecoversFromRelayRestart(t *testing.T) {
	startBrowser(t)
	addr := relaytest.FreeAddr(t)
	keyFile := "ROOMCAST_DEV_TOKEN_KEY_FILE=" + filepath.Join(t.TempDir(), "dev-token-key")
	relay1 := startBinary(t, addr, "", keyFile)
	url := "http://" + addr + "/"
	alice := newUser(t, url, "Alice")
	bob := newUser(t, url, "Bob")
	bob.waitOnline("Alice", "Bob (you)")
	aliceID := alice.userID()
	alice.say("before the restart")
	bob.waitMessage("Alice", "before the restart")

	relay1.stop(t)
	for _, p := range []*page{alice, bob} {
		p.waitFor("the page shows the disconnection", `() => document.getElementById('status').dataset.state === 'reconnecting'`)
	}
	startBinary(t, addr, "", keyFile)
	for _, p := range []*page{alice, bob} {
		p.waitConnected("")
	}
	if id := alice.userID(); id != aliceID {
		t.Errorf("after the restart Alice is user %q, was %q: her token was refused", id, aliceID)
	}
	bob.waitOnline("Alice", "Bob (you)")
	alice.say("after the restart")
	bob.waitMessage("Alice", "after the restart")
	alice.waitMessage("Alice", "after the restart")
}

// TestDemoSignsInAgainWhenTheKeyChanges restarts the relay with another
// development-token key, which refuses the token the demo holds: the demo
// signs in again by itself, under the same name, with no error shown.
func TestDemoSignsInAgainWhenTheKeyChanges(t *testing.T) {
	startBrowser(t)
	addr := relaytest.FreeAddr(t)
	dir := t.TempDir()
	relay1 := startBinary(t, addr, "", "ROOMCAST_DEV_TOKEN_KEY_FILE="+filepath.Join(dir, "first"))
	url := "http://" + addr + "/"
	alice := newUser(t, url, "Alice")
	aliceID := alice.userID()

	relay1.stop(t)
	alice.waitFor("the page shows the disconnection", `() => document.getElementById('status').dataset.state === 'reconnecting'`)
	startBinary(t, addr, "", "ROOMCAST_DEV_TOKEN_KEY_FILE="+filepath.Join(dir, "second"))
	alice.waitConnected("")
	if id := alice.userID(); id == aliceID {
		t.Errorf("Alice kept user %q, whose token the relay refuses", id)
	}
	bob := newUser(t, url, "Bob")
	bob.waitOnline("Alice", "Bob (you)")
	alice.say("signed in again")
	bob.waitMessage("Alice", "signed in again")
	var errors []string
	alice.eval(`[...document.querySelectorAll('#messages .note')].map(n => n.textContent).filter(t => t.startsWith('Error'))`, &errors)
	if len(errors) != 0 {
		t.Errorf("the demo showed %q while it signed in again", errors)
	}
	var me string
	alice.eval(`document.getElementById('me-name').textContent`, &me)
	if me != "Alice" {
		t.Errorf("signed in again as %q, want Alice", me)
	}
}

// TestCORSRefusalIsReported runs roomcast.js on a page of another origin
// that the relay does not allow: the app gets one error event with code
// cors, and the client keeps trying.
func TestCORSRefusalIsReported(t *testing.T) {
	var mu sync.Mutex
	polls := 0
	r := startRelay(t, relayOptions{wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/v1/poll" {
				mu.Lock()
				polls++
				mu.Unlock()
			}
			h.ServeHTTP(w, req)
		})
	}})
	app := newAppPage(t)
	p := newProfile(t, "app")
	p.do("open the app", chromedp.Navigate(app.URL+"/?relay="+r.URL))
	p.waitFor("an error event", `() => window.errors && errors.length > 0`)
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return polls
	}
	after := seen()
	relaytest.Eventually(t, "the client tries again", func() bool { return seen() >= after+3 })
	var errors []string
	p.eval(`errors`, &errors)
	if !slices.Equal(errors, []string{"cors"}) {
		t.Errorf("error events %q, want one cors", errors)
	}
}

// newAppPage serves a page that runs roomcast.js against the relay named
// in its ?relay= parameter, recording the codes of its error events.
func newAppPage(t *testing.T) *httptest.Server {
	t.Helper()
	client, err := web.Files.ReadFile("roomcast.js")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]struct{ contentType, body string }{
		"/":            {"text/html", `<!doctype html><title>app</title><script type="module" src="/app.js"></script>`},
		"/roomcast.js": {"text/javascript", string(client)},
		"/app.js": {"text/javascript", `import roomcast from '/roomcast.js';
window.errors = [];
const rc = roomcast.connect(new URLSearchParams(location.search).get('relay'), { backoffMin: 50, backoffMax: 200, connectTimeout: 1000 });
rc.on('error', (e) => errors.push(e.code));
rc.join('lobby').catch(() => {});`},
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", f.contentType)
		_, _ = w.Write([]byte(f.body))
	}))
	t.Cleanup(s.Close)
	return s
}

// TestNotesScrollIntoView: a note (someone joined) below a full list of
// messages is scrolled into view, as messages are.
func TestNotesScrollIntoView(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	for i := range 30 {
		postChat(t, r, fmt.Sprintf("line %d", i))
	}
	alice.waitFor("the list overflows", `() => { const l = document.getElementById('messages'); return l.querySelectorAll('li.message').length === 30 && l.scrollHeight > l.clientHeight * 2 }`)
	newUser(t, r.URL+"/", "Bob")
	alice.waitNote("a note that Bob joined", "Bob joined #lobby")
	alice.waitFor("the note is in view", `() => {
		const l = document.getElementById('messages').getBoundingClientRect();
		const n = [...document.querySelectorAll('#messages .note')].at(-1).getBoundingClientRect();
		return n.top >= l.top && n.bottom <= l.bottom;
	}`)
}

// postChat publishes a chat message as a backend would.
func postChat(t *testing.T, r *relaytest.Relay, text string) {
	t.Helper()
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   []byte(`{"event":"chat","data":{"text":"` + text + `"}}`)})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("publish: status %d %s", resp.Status, resp.Body)
	}
}

// TestPhoneShowsWhoIsOnline: on a phone's narrow screen every name in the
// online list is in sight, and a click on one addresses a private message.
func TestPhoneShowsWhoIsOnline(t *testing.T) {
	r := startRelay(t, relayOptions{})
	newUser(t, r.URL+"/", "Bob")
	newUser(t, r.URL+"/", "Carol")
	alice := newProfile(t, "alice")
	alice.do("a phone's screen", chromedp.EmulateViewport(390, 740, chromedp.EmulateScale(3), chromedp.EmulateMobile))
	alice.signIn(r.URL+"/", "Alice")
	alice.waitOnline("Alice (you)", "Bob", "Carol")
	var hidden []string
	alice.eval(`[...document.querySelectorAll('#online li')].filter(li => {
		const b = li.getBoundingClientRect();
		const hit = document.elementFromPoint(b.left + Math.min(b.width, 30) / 2, b.top + b.height / 2);
		return !li.contains(hit);
	}).map(li => li.textContent)`, &hidden)
	if len(hidden) != 0 {
		t.Errorf("on a phone %q are not in sight in the online list", hidden)
	}
	var messagesHeight float64
	alice.eval(`document.getElementById('messages').clientHeight`, &messagesHeight)
	if messagesHeight < 250 {
		t.Errorf("on a phone the messages get %.0f px of height", messagesHeight)
	}
	alice.do("choose Bob", evalVoid(`[...document.querySelectorAll('#online button.member')].find(b => b.textContent === 'Bob').click()`))
	alice.waitFor("the composer addresses Bob", `() => !document.getElementById('pm-target').hidden && document.getElementById('pm-name').textContent === 'Bob'`)
}

// TestNoRequestFailsOnLoad: loading the demo asks the relay for nothing it
// does not have (the favicon was a 404 on every load).
func TestNoRequestFailsOnLoad(t *testing.T) {
	var mu sync.Mutex
	var failed, icons []string
	r := startRelay(t, relayOptions{wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(rec, req)
			mu.Lock()
			defer mu.Unlock()
			if rec.status >= 400 {
				failed = append(failed, req.Method+" "+req.URL.Path+": "+http.StatusText(rec.status))
			}
			if strings.Contains(req.URL.Path, "favicon") {
				icons = append(icons, req.URL.Path)
			}
		})
	}})
	alice := newUser(t, r.URL+"/", "Alice")
	var icon string
	alice.eval(`document.querySelector('link[rel~=icon]')?.href ?? ''`, &icon)
	if icon == "" {
		t.Fatal("the demo names no icon: browsers ask for /favicon.ico")
	}
	var fetched struct {
		Status int
		Type   string
	}
	alice.eval(`fetch(document.querySelector('link[rel~=icon]').href).then(r => ({status: r.status, type: r.headers.get('Content-Type')}))`, &fetched)
	if fetched.Status != http.StatusOK || !strings.HasPrefix(fetched.Type, "image/") {
		t.Errorf("the icon %s: status %d, type %q", icon, fetched.Status, fetched.Type)
	}
	alice.open(r.URL + "/")
	relaytest.Eventually(t, "the browser fetched the icon", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(icons) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 0 {
		t.Errorf("requests that failed while the demo loaded: %q", failed)
	}
}

// statusRecorder records the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// TestPrivateTargetEndsWhenUserLeaves: Alice writes privately to Bob, who
// closes his tab: the composer addresses the room again, and says so.
func TestPrivateTargetEndsWhenUserLeaves(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	bob := newUser(t, r.URL+"/", "Bob")
	alice.waitOnline("Alice (you)", "Bob")
	alice.do("choose Bob for a private message", evalVoid(`[...document.querySelectorAll('#online button.member')].find(b => b.textContent === 'Bob').click()`))
	alice.waitFor("the composer addresses Bob", `() => !document.getElementById('pm-target').hidden`)
	bob.close()
	alice.waitOnline("Alice (you)")
	alice.waitFor("the composer addresses the room again", `() => document.getElementById('pm-target').hidden`)
	alice.waitNote("a note says why", "Bob left #lobby: messages go to the room again")
	alice.say("to the room")
	alice.waitMessage("Alice", "to the room")
}

// TestPlainEventShows publishes as the README's first curl does
// (curl -d hello …/rooms/lobby/events): the demo shows it.
func TestPlainEventShows(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	resp, err := http.Post(r.URL+"/v1/rooms/lobby/events", "application/x-www-form-urlencoded", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %s", resp.Status)
	}
	alice.waitMessage("anonymous", "hello")
	// From history too, for someone who comes later.
	carol := newUser(t, r.URL+"/", "Carol")
	carol.waitMessage("anonymous", "hello")
}

// TestDemoStartsOverFromStorageItCannotUse: what an earlier visit (another
// version of the demo, or someone's edit) left in localStorage in a shape
// the demo cannot use does not break the page: a reload then showed a
// blank page or an endless error, and only clearing the site's data
// helped. The demo asks for a name again, and ignores unusable rooms.
//
// Each visit starts from nothing but the unusable data: one browser
// context whose site data is cleared between visits, rather than a
// context per visit (each costs two renderer processes, seconds apiece on
// a loaded machine).
func TestDemoStartsOverFromStorageItCannotUse(t *testing.T) {
	r := startRelay(t, relayOptions{})
	p := newProfile(t, "visitor")
	for _, stored := range []struct{ identity, rooms string }{
		{`not json`, ``},
		{`{}`, ``},
		{`{"token":42,"user":"dev-x","name":"X"}`, ``},
		{`"a string"`, `{"not":"a list"}`},
		{`null`, `[1, null, "ok-room", "bad room!"]`},
	} {
		// The previous visit's page is unloaded first, so that nothing
		// it saves on its way out survives the clearing.
		p.do("leave the previous visit", chromedp.Navigate("about:blank"))
		p.do("forget the site", clearSiteData(r.URL))
		p.do("open the demo", chromedp.Navigate(r.URL+"/"))
		p.do("leave unusable data", evalVoid(fmt.Sprintf(`localStorage.setItem('roomcast-demo-identity', %s);
			if (%s) localStorage.setItem('roomcast-demo-rooms', %s)`, jsString(stored.identity), jsString(stored.rooms), jsString(stored.rooms))))
		p.signIn(r.URL+"/", "Visitor")
		var rooms []string
		p.eval(`[...document.querySelectorAll('#rooms button')].map(b => b.dataset.room)`, &rooms)
		want := []string{"lobby", "random", "help"}
		if strings.Contains(stored.rooms, "ok-room") {
			want = append(want, "ok-room")
		}
		if !slices.Equal(rooms, want) {
			t.Errorf("%q: rooms %q, want %q", stored.rooms, rooms, want)
		}
	}
}

// clearSiteData forgets everything the browser context keeps for origin
// (storage, cookies, caches, workers), as a new profile would have.
func clearSiteData(origin string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, storage.ClearDataForOrigin, storage.ClearDataForOriginParams{Origin: origin, StorageTypes: "all"})
		return chromedp.Void{}, err
	}
}

// TestDemoRefusesRoomNamesTheRelayRefuses: a room name of dots ("." or
// "..") passed the demo's check but not the relay's (and a URL path made of
// it means another path): the demo does not offer such a room, nor open it
// from ?room=.
func TestDemoRefusesRoomNamesTheRelayRefuses(t *testing.T) {
	r := startRelay(t, relayOptions{})
	alice := newUser(t, r.URL+"/", "Alice")
	for _, name := range []string{"..", ".", "ok.room"} {
		alice.do("create room "+name, evalVoid(fmt.Sprintf(
			`document.getElementById('room-name').value = %s; document.getElementById('new-room').requestSubmit()`, jsString(name))))
	}
	alice.waitFor("ok.room is open", `() => document.getElementById('room-title').textContent === '# ok.room'`)
	var rooms []string
	alice.eval(`[...document.querySelectorAll('#rooms button')].map(b => b.dataset.room)`, &rooms)
	if want := []string{"lobby", "random", "help", "ok.room"}; !slices.Equal(rooms, want) {
		t.Errorf("rooms %q, want %q", rooms, want)
	}
	alice.open(r.URL + "/?room=..")
	var title string
	alice.eval(`document.getElementById('room-title').textContent`, &title)
	if title != "# lobby" {
		t.Errorf("?room=.. opened %q, want # lobby", title)
	}
}
