package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	redisbb "github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// stateGauges are the gauges of the state requests create: none of them may
// grow because of a refused request, and each returns to its baseline once
// what created it is abandoned.
var stateGauges = []string{
	`roomcast_connections{transport="poll"}`,
	`roomcast_connections{transport="sse"}`,
	"roomcast_rooms",
	"roomcast_channels",
	"roomcast_backbone_channels",
	"roomcast_poll_sessions",
	"roomcast_poll_presence_leases",
	"roomcast_sessions",
	"roomcast_presence_entries",
	"roomcast_idempotency_keys",
	"roomcast_backbone_idempotency_keys",
	"roomcast_tickets",
	"roomcast_backbone_claims",
	"roomcast_backbone_sessions",
}

// startMetered starts an in-memory relay serving /metrics (relaytest.Start
// assembles it with its metrics, as main does).
func startMetered(t *testing.T, o relaytest.Options) *relaytest.Relay {
	t.Helper()
	return relaytest.Start(t, o)
}

// startRedisMetered starts a relay over the shared Redis (keys under a
// prefix of the test's own), serving /metrics.
func startRedisMetered(t *testing.T, o relaytest.Options) *relaytest.Relay {
	t.Helper()
	url := redistest.SharedURL(t)
	bb, err := redisbb.New(context.Background(), url, redisbb.Options{Prefix: redistest.Prefix(t), PresenceGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o.Backbone = bb
	return relaytest.Start(t, o)
}

// gauges scrapes /metrics over HTTP and returns the stateGauges.
func gauges(t *testing.T, r *relaytest.Relay) map[string]float64 {
	t.Helper()
	resp := r.Scrape(t, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.Status)
	}
	all := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(resp.Body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		all[name] = v
	}
	out := map[string]float64{}
	for _, name := range stateGauges {
		if v, ok := all[name]; ok {
			out[name] = v
		}
	}
	return out
}

// connectionsIn reads how many connections the presence list of room counts.
func connectionsIn(t *testing.T, r *relaytest.Relay, room string) int {
	t.Helper()
	resp := r.Get(t, "/v1/rooms/"+room+"/presence")
	if resp.Status != http.StatusOK {
		t.Fatalf("presence of %s: status %d: %s", room, resp.Status, resp.Body)
	}
	var p struct{ Connections int }
	resp.JSON(t, &p)
	return p.Connections
}

// firstCursor is the cursor of a first (immediate) poll of path.
func firstCursor(t *testing.T, r *relaytest.Relay, path string) string {
	t.Helper()
	resp := r.Get(t, path)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", path, resp.Status, resp.Body)
	}
	var a struct{ Cursor string }
	resp.JSON(t, &a)
	return a.Cursor
}

func errorCode(t *testing.T, resp *relaytest.Response) string {
	t.Helper()
	var e struct {
		Error struct{ Code string }
	}
	resp.JSON(t, &e)
	return e.Error.Code
}

// refusedCase is a request the relay must refuse without leaving state.
type refusedCase struct {
	name string
	// setup makes what the refusal needs (a parked session, a used key);
	// its state is the baseline.
	setup  func(t *testing.T, r *relaytest.Relay)
	req    func(t *testing.T, r *relaytest.Relay) relaytest.Request
	rooms  []string // rooms whose presence must not change
	status int
	code   string
}

