package clustertest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// The tests below hold an instance's Redis catch-up at will: the instance
// runs as a Redis user whose XRANGE on the two rooms' history streams can
// be refused (ACL key permissions). After its pub/sub connection is
// killed, the instance resubscribes and catches up each channel from
// history, one channel after the other, retrying a refused read until it
// is allowed; Redis's ACL LOG names the stream whose read was refused, so
// a test knows which room's catch-up is under way without any timing.

const (
	watcherUser = "watcher"
	watcherPass = "watcher-secret"
	keyPrefix   = "roomcast:" // the relay's default Redis key prefix
)

// catchUpGate is the Redis side of a held catch-up.
type catchUpGate struct {
	t     *testing.T
	admin *goredis.Client
}

// newWatchedCluster starts Redis, instance A as the watcher user, whose
// catch-ups the gate holds, and instance B as the default user, which
// publishes.
func newWatchedCluster(t *testing.T) (*cluster, *catchUpGate) {
	t.Helper()
	c := &cluster{redis: redistest.NewServer(t)}
	g := &catchUpGate{t: t, admin: c.redis.Client()}
	g.acl("SETUSER", watcherUser, "on", ">"+watcherPass, "~*", "&*", "+@all")
	url := fmt.Sprintf("redis://%s:%s@%s", watcherUser, watcherPass, c.redis.Addr())
	c.nodes = append(c.nodes, c.start(t, "A", "-redis-url", url), c.start(t, "B"))
	return c, g
}

func (g *catchUpGate) acl(args ...string) {
	g.t.Helper()
	cmd := append([]any{"ACL"}, anySlice(args)...)
	if err := g.admin.Do(context.Background(), cmd...).Err(); err != nil {
		g.t.Fatalf("%v: %v", cmd, err)
	}
}

func anySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// close refuses the watcher's history reads of every room stream (the
// namespace and user channels' streams stay readable), drops every pub/sub
// connection, and returns once the watcher's first catch-up of one of
// rooms was refused: that room's.
func (g *catchUpGate) close(rooms ...string) string {
	g.t.Helper()
	g.acl("LOG", "RESET")
	g.acl("SETUSER", watcherUser, "-xrange", "clearselectors", "(+xrange ~"+keyPrefix+"h:#*)")
	if err := g.admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		g.t.Fatal(err)
	}
	return g.awaitRefused(rooms...)
}

// awaitRefused waits until a history read of one of rooms was refused and
// returns that room.
func (g *catchUpGate) awaitRefused(rooms ...string) string {
	g.t.Helper()
	var room string
	relaytest.Eventually(g.t, fmt.Sprintf("a catch-up of one of %v to be refused", rooms), func() bool {
		room = g.refused(rooms)
		return room != ""
	})
	return room
}

// refused returns the room among rooms whose stream the watcher was last
// refused, "" for none.
func (g *catchUpGate) refused(rooms []string) string {
	entries, err := g.admin.Do(context.Background(), "ACL", "LOG").Slice()
	if err != nil {
		g.t.Fatal(err)
	}
	for _, e := range entries { // newest first
		obj := ""
		switch fields := e.(type) {
		case map[any]any: // RESP3
			obj, _ = fields["object"].(string)
		case []any: // RESP2: field, value, ...
			for i := 0; i+1 < len(fields); i += 2 {
				if k, _ := fields[i].(string); k == "object" {
					obj, _ = fields[i+1].(string)
				}
			}
		}
		for _, r := range rooms {
			if obj == keyPrefix+"h:"+r {
				return r
			}
		}
	}
	return ""
}

// allow lets the watcher read room's history stream.
func (g *catchUpGate) allow(room string) {
	g.t.Helper()
	g.acl("SETUSER", watcherUser, "(+xrange ~"+keyPrefix+"h:"+room+")")
}

// open lets every read through again.
func (g *catchUpGate) open() {
	g.t.Helper()
	g.acl("SETUSER", watcherUser, "+xrange", "clearselectors")
}

// publishMulti publishes data to rooms on n with POST /v1/events.
func publishMulti(t testing.TB, n *node, data string, rooms ...string) string {
	t.Helper()
	return publish(t, n, "/v1/events", fmt.Sprintf(`{"rooms":["%s"],"data":%q}`, strings.Join(rooms, `","`), data),
		"Content-Type", "application/json")
}

// publishMarkers publishes an event to each of rooms alone, adds them to
// want and returns their ids: once a stream has them all, it has every
// event published to those rooms before.
func publishMarkers(t testing.TB, n *node, want *[]sent, rooms ...string) []string {
	t.Helper()
	var ids []string
	for _, r := range rooms {
		id := publish(t, n, roomPath(r), "marker")
		*want = append(*want, sent{id, []string{r}})
		ids = append(ids, id)
	}
	return ids
}

