// Package browsertest drives the demo chat and roomcast.js in headless
// Chromium against a real relay: what a person using the demo would do, in
// the browser the client is written for.
//
// The tests need Debian's chromium (/usr/bin/chromium, or $CHROMIUM). Without
// it they fail when CI=true and are skipped, loudly, elsewhere.
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// wait bounds every wait for a condition in the page.
const wait = 20 * time.Second

var skipWarning sync.Once

var browser struct {
	once   sync.Once
	ctx    context.Context // the browser's first tab; users get contexts of their own below it
	err    error
	stop   func()
	tmpDir string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.stop != nil {
		browser.stop()
	}
	if browser.tmpDir != "" {
		_ = os.RemoveAll(browser.tmpDir)
	}
	os.Exit(code)
}

// chromiumPath finds the browser: $CHROMIUM, else chromium on the PATH.
func chromiumPath() string {
	name := "chromium"
	if p := os.Getenv("CHROMIUM"); p != "" {
		name = p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// startBrowser starts one headless Chromium for the whole package; every
// user of every test gets a browser context (a fresh profile) of it.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		msg := "Chromium is not installed (apt-get install chromium, or set $CHROMIUM): the browser tests cannot run"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		// Skips are silent without -v: say it where it is seen.
		skipWarning.Do(func() {
			fmt.Fprintln(os.Stderr, "!!! SKIPPING the browser tests: "+msg+" (CI=true makes this a failure)")
		})
		t.Skip("SKIPPED: " + msg)
	}
	browser.once.Do(func() {
		dir, err := os.MkdirTemp("", "roomcast-chromium-")
		if err != nil {
			browser.err = err
			return
		}
		browser.tmpDir = dir
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox,
			chromedp.UserDataDir(dir),
			chromedp.WindowSize(1200, 800),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-gpu", true),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(allocCtx)
		if err := chromedp.Do(ctx); err != nil {
			cancel()
			cancelAlloc()
			browser.err = fmt.Errorf("starting %s: %w", path, err)
			return
		}
		browser.ctx = ctx
		browser.stop = func() {
			cancel()
			cancelAlloc()
		}
	})
	if browser.err != nil {
		t.Fatal(browser.err)
	}
	return browser.ctx
}

// page is one browser tab showing the demo.
type page struct {
	t        *testing.T
	name     string
	profile  context.Context // the person's browser context
	ctx      context.Context
	cancel   context.CancelFunc
	closed   bool
	logMu    sync.Mutex
	log      []string // console messages and exceptions, shown when a test fails
	problems []string // CSP violations and uncaught exceptions
}

// newProfile opens a tab in a fresh browser context: a separate person
// with their own storage.
func newProfile(t *testing.T, name string) *page {
	t.Helper()
	// The browser context belongs to a blank tab of its own, so that any
	// of the person's tabs can close without closing the others.
	profile, cancel := chromedp.NewContext(startBrowser(t), chromedp.WithNewBrowserContext())
	if err := chromedp.Do(profile); err != nil {
		cancel()
		t.Fatalf("%s: creating a browser context: %v", name, err)
	}
	t.Cleanup(cancel)
	return openPage(t, name, profile)
}

// newTab opens another tab in p's browser context: the same person.
func (p *page) newTab(name string) *page {
	p.t.Helper()
	return openPage(p.t, name, p.profile)
}

func openPage(t *testing.T, name string, profile context.Context) *page {
	ctx, cancel := chromedp.NewContext(profile)
	p := &page{t: t, name: name, profile: profile, ctx: ctx, cancel: cancel}
	if err := chromedp.Do(ctx, watchCSP); err != nil {
		cancel()
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	if err := chromedp.Listen(ctx, p.listen); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	t.Cleanup(func() {
		p.logMu.Lock()
		problems := p.problems
		p.logMu.Unlock()
		for _, pr := range problems {
			t.Errorf("%s: %s", name, pr)
		}
		if t.Failed() {
			p.dump()
		}
	})
	return p
}

// watchCSP makes every page report Content-Security-Policy violations on
// the console, where listen finds them.
func watchCSP(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
	_, err := cdp.Call(ctx, t, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{
		Source: `document.addEventListener('securitypolicyviolation', (e) =>
			console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI))`,
	})
	return chromedp.Void{}, err
}

// listen records the page's console and its uncaught exceptions; CSP
// violations and exceptions fail the test.
func (p *page) listen(ev any) {
	var line, problem string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			if a.Value != nil {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = string(ev.Type) + ": " + strings.Join(parts, " ")
		if strings.Contains(line, "CSP violation") {
			problem = line
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "uncaught: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
		problem = line
	default:
		return
	}
	p.logMu.Lock()
	defer p.logMu.Unlock()
	p.log = append(p.log, line)
	if problem != "" {
		p.problems = append(p.problems, problem)
	}
}

// close closes the tab, as a person closing it would.
func (p *page) close() {
	if p.closed {
		return
	}
	p.closed = true
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	_ = chromedp.Cancel(ctx)
	p.cancel()
}

// do runs actions, failing the test on error.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// waitFor waits until the JavaScript function fn, called with args, returns
// a truthy value.
func (p *page) waitFor(what, fn string, args ...any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[chromedp.Void](fn,
		chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(wait),
		chromedp.WithPollingArgs(args...)))
	if err != nil {
		p.t.Fatalf("%s: waiting until %s: %v\n%s", p.name, what, err, p.state())
	}
}

// eval evaluates a JavaScript expression and decodes its JSON value into v.
func (p *page) eval(expr string, v any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: evaluating %s: %v", p.name, expr, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		p.t.Fatalf("%s: decoding %s: %v", p.name, raw, err)
	}
}