// refusedCases covers every kind of request that creates state: polls,
// streams, joins, publishes and tickets.
func refusedCases(withAuth bool) []refusedCase {
	alice := func(t *testing.T) http.Header { return relaytest.Bearer(relaytest.Token(t, "alice", time.Hour, nil)) }
	// A held poll that returns at once (an event follows its cursor) and
	// parks its session for the next poll.
	parkSession := func(t *testing.T, r *relaytest.Relay, room, client string) string {
		first := r.Get(t, "/v1/rooms/"+room+"/poll?client="+client)
		var a struct{ Cursor, Connection string }
		first.JSON(t, &a)
		cur := a.Cursor
		r.PublishJSON(t, room, map[string]string{"event": "e", "data": "x"})
		// The anonymous poller keeps its id with the proof it was given.
		resp := r.Get(t, "/v1/rooms/"+room+"/poll?timeout=30&client="+client+"&proof="+url.QueryEscape(a.Connection)+"&cursor="+url.QueryEscape(cur))
		if resp.Status != http.StatusOK {
			t.Fatalf("held poll: status %d: %s", resp.Status, resp.Body)
		}
		relaytest.Eventually(t, "the session is parked", func() bool { return r.Hub.PollSessions() == 1 })
		return cur
	}
	cases := []refusedCase{
		{name: "room poll with a garbage cursor",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/rooms/p1/poll?cursor=garbage&client=client-1"}
			},
			rooms: []string{"p1"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "room poll with a tampered cursor",
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				cur := relaytest.Tamper(firstCursor(t, r, "/v1/rooms/p2/poll?timeout=0"))
				return relaytest.Request{Path: "/v1/rooms/p2/poll?timeout=1&cursor=" + url.QueryEscape(cur)}
			},
			rooms: []string{"p2"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "multi-room poll with a garbage cursor",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/poll?room=m1&room=m2&cursor=garbage&client=client-2"}
			},
			rooms: []string{"m1", "m2"}, status: http.StatusBadRequest, code: "invalid_cursor"},
		{name: "poll with a bad timeout",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/rooms/p3/poll?timeout=NaN"}
			},
			rooms: []string{"p3"}, status: http.StatusBadRequest, code: "invalid_parameter"},
		{name: "poll over the caller's session bound",
			setup: func(t *testing.T, r *relaytest.Relay) { parkSession(t, r, "s1", "client-first") },
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				cur := firstCursor(t, r, "/v1/rooms/s2/poll?timeout=0")
				return relaytest.Request{Path: "/v1/rooms/s2/poll?timeout=30&client=client-second&cursor=" + url.QueryEscape(cur)}
			},
			rooms: []string{"s1", "s2"}, status: http.StatusTooManyRequests, code: "too_many_sessions"},
		{name: "poll over the caller's presence bound",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/poll?room=q1&room=q2&room=q3&timeout=1"}
			},
			rooms: []string{"q1", "q2", "q3"}, status: http.StatusTooManyRequests, code: "limit_exceeded"},
		{name: "multi-room stream of too many rooms",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				q := make([]string, testBoundedMaxRooms+1)
				for i := range q {
					q[i] = "room=t" + strconv.Itoa(i)
				}
				return relaytest.Request{Path: "/v1/stream?" + strings.Join(q, "&")}
			},
			rooms: []string{"t0", "t1"}, status: http.StatusBadRequest, code: "too_many_rooms"},
		{name: "multi-room stream over the caller's session bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				s := r.Subscribe(t, "/v1/stream?room=u1", relaytest.StreamOptions{})
				t.Cleanup(s.Close)
				s.Connected(t)
			},
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Path: "/v1/stream?room=u2"}
			},
			rooms: []string{"u1", "u2"}, status: http.StatusTooManyRequests, code: "too_many_sessions"},
		{name: "join of an unknown connection",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/nobody/rooms/j1"}
			},
			rooms: []string{"j1"}, status: http.StatusNotFound, code: "unknown_connection"},
		{name: "join of a single-room stream",
			req: func(t *testing.T, r *relaytest.Relay) relaytest.Request {
				s := r.Subscribe(t, "/v1/rooms/j2/events", relaytest.StreamOptions{})
				t.Cleanup(s.Close)
				c := s.Connected(t)
				return relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/j3"}
			},
			rooms: []string{"j3"}, status: http.StatusConflict, code: "single_room_stream"},
		{name: "publish with a bad body and an idempotency key",
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/b1/events", Body: []byte("{"),
					Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-bad"}}}
			},
			status: http.StatusBadRequest, code: "invalid_json"},
		{name: "publish over the caller's idempotency key bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				r.Publish(t, "/v1/rooms/b2/events", "application/json", []byte(`{"event":"e","data":1}`), http.Header{"Idempotency-Key": {"k1"}})
			},
			req: func(*testing.T, *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/b3/events", Body: []byte(`{"event":"e","data":2}`),
					Header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k2"}}}
			},
			status: http.StatusTooManyRequests, code: "limit_exceeded"},
	}
	if withAuth {
		cases = append(cases, refusedCase{name: "ticket over the user's bound",
			setup: func(t *testing.T, r *relaytest.Relay) {
				if resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: alice(t)}); resp.Status != http.StatusCreated {
					t.Fatalf("first ticket: status %d: %s", resp.Status, resp.Body)
				}
			},
			req: func(t *testing.T, _ *relaytest.Relay) relaytest.Request {
				return relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: alice(t)}
			},
			status: http.StatusTooManyRequests, code: "limit_exceeded"})
	}
	return cases
}

const testBoundedMaxRooms = 8