// sent is a published event and the rooms it went to.
type sent struct {
	id    string
	rooms []string
}

// delivered is an application event as a stream delivered it.
type delivered struct {
	id, room, cursor string
}

// deliveredUntil reads s until the events with ids markers came, and
// returns the application events read, markers included. No order is
// promised across rooms: a stream in several rooms needs a marker in each.
func deliveredUntil(t testing.TB, s *stream, markers ...string) []delivered {
	t.Helper()
	var out []delivered
	awaited := len(markers)
	for {
		f := s.next(t)
		id := f.eventID()
		if id == "" {
			if f.Event == "roomcast:reset" || f.Event == "roomcast:error" {
				t.Fatalf("stream on %s: %s %s", s.node.name, f.Event, f.Data)
			}
			continue
		}
		out = append(out, delivered{id: id, room: f.env(t).Room, cursor: f.ID})
		if slices.Contains(markers, id) {
			if awaited--; awaited == 0 {
				return out
			}
		}
	}
}

// checkOnceInOrder checks that got holds every event of want exactly once,
// each through one of its rooms, and that the events delivered through
// each room came in the order they were published.
func checkOnceInOrder(t testing.TB, what string, got []delivered, want []sent) {
	t.Helper()
	index := make(map[string]int, len(want))
	for i, s := range want {
		index[s.id] = i
	}
	seen := make(map[string]int)
	last := make(map[string]int) // room → index of the last event through it
	for _, d := range got {
		i, ok := index[d.id]
		if !ok {
			t.Errorf("%s: event %s was never published", what, d.id)
			continue
		}
		if seen[d.id]++; seen[d.id] == 2 {
			t.Errorf("%s: event %s delivered more than once", what, d.id)
		}
		if !slices.Contains(want[i].rooms, d.room) {
			t.Errorf("%s: event %s came through %q, not %v", what, d.id, d.room, want[i].rooms)
		}
		if l, ok := last[d.room]; ok && i < l {
			t.Errorf("%s: event %s came through %q after a later one (%s)", what, d.id, d.room, want[l].id)
		}
		last[d.room] = i
	}
	missing := 0
	for _, s := range want {
		if seen[s.id] == 0 {
			missing++
		}
	}
	if missing > 0 || len(got) != len(want) {
		t.Errorf("%s: received %d events for %d published, %d of them missing", what, len(got), len(want), missing)
	}
}

// TestMultiRoomCatchUpOnceAndResumable: a stream in rooms ma and mb; its
// instance loses its pub/sub connection while 80 events go to both rooms
// (and a few to one of them). Once it resubscribes, the catch-up reads one
// room's backlog, then the other's: every event must still arrive exactly
// once (a 64-entry dedupe window made every one arrive twice), and a
// resume from the cursor of a frame written during the first room's
// catch-up must lose nothing of the other room (a cursor that moved every
// room of a multi-room event claimed the other room's single-room events
// before they were written).
func TestMultiRoomCatchUpOnceAndResumable(t *testing.T) {
	t.Parallel()
	c, gate := newWatchedCluster(t)
	a, b := c.nodes[0], c.nodes[1]
	s := open(t, a, "/v1/stream?room=ma,mb", server())

	gate.close("ma", "mb")
	var want []sent
	for i := range 80 {
		want = append(want, sent{publishMulti(t, b, fmt.Sprint("both ", i), "ma", "mb"), []string{"ma", "mb"}})
		if i%10 == 5 {
			for _, r := range []string{"ma", "mb"} {
				want = append(want, sent{publish(t, b, roomPath(r), fmt.Sprint(r, " only ", i)), []string{r}})
			}
		}
	}
	gate.open()
	markers := publishMarkers(t, b, &want, "ma", "mb")
	got := deliveredUntil(t, s, markers...)
	checkOnceInOrder(t, "after the catch-up", got, want)
	s.close()

	// Resume from the last frame of the first room's catch-up, whichever
	// room that was: the other room's backlog was not written yet.
	seen := slices.IndexFunc(got, func(d delivered) bool { return d.room != got[0].room })
	if seen < 0 {
		t.Fatalf("every event came through %s", got[0].room)
	}
	back := open(t, b, "/v1/stream", server("Last-Event-ID", got[seen-1].cursor))
	markers = publishMarkers(t, b, &want, "ma", "mb")
	resumed := deliveredUntil(t, back, markers...)
	checkOnceInOrder(t, "read up to the resume, then resumed", append(got[:seen:seen], resumed...), want)
}

