package relay_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// namedUser is the bearer header of a token of user, named after them.
func namedUser(t *testing.T, user string) http.Header {
	return relaytest.Bearer(relaytest.Token(t, user, time.Hour, map[string]any{"name": strings.ToUpper(user[:1]) + user[1:]}))
}

// TestClientIDOfAnotherUserPolled: a client id is its first user's. A poll
// of another identity naming it is refused with client_in_use, and the
// presence list (keyed by the poller's client id) keeps answering, with the
// right user, for everyone.
func TestClientIDOfAnotherUserPolled(t *testing.T) {
	t.Parallel()
	r := startSecured(t, func(o *relaytest.Options) { o.Memory = memory.Options{PresenceGrace: presenceGrace} })
	const room, client = "public:borrowed", "bob-poller-1"
	path := "/v1/rooms/" + room + "/poll?timeout=5&client=" + client

	bob := r.Do(t, relaytest.Request{Path: path, Header: namedUser(t, "bob")})
	if bob.Status != http.StatusOK {
		t.Fatalf("bob's poll: %d %s", bob.Status, bob.Body)
	}
	var first pollAnswer
	bob.JSON(t, &first)

	mallory := r.Do(t, relaytest.Request{Path: path, Header: namedUser(t, "mallory")})
	wantError(t, mallory, http.StatusConflict, "client_in_use")
	if got, want := presenceOf(t, r, room, nil).summary(), "users=1 connections=1 anonymous=0 bob(Bob)x1"; got != want {
		t.Errorf("presence %s, want %s", got, want)
	}
	anonymous := r.Do(t, relaytest.Request{Path: path})
	wantError(t, anonymous, http.StatusConflict, "client_in_use")
	if got, want := presenceOf(t, r, room, nil).summary(), "users=1 connections=1 anonymous=0 bob(Bob)x1"; got != want {
		t.Errorf("presence %s, want %s", got, want)
	}
	// Bob's token is his proof: his next poll keeps the id, and its proof.
	again := r.Do(t, relaytest.Request{Path: path + "&cursor=" + first.Cursor + "&timeout=0", Header: namedUser(t, "bob")})
	var next pollAnswer
	again.JSON(t, &next)
	if again.Status != http.StatusOK || next.Client != client || next.Connection != first.Connection {
		t.Errorf("bob's next poll: %d %s, want his id and the same proof %s", again.Status, again.Body, first.Connection)
	}
}

// TestClientIDProofs: using a client id needs its proof. Another user can
// neither poll nor stream with a live stream's client id, nor name the
// stream (or the id's proof) as the sender of an event to exclude its
// owner; an anonymous client keeps its id only with the proof it was given.
func TestClientIDProofs(t *testing.T) {
	t.Parallel()
	r := startSecured(t, nil)
	const room, client = "public:proofs", "bob-phone-42"
	events := "/v1/rooms/" + room + "/events"
	bobH := namedUser(t, "bob")
	malloryH := namedUser(t, "mallory")

	bob := r.Subscribe(t, events+"?client="+client, relaytest.StreamOptions{Header: map[string]string{"Authorization": bobH.Get("Authorization")}})
	hello := bob.Connected(t)
	if hello.Client != client || !strings.HasPrefix(hello.Proof, client+".") {
		t.Errorf("connected %+v, want client %s and its proof", hello, client)
	}
	watcher := r.Subscribe(t, events, relaytest.StreamOptions{})
	watcher.Connected(t)

	publish := func(h http.Header, sender, body string) *relaytest.Response {
		t.Helper()
		hh := h.Clone()
		if hh == nil {
			hh = http.Header{}
		}
		hh.Set("Content-Type", "application/json")
		hh.Set("Roomcast-Connection", sender)
		return r.Do(t, relaytest.Request{Method: http.MethodPost, Path: events, Header: hh, Body: []byte(body)})
	}
	for name, sender := range map[string]string{"bob's stream": hello.Connection, "bob's proof": hello.Proof} {
		resp := publish(malloryH, sender, `{"data":"not for bob","exclude_self":true}`)
		wantError(t, resp, http.StatusConflict, "client_in_use")
		if t.Failed() {
			t.Fatalf("mallory publishing as %s was not refused", name)
		}
	}
	wantError(t, r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0&client=" + client, Header: malloryH}),
		http.StatusConflict, "client_in_use")
	stolen := r.Do(t, relaytest.Request{Path: events + "?client=" + client, Header: malloryH})
	wantError(t, stolen, http.StatusConflict, "client_in_use")

	// Bob's own proofs work, and the event reaches everyone but him.
	for _, sender := range []string{hello.Connection, hello.Proof} {
		resp := publish(bobH, sender, `{"data":"from bob","exclude_self":true}`)
		if resp.Status != http.StatusAccepted {
			t.Fatalf("bob publishing with %s: %d %s", sender, resp.Status, resp.Body)
		}
		if env := watcher.NextEvent(t).Envelope(t); env.Client == nil || *env.Client != client {
			t.Errorf("watcher got %+v, want an event of client %s", env, client)
		}
	}
	marker := r.PublishJSON(t, room, map[string]any{"event": "marker"})
	if got := bob.NextEvent(t); got.EventID(t) != marker {
		t.Errorf("bob got %s %s, want only the marker", got.Event, got.Data)
	}

	// An anonymous client's id is the secret's: without its proof, another
	// anonymous caller cannot use it.
	var anon pollAnswer
	r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0&client=anon-client-1"}).JSON(t, &anon)
	if anon.Client != "anon-client-1" || !strings.HasPrefix(anon.Connection, "anon-client-1.") {
		t.Fatalf("anonymous poll answer %+v", anon)
	}
	wantError(t, r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0&client=anon-client-1"}),
		http.StatusConflict, "client_in_use")
	wantError(t, r.Do(t, relaytest.Request{Path: events + "?client=anon-client-1"}), http.StatusConflict, "client_in_use")
	again := r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0&proof=" + anon.Connection})
	var next pollAnswer
	again.JSON(t, &next)
	if again.Status != http.StatusOK || next.Client != "anon-client-1" || next.Connection != anon.Connection {
		t.Errorf("poll with the proof: %d %s", again.Status, again.Body)
	}
	if resp := publish(nil, anon.Connection, `{"data":"anonymous"}`); resp.Status != http.StatusAccepted {
		t.Errorf("anonymous publish with its proof: %d %s", resp.Status, resp.Body)
	}
	wantError(t, publish(nil, relaytest.Tamper(anon.Connection), `{"data":"forged"}`), http.StatusNotFound, "unknown_connection")
	wantError(t, publish(bobH, anon.Connection, `{"data":"not bob's"}`), http.StatusConflict, "client_in_use")
}