// boundedOptions are small bounds, reached by a handful of requests, and
// timers long enough that nothing expires while a case is checked.
func boundedOptions() relaytest.Options {
	o := relaytest.Options{
		Hub: rooms.HubOptions{MaxRooms: testBoundedMaxRooms, PollSessionTTL: time.Minute,
			MaxPollSessionsPerCaller: 1, MaxPollPresencePerCaller: 2, MaxSessionsPerCaller: 1},
		Relay: relay.Options{Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1, MaxTicketsPerUser: 1}},
	}
	return o
}

// TestRefusedRequestLeavesNoState: a request answered with an error leaves
// nothing behind — no presence entry, connection, channel, session, key or
// ticket — whatever kind of request it was (issue 12, item 5).
func TestRefusedRequestLeavesNoState(t *testing.T) {
	for _, backbone := range []string{"memory", "redis"} {
		for _, c := range refusedCases(true) {
			t.Run(backbone+"/"+c.name, func(t *testing.T) {
				o := boundedOptions()
				o.Relay.Auth = relaytest.NewAuth(t, auth.Config{})
				var r *relaytest.Relay
				if backbone == "redis" {
					r = startRedisMetered(t, o)
				} else {
					r = startMetered(t, o)
				}
				if c.setup != nil {
					c.setup(t, r)
				}
				req := c.req(t, r)
				before := gauges(t, r)
				present := map[string]int{}
				for _, room := range c.rooms {
					present[room] = connectionsIn(t, r, room)
				}
				conns := r.Hub.Connections()
				bindings, err := r.Hub.ClientBindings(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				held := r.Hub.ClientIDsHeld()

				resp := r.Do(t, req)
				if resp.Status != c.status || errorCode(t, resp) != c.code {
					t.Fatalf("%s %s: status %d %s, want %d %s", req.Method, req.Path, resp.Status, resp.Body, c.status, c.code)
				}
				if resp.Status == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
					t.Errorf("a 429 without Retry-After")
				}

				if after := gauges(t, r); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("gauges changed by a refused request:\nbefore %v\nafter  %v", before, after)
				}
				for _, room := range c.rooms {
					if got := connectionsIn(t, r, room); got != present[room] {
						t.Errorf("presence of %s: %d connections after the refusal, %d before", room, got, present[room])
					}
				}
				if got := r.Hub.Connections(); got != conns {
					t.Errorf("hub connections: %d after the refusal, %d before", got, conns)
				}
				// Client-id bindings last minutes: a refused request
				// binds none (their gauges are not stateGauges, which
				// soak tests expect back at their baseline at once).
				if got, _ := r.Hub.ClientBindings(t.Context()); got != bindings {
					t.Errorf("client-id bindings: %d after the refusal, %d before", got, bindings)
				}
				if got := r.Hub.ClientIDsHeld(); got != held {
					t.Errorf("client ids counted for callers: %d after the refusal, %d before", got, held)
				}
			})
		}
	}
}

// TestStateIsBoundedPerCaller: past a caller's bound, another caller is
// still served, and the first one is again once its state is released.
func TestStateIsBoundedPerCaller(t *testing.T) {
	o := boundedOptions()
	o.Relay.Auth = relaytest.NewAuth(t, auth.Config{})
	o.Hub.PollSessionTTL = 300 * time.Millisecond
	r := startMetered(t, o)
	as := func(user string) http.Header {
		return relaytest.Bearer(relaytest.Token(t, user, time.Hour, nil))
	}
	heldPoll := func(user, room, client string) *relaytest.Response {
		cur := firstCursor(t, r, "/v1/rooms/"+room+"/poll?timeout=0")
		r.PublishJSON(t, room, map[string]string{"event": "e", "data": "x"})
		return r.Do(t, relaytest.Request{Path: "/v1/rooms/" + room + "/poll?timeout=0.2&client=" + client + "&cursor=" + url.QueryEscape(cur), Header: as(user)})
	}
	if resp := heldPoll("alice", "a1", "client-alice-1"); resp.Status != http.StatusOK {
		t.Fatalf("alice's first held poll: %d %s", resp.Status, resp.Body)
	}
	if resp := heldPoll("alice", "a2", "client-alice-2"); resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "too_many_sessions" {
		t.Fatalf("alice's second session: %d %s, want 429 too_many_sessions", resp.Status, resp.Body)
	}
	if resp := heldPoll("bob", "b1", "client-bob-1"); resp.Status != http.StatusOK {
		t.Fatalf("bob's held poll, while alice is at her bound: %d %s", resp.Status, resp.Body)
	}
	relaytest.Eventually(t, "the parked sessions expire", func() bool { return r.Hub.PollSessions() == 0 })
	if resp := heldPoll("alice", "a3", "client-alice-3"); resp.Status != http.StatusOK {
		t.Fatalf("alice's held poll once her session expired: %d %s", resp.Status, resp.Body)
	}
}