// TestMultiRoomLeaveDuringCatchUp leaves a room of a two-room stream while
// its instance's catch-up has read one room's backlog and not yet the
// other's. Whether the left room was the one to deliver the events (its
// copies still to come: they must come through the room kept) or had
// delivered them already (the kept room's copies must not deliver them
// again), each event arrives exactly once.
func TestMultiRoomLeaveDuringCatchUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// leaveFirst: the room left is the one whose backlog is read
		// first; else the one read second.
		leaveFirst bool
	}{
		{"left before its copies came", false},
		{"left after its copies came", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, gate := newWatchedCluster(t)
			a, b := c.nodes[0], c.nodes[1]
			s := open(t, a, "/v1/stream?room=la,lb", server())
			opening := s.openingID(t)
			// The room whose backlog is read first is known before
			// anything is published; each event names the room that
			// is to deliver it (the first the stream holds) first.
			first := gate.close("la", "lb")
			second := map[string]string{"la": "lb", "lb": "la"}[first]
			order := []string{second, first}
			left, kept := second, first
			if tc.leaveFirst {
				order = []string{first, second}
				left, kept = first, second
			}
			var want []sent
			for i := range 80 {
				// Either way the events come through the room read
				// first: once its copies came, or, left, before them.
				want = append(want, sent{publishMulti(t, b, fmt.Sprint("both ", i), order...), []string{first}})
			}
			gate.allow(first)
			if got := gate.awaitRefused(second); got != second {
				t.Fatalf("refused %q, want %q", got, second)
			}
			ans := do(t, http.MethodDelete, a.url+"/v1/connections/"+s.conn.Connection+"/rooms/"+left, server(), "")
			if ans.status != http.StatusNoContent {
				t.Fatalf("leave %s: %d %s", left, ans.status, ans.body)
			}
			gate.open()
			checkOnceInOrder(t, "after the leave", deliveredUntil(t, s, publishMarkers(t, b, &want, kept)...), want)
			s.close()

			// Resumed from its opening id, before the events and the
			// leave, the stream must bring each of them once again (a
			// session without the left room lost those the leave made
			// the kept room deliver).
			back := open(t, b, "/v1/stream", server("Last-Event-ID", opening))
			checkOnceInOrder(t, "resumed from before the leave", deliveredUntil(t, back, publishMarkers(t, b, &want, kept)...), want)
			if !back.saw("roomcast:left") {
				t.Errorf("resumed from before the leave: no roomcast:left")
			}
		})
	}
}

// TestMultiRoomResumeFromJoinedRoomOpening: 40 events go to rooms ja and
// jb (ja named first) while a stream is in jb; it joins ja and goes away.
// Resumed from its cursor of before the events, the stream gets ja back
// from its session, started where it was joined, past the events: jb's
// replay delivers them. A
// resume from that stream's opening id — jb behind the events, ja past
// them — must bring each of them once, on either instance (ja counted as
// held from the start made it the deliverer of copies behind its cursor:
// all were lost).
func TestMultiRoomResumeFromJoinedRoomOpening(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	s := open(t, a, "/v1/stream?room=jb", server())
	before := s.openingID(t)
	var want []sent
	for i := range 40 {
		want = append(want, sent{publishMulti(t, b, fmt.Sprint("both ", i), "ja", "jb"), []string{"jb"}})
	}
	ans := do(t, http.MethodPut, a.url+"/v1/connections/"+s.conn.Connection+"/rooms/ja", server(), "")
	if ans.status != http.StatusNoContent {
		t.Fatalf("join ja: %d %s", ans.status, ans.body)
	}
	s.close()

	again := open(t, b, "/v1/stream", server("Last-Event-ID", before))
	opening := again.openingID(t)
	markers := publishMarkers(t, b, &want, "jb")
	checkOnceInOrder(t, "resumed from before the join", deliveredUntil(t, again, markers...), want)
	again.close()

	for _, n := range []*node{a, b} {
		back := open(t, n, "/v1/stream", server("Last-Event-ID", opening))
		markers := publishMarkers(t, b, &want, "ja", "jb")
		checkOnceInOrder(t, "resumed on "+n.name+" from the opening id of the first resume", deliveredUntil(t, back, markers...), want)
		back.close()
	}
}

// openingID returns the id of the id-only frame that follows
// roomcast:connected: the first resume point of the stream's client.
func (s *stream) openingID(t testing.TB) string {
	t.Helper()
	var f frame
	relaytest.Eventually(t, "the opening id", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.read < len(s.frames) {
			f = s.frames[s.read]
			return true
		}
		return false
	})
	if !f.IDOnly() {
		t.Fatalf("frame after roomcast:connected on %s: %+v, want the opening id", s.node.name, f)
	}
	return f.ID
}