// TestClientIDsBoundedPerCaller: one caller minting fresh client ids (a
// first poll without ?client= binds a new one each time) is refused with
// 429 limit_exceeded past its own bound, instead of filling the store of
// bindings that every caller shares; its ids keep working with their
// proofs, and another caller still binds new ones.
func TestClientIDsBoundedPerCaller(t *testing.T) {
	t.Parallel()
	const bound = 3
	r := startSecured(t, func(o *relaytest.Options) {
		o.Hub.MaxClientIDsPerCaller = bound
	})
	const path = "/v1/rooms/public:minted/poll?timeout=0"
	var mine []pollAnswer
	for range bound {
		var a pollAnswer
		r.Do(t, relaytest.Request{Path: path}).JSON(t, &a)
		if a.Connection == "" {
			t.Fatalf("poll answer %+v: no proof", a)
		}
		mine = append(mine, a)
	}
	wantError(t, r.Do(t, relaytest.Request{Path: path}), http.StatusTooManyRequests, "limit_exceeded")
	if n, err := r.Hub.ClientBindings(t.Context()); err != nil || n != bound {
		t.Errorf("bindings %d (%v), want %d: the refused poll bound nothing", n, err, bound)
	}
	if got := gaugeValue(t, r, "roomcast_client_ids_held"); got != bound {
		t.Errorf("roomcast_client_ids_held = %v, want %d", got, bound)
	}
	again := r.Do(t, relaytest.Request{Path: path + "&proof=" + mine[0].Connection})
	var a pollAnswer
	again.JSON(t, &a)
	if again.Status != http.StatusOK || a.Client != mine[0].Client {
		t.Errorf("a poll with an id already bound: %d %s", again.Status, again.Body)
	}
	if other := r.Do(t, relaytest.Request{Path: path, Header: namedUser(t, "carol")}); other.Status != http.StatusOK {
		t.Errorf("another caller's poll: %d %s", other.Status, other.Body)
	}
}

// gaugeValue scrapes /metrics over HTTP for one unlabelled gauge.
func gaugeValue(t *testing.T, r *relaytest.Relay, name string) float64 {
	t.Helper()
	resp := r.Scrape(t, nil)
	for line := range strings.Lines(string(resp.Body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// TestFreshClientIDRaceAcrossInstances: many anonymous callers claim one
// fresh client id at once through two instances sharing Redis: exactly one
// gets it (and its proof), every other gets 409 client_in_use.
func TestFreshClientIDRaceAcrossInstances(t *testing.T) {
	t.Parallel()
	url, prefix := redistest.SharedURL(t), redistest.Prefix(t)
	lim := relay.Limits{RequestRate: 1e6, RequestBurst: 1e6, MaxConnsPerIP: 1e6, MaxConnsPerUser: 1e6}
	bases := []string{startOnRedis(t, url, prefix, lim), startOnRedis(t, url, prefix, lim)}
	const claims = 32
	statuses := make(chan int, claims)
	var wg sync.WaitGroup
	for i := range claims {
		wg.Go(func() {
			resp, err := http.Get(bases[i%2] + "/v1/rooms/race/poll?timeout=0&client=fresh-race-id")
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts[http.StatusOK] != 1 || counts[http.StatusConflict] != claims-1 {
		t.Errorf("answers by status %v, want one 200 and %d 409", counts, claims-1)
	}
}