// TestAbandonedStateReturnsToBaseline is the soak test of issue 12, item 2:
// real HTTP clients create every kind of state — streams, held polls and
// joins on rooms nobody publishes to, parked poll sessions, presence,
// multi-room sessions, idempotency keys, tickets — and abandon it; every
// gauge returns to its baseline and the heap stays within a coarse bound.
func TestAbandonedStateReturnsToBaseline(t *testing.T) {
	for _, backbone := range []string{"memory", "redis"} {
		t.Run(backbone, func(t *testing.T) { testAbandonedState(t, backbone) })
	}
}

// inProcessOnly are the gauges of state the embedded backbone keeps in the
// process and Redis keeps in Redis.
var inProcessOnly = map[string]bool{
	"roomcast_presence_entries":          true,
	"roomcast_backbone_idempotency_keys": true,
	"roomcast_backbone_claims":           true,
	"roomcast_backbone_sessions":         true,
}

func testAbandonedState(t *testing.T, backbone string) {
	const rounds, roomsPerRound = 20, testBoundedMaxRooms - 1
	o := relaytest.Options{
		Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{TicketTTL: time.Second, SpentTicketKept: time.Second}),
			Limits: relay.Limits{MaxIdempotencyKeysPerCaller: 1000}, IdempotencyTTL: time.Second},
		Hub:    rooms.HubOptions{MaxRooms: testBoundedMaxRooms, PollSessionTTL: 200 * time.Millisecond, SessionTTL: time.Second},
		Memory: memory.Options{HistoryAge: time.Second, PresenceGrace: 100 * time.Millisecond},
	}
	var r *relaytest.Relay
	if backbone == "redis" {
		r = startRedisMetered(t, o)
	} else {
		r = startMetered(t, o)
	}
	base := gauges(t, r)
	for _, name := range stateGauges {
		if _, ok := base[name]; !ok && (backbone == "memory" || !inProcessOnly[name]) {
			t.Fatalf("no gauge %s in /metrics", name)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBase := ms.HeapAlloc

	token := relaytest.Token(t, "soaker", time.Hour, nil)
	for round := range rounds {
		names := make([]string, roomsPerRound)
		query := make([]string, roomsPerRound)
		for i := range names {
			names[i] = fmt.Sprintf("soak-%d-%d", round, i)
			query[i] = "room=" + names[i]
		}
		rooms := strings.Join(query, "&")
		// A multi-room stream of new rooms, one more joined, then dropped.
		s := r.Subscribe(t, "/v1/stream?"+rooms, relaytest.StreamOptions{})
		c := s.Connected(t)
		if resp := r.Do(t, relaytest.Request{Method: http.MethodPut, Path: "/v1/connections/" + c.Connection + "/rooms/soak-join-" + strconv.Itoa(round)}); resp.Status != http.StatusNoContent {
			t.Fatalf("join: %d %s", resp.Status, resp.Body)
		}
		s.Close()
		// A held poll of new rooms that times out, its session parked and
		// abandoned, its presence leases left to expire.
		cur := firstCursor(t, r, "/v1/poll?"+rooms+"&timeout=0.05")
		client := "soak-client-" + strconv.Itoa(round)
		if resp := r.Get(t, "/v1/poll?"+rooms+"&timeout=0.05&client="+client+"&cursor="+url.QueryEscape(cur)); resp.Status != http.StatusOK {
			t.Fatalf("held poll: %d %s", resp.Status, resp.Body)
		}
		// A publish with an idempotency key, and a ticket.
		r.Publish(t, "/v1/rooms/"+names[0]+"/events", "application/json", []byte(`{"event":"e","data":1}`),
			http.Header{"Idempotency-Key": {"soak-" + strconv.Itoa(round)}})
		ticket := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/tickets", Header: relaytest.Bearer(token)})
		if ticket.Status != http.StatusCreated {
			t.Fatalf("ticket: %d %s", ticket.Status, ticket.Body)
		}
		var tk struct{ Ticket string }
		ticket.JSON(t, &tk)
		// Redeemed by a stream, which is dropped.
		ts := r.Subscribe(t, "/v1/rooms/"+names[1]+"/events?ticket="+url.QueryEscape(tk.Ticket), relaytest.StreamOptions{})
		ts.Connected(t)
		ts.Close()
	}
	grown := gauges(t, r)
	grew := []string{"roomcast_idempotency_keys", "roomcast_tickets"}
	if backbone == "memory" {
		grew = append(grew, "roomcast_backbone_channels")
	}
	for _, name := range grew {
		if grown[name] <= base[name] {
			t.Errorf("%s did not grow (%v → %v): the soak did not create what it abandons", name, base[name], grown[name])
		}
	}

	// Polled: expiry has no event to await.
	relaytest.EventuallyOK(t, "the gauges return to their baseline", func() error {
		if last := gauges(t, r); fmt.Sprint(last) != fmt.Sprint(base) {
			return fmt.Errorf("\nbaseline %v\nnow      %v", base, last)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > heapBase+64<<20 {
		t.Errorf("heap %d MB after the soak, %d MB before", ms.HeapAlloc>>20, heapBase>>20)
	}
}

// TestSubscribedOnlyChannelsAreFreed: polling, streaming or joining rooms
// nobody publishes to leaves no channel behind in the memory backbone
// (it kept every one of them for ever).
func TestSubscribedOnlyChannelsAreFreed(t *testing.T) {
	r := startMetered(t, relaytest.Options{Hub: rooms.HubOptions{PollSessionTTL: 100 * time.Millisecond}})
	base := r.Backbone.Channels()
	for i := range 50 {
		room := "fresh-" + strconv.Itoa(i)
		cur := firstCursor(t, r, "/v1/poll?room="+room)
		if resp := r.Get(t, "/v1/poll?room="+room+"&timeout=0.01&client=client-"+strconv.Itoa(i)+"&cursor="+url.QueryEscape(cur)); resp.Status != http.StatusOK {
			t.Fatalf("held poll: %d %s", resp.Status, resp.Body)
		}
	}
	relaytest.Eventually(t, "the sessions expire and their channels are freed", func() bool {
		return r.Hub.PollSessions() == 0 && r.Backbone.Channels() == base
	})
}

// TestRefusedPublishSpendsNoAllowance: a publish refused for what it is
// (exclude_self without a connection, "exclude" from a client) does not use
// up the caller's publish rate.
func TestRefusedPublishSpendsNoAllowance(t *testing.T) {
	r := startMetered(t, relaytest.Options{Relay: relay.Options{Limits: relay.Limits{PublishRate: 0.001, PublishBurst: 1}}})
	for _, body := range []string{`{"event":"e","data":1,"exclude_self":true}`, `{"event":"e","data":1,"exclude":["someone"]}`} {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/rate/events", Body: []byte(body),
			Header: http.Header{"Content-Type": {"application/json"}}})
		if resp.Status/100 != 4 || resp.Status == http.StatusTooManyRequests {
			t.Fatalf("%s: status %d %s, want a refusal for the body", body, resp.Status, resp.Body)
		}
	}
	r.Publish(t, "/v1/rooms/rate/events", "application/json", []byte(`{"event":"e","data":1}`), nil)
}

// TestChannelsAreBoundedGlobally: the embedded backbone keeps at most
// MaxChannels channels; what would need one more is refused with 429
// limit_exceeded and leaves nothing, and the room is there again once
// channels are freed.
func TestChannelsAreBoundedGlobally(t *testing.T) {
	r := startMetered(t, relaytest.Options{Memory: memory.Options{MaxChannels: 3}})
	// The control channel is one; a stream of a room holds the room and
	// its namespace channel.
	s := r.Subscribe(t, "/v1/rooms/first/events", relaytest.StreamOptions{})
	s.Connected(t)
	before := gauges(t, r)
	for _, req := range []relaytest.Request{
		{Path: "/v1/stream?room=a&room=b"},
		{Method: http.MethodPost, Path: "/v1/rooms/other:x/events", Body: []byte(`{"event":"e","data":1}`), Header: http.Header{"Content-Type": {"application/json"}}},
	} {
		resp := r.Open(t, req)
		if resp.Status != http.StatusTooManyRequests || errorCode(t, resp) != "limit_exceeded" {
			t.Fatalf("%s %s: status %d %s, want 429 limit_exceeded", req.Method, req.Path, resp.Status, resp.Body)
		}
		if after := gauges(t, r); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("gauges changed by a refused request:\nbefore %v\nafter  %v", before, after)
		}
	}
	s.Close()
	relaytest.Eventually(t, "the stream's channels are freed", func() bool { return r.Backbone.Channels() == 1 })
	r.PublishJSON(t, "other:x", map[string]any{"event": "e", "data": 1})
}