// TestMultiRoomResumeFromBeforeJoinOtherInstance: a stream on A joins room
// qa, qa's events follow, and the client drops before it read any of it.
// Resumed on B from its opening id (before the join), the session (in
// Redis) brings qa back from where it was joined: none of qa's events
// since the join is lost (qa restarted at its head lost them all).
func TestMultiRoomResumeFromBeforeJoinOtherInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	publish(t, b, roomPath("qa"), "before the join")
	s := open(t, a, "/v1/stream?room=qz", server())
	opening := s.openingID(t)
	ans := do(t, http.MethodPut, a.url+"/v1/connections/"+s.conn.Connection+"/rooms/qa", server(), "")
	if ans.status != http.StatusNoContent {
		t.Fatalf("join qa: %d %s", ans.status, ans.body)
	}
	var want []sent
	for i := range 10 {
		want = append(want, sent{publish(t, b, roomPath("qa"), fmt.Sprint("qa ", i)), []string{"qa"}})
	}
	want = append(want, sent{publishMulti(t, b, "both", "qz", "qa"), []string{"qz"}})
	s.close()

	back := open(t, b, "/v1/stream", server("Last-Event-ID", opening))
	markers := publishMarkers(t, b, &want, "qa", "qz")
	checkOnceInOrder(t, "resumed on B from before the join", deliveredUntil(t, back, markers...), want)
}

// saw reports whether s read a frame of event type typ.
func (s *stream) saw(typ string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.frames[:s.read], func(f frame) bool { return f.Event == typ })
}

// TestMultiRoomResumeFromBeforeLeaveOtherInstance: a stream on A in rooms
// vz and vl gets vl's events, leaves vl, and the client drops before it
// read any of it. Resumed on B from its opening id (before the leave), the
// session (in Redis) no longer has vl, yet vl's events up to the leave
// must come, each once, then roomcast:left, and none published after.
func TestMultiRoomResumeFromBeforeLeaveOtherInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	s := open(t, a, "/v1/stream?room=vz,vl", server())
	opening := s.openingID(t)
	var want []sent
	for i := range 10 {
		want = append(want, sent{publish(t, b, roomPath("vl"), fmt.Sprint("vl ", i)), []string{"vl"}})
		want = append(want, sent{publishMulti(t, b, fmt.Sprint("both ", i), "vl", "vz"), []string{"vl"}})
	}
	checkOnceInOrder(t, "live", deliveredUntil(t, s, publishMarkers(t, b, &want, "vl", "vz")...), want)
	ans := do(t, http.MethodDelete, a.url+"/v1/connections/"+s.conn.Connection+"/rooms/vl", server(), "")
	if ans.status != http.StatusNoContent {
		t.Fatalf("leave vl: %d %s", ans.status, ans.body)
	}
	publish(t, b, roomPath("vl"), "after the leave") // not in want: must not come
	s.close()

	again := open(t, b, "/v1/stream", server("Last-Event-ID", opening))
	checkOnceInOrder(t, "resumed from before the leave", deliveredUntil(t, again, publishMarkers(t, b, &want, "vz")...), want)
	if !again.saw("roomcast:left") {
		t.Errorf("resumed from before the leave: no roomcast:left")
	}
}

// TestMultiRoomJoinDuringCatchUp: streams on A hold rooms ka and kb (one
// each); A's catch-up is held while an event goes to both rooms, the room
// to be joined named first. Once the room read first has caught up and
// delivered the event to the stream holding it, that stream joins the
// other room, whose copy is still held: when it comes, it must not deliver
// the event again (the joined room counted as held before the event, and
// was the first of its rooms).
func TestMultiRoomJoinDuringCatchUp(t *testing.T) {
	t.Parallel()
	c, gate := newWatchedCluster(t)
	a, b := c.nodes[0], c.nodes[1]
	streams := map[string]*stream{
		"ka": open(t, a, "/v1/stream?room=ka", server()),
		"kb": open(t, a, "/v1/stream?room=kb", server()),
	}
	first := gate.close("ka", "kb")
	second := map[string]string{"ka": "kb", "kb": "ka"}[first]
	s := streams[first]
	want := []sent{{publishMulti(t, b, "both", second, first), []string{first}}}
	gate.allow(first)
	if got := gate.awaitRefused(second); got != second {
		t.Fatalf("refused %q, want %q", got, second)
	}
	got := deliveredUntil(t, s, want[0].id)
	ans := do(t, http.MethodPut, a.url+"/v1/connections/"+s.conn.Connection+"/rooms/"+second, server(), "")
	if ans.status != http.StatusNoContent {
		t.Fatalf("join %s: %d %s", second, ans.status, ans.body)
	}
	gate.open()
	markers := publishMarkers(t, b, &want, second, first)
	checkOnceInOrder(t, "after the join", append(got, deliveredUntil(t, s, markers...)...), want)
}