// state describes what the page shows, for failure messages.
func (p *page) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		status: document.getElementById('status')?.textContent,
		transport: document.getElementById('status')?.dataset.transport,
		room: document.getElementById('room-title')?.textContent,
		messages: [...document.querySelectorAll('#messages li')].map(li => li.textContent.replace(/\s+/g, ' ').trim()),
		online: [...document.querySelectorAll('#online li')].map(li => li.textContent),
		typing: document.getElementById('typing')?.textContent,
	}, null, 1)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return s
}

func (p *page) dump() {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if len(p.log) > 0 {
		p.t.Logf("%s: browser console:\n%s", p.name, strings.Join(p.log, "\n"))
	}
}

// newUser opens the demo at url in a new profile (see newProfile) and
// signs in as name; the profile is named after name in lower case.
func newUser(t *testing.T, url, name string) *page {
	t.Helper()
	p := newProfile(t, strings.ToLower(name))
	p.signIn(url, name)
	return p
}

// signIn opens the demo at url and signs in as name.
func (p *page) signIn(url, name string) {
	p.t.Helper()
	p.do("open the demo", chromedp.Navigate(url))
	p.do("sign in",
		chromedp.WaitVisible(chromedp.CSS("#name")),
		chromedp.SendKeys(chromedp.CSS("#name"), name),
		chromedp.Click(chromedp.CSS("#login button[type=submit]")),
	)
	p.waitConnected("")
}

// open opens the demo at url for a person already signed in (a second tab).
func (p *page) open(url string) {
	p.t.Helper()
	p.do("open the demo", chromedp.Navigate(url))
	p.waitConnected("")
}

// waitConnected waits until the status shows a connection, over transport
// when it is not "".
func (p *page) waitConnected(transport string) {
	p.t.Helper()
	p.waitFor("connected"+map[bool]string{true: " via " + transport}[transport != ""], `(transport) => {
		const s = document.getElementById('status');
		return s.dataset.state === 'connected' && (!transport || s.dataset.transport === transport) &&
			document.querySelector('#online li[data-user]') !== null;
	}`, transport)
}

// say sends a chat message, typing it into the composer.
func (p *page) say(text string) {
	p.t.Helper()
	p.do("send "+text,
		chromedp.SendKeys(chromedp.CSS("#message"), text),
		chromedp.Click(chromedp.CSS("#send")),
	)
}

// waitMessage waits until a message with this text (and sender, when not
// "") is shown and has been accepted by the relay.
func (p *page) waitMessage(sender, text string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("the message %q from %q shows", text, sender), `(sender, text) =>
		[...document.querySelectorAll('#messages li.message:not(.pending)')].some(li =>
			li.querySelector('.text').textContent === text &&
			(!sender || li.querySelector('.sender').textContent === sender))`, sender, text)
}

// waitTyping waits until the typing indicator reads text ("" once it is
// cleared).
func (p *page) waitTyping(what, text string) {
	p.t.Helper()
	p.waitFor(what, `() => document.getElementById('typing').textContent === `+jsString(text))
}

// waitNote waits until the chat shows a note (a join or leave) reading text.
func (p *page) waitNote(what, text string) {
	p.t.Helper()
	p.waitFor(what, `() => [...document.querySelectorAll('#messages .note')].some(n => n.textContent === `+jsString(text)+`)`)
}

// jsString returns s as a JavaScript string literal. The text goes into the
// function rather than its arguments, because chromedp leaves out an
// argument that encodes as "" and the function would see undefined.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// messages returns the texts of the chat messages shown, in order, once
// none is pending.
func (p *page) messages() []string {
	p.t.Helper()
	// A sent message shows as pending ("sending…") until the publish's
	// answer comes back, which may be after the message itself came back
	// on the stream: only a settled list says what was delivered.
	p.waitFor("no message is pending", `() => !document.querySelector('#messages li.pending')`)
	var out []string
	p.eval(`[...document.querySelectorAll('#messages li.message:not(.private) .text')].map(e => e.textContent)`, &out)
	return out
}

// waitOnline waits until the online list is exactly names, in any order.
func (p *page) waitOnline(names ...string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("the online list is %q", names), `(names) => {
		const shown = [...document.querySelectorAll('#online li')].map(li => li.textContent).sort();
		return JSON.stringify(shown) === JSON.stringify([...names].sort());
	}`, names)
}
