package rooms_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// pollUntil long-polls ch from cursor until it has n events.
func (e *env) pollUntil(client, cursor string, n int, channels ...string) (seqs []uint64, next string) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for len(seqs) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("polled %v; want %d events", seqs, n)
		}
		res := e.poll(rooms.PollRequest{Channels: channels, Cursor: cursor, Client: client, Timeout: wait, KeepSession: true})
		seqs = append(seqs, pollSeqs(res)...)
		cursor = res.Cursor
	}
	return seqs, cursor
}

// session polls room a from its tail and again for an event sent in
// between, which leaves client's session parked; it returns the event and
// the cursor after it.
func (e *env) session(client string) (seq uint64, cursor string) {
	e.t.Helper()
	cursor = e.poll(rooms.PollRequest{Channels: []string{"a"}, Client: client}).Cursor
	seq = e.send("a")
	got, cursor := e.pollUntil(client, cursor, 1, "a")
	if !slices.Equal(got, []uint64{seq}) {
		e.t.Fatalf("first long-poll = %v; want [%d]", got, seq)
	}
	return seq, cursor
}

// TestPollSessionContinues: a long-poller's next poll continues from the
// connection its last poll left joined, and gets what was published in
// between (volatile events too, which history does not keep), once and in
// order, without joining again.
func TestPollSessionContinues(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	const client = "session-client"
	_, cursor := e.session(client)
	if e.hub.PollSessions() != 1 || rooms.ChannelConns(e.hub, "a") != 1 {
		t.Fatalf("%d sessions, %d connections on a; want 1 and 1", e.hub.PollSessions(), rooms.ChannelConns(e.hub, "a"))
	}
	want := []uint64{e.send("a"), e.publish(rooms.Message{Channels: []string{"a"}, Volatile: true}).Seq, e.send("a")}
	got, _ := e.pollUntil(client, cursor, len(want), "a")
	if len(got) != len(want) || got[0] != want[0] || got[2] != want[2] {
		t.Fatalf("second poll = %v; want %v (the volatile event included)", got, want)
	}
	if rooms.ChannelConns(e.hub, "a") != 1 {
		t.Fatalf("%d connections on a; want the session's alone", rooms.ChannelConns(e.hub, "a"))
	}
}

// TestPollSessionOtherCursor: a poll from an earlier cursor (a retry, or a
// second tab with the same client id) is answered from history as before,
// and the stale session is let go.
func TestPollSessionOtherCursor(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	const client = "retry-client"
	start := e.poll(rooms.PollRequest{Channels: []string{"a"}, Client: client}).Cursor
	one := e.send("a")
	_, after := e.pollUntil(client, start, 1, "a")
	two := e.send("a")
	got, _ := e.pollUntil(client, start, 2, "a")
	if !slices.Equal(got, []uint64{one, two}) {
		t.Fatalf("poll from the first cursor = %v; want [%d %d]", got, one, two)
	}
	// The answer before this one is stale now: its cursor still works.
	got, _ = e.pollUntil(client, after, 1, "a")
	if !slices.Equal(got, []uint64{two}) {
		t.Fatalf("poll from the stale cursor = %v; want [%d]", got, two)
	}
	if n := rooms.ChannelConns(e.hub, "a"); n != 1 {
		t.Fatalf("%d connections on a; want 1", n)
	}
}

// TestPollSessionOverflow: a poller that stays away while more events come
// than its connection queues loses nothing: its session is dropped and the
// next poll reads history.
func TestPollSessionOverflow(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{QueueSize: 4}, memory.Options{})
	const client = "slow-client"
	_, cursor := e.session(client)
	var want []uint64
	for range 10 {
		want = append(want, e.send("a"))
	}
	got, _ := e.pollUntil(client, cursor, len(want), "a")
	if !slices.Equal(got, want) {
		t.Fatalf("after the overflow polls returned %v; want %v", got, want)
	}
}

// TestPollSessionDrain: draining ends parked sessions and parks no more.
func TestPollSessionDrain(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	_, cursor := e.session("drained-client")
	if e.hub.PollSessions() != 1 {
		t.Fatal("no session parked")
	}
	e.hub.Drain(func() time.Duration { return time.Second })
	if e.hub.PollSessions() != 0 || e.hub.Channels() != 0 {
		t.Fatalf("after Drain: %d sessions, %d channels", e.hub.PollSessions(), e.hub.Channels())
	}
	res := e.poll(rooms.PollRequest{Channels: []string{"a"}, Client: "drained-client", Cursor: cursor, Timeout: wait, KeepSession: true})
	if len(res.Events) != 0 || e.hub.PollSessions() != 0 {
		t.Fatalf("poll while draining: %d events, %d sessions", len(res.Events), e.hub.PollSessions())
	}
}

// TestPollSessionConcurrentPublish: pollers looping while events are
// published get every event once, in order within each room, whether an
// answer came from history, the queue or both. (Across rooms, an answer
// from history may hold a later event of one room before an earlier one of
// the other: the rooms' histories are read one after the other.)
func TestPollSessionConcurrentPublish(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{PollLimit: 7}, memory.Options{})
	const events, pollers = 300, 4
	cursors := make([]string, pollers)
	for i := range cursors {
		cursors[i] = e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Client: "loop-client-" + string(rune('a'+i))}).Cursor
	}
	var want [2][]uint64
	room := map[uint64]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range events {
			seq := e.send([]string{"a", "b"}[i%2])
			mu.Lock()
			want[i%2] = append(want[i%2], seq)
			room[seq] = i % 2
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	results := make([][]uint64, pollers)
	for i := range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cursor := cursors[i]
			deadline := time.Now().Add(wait)
			for len(results[i]) < events && time.Now().Before(deadline) {
				res, err := e.hub.Poll(context.Background(), rooms.PollRequest{Channels: []string{"a", "b"},
					Cursor: cursor, Client: "loop-client-" + string(rune('a'+i)), Timeout: time.Second, KeepSession: true,
					Proof: e.proof("loop-client-" + string(rune('a'+i)))})
				if err != nil {
					t.Errorf("Poll: %v", err)
					return
				}
				results[i] = append(results[i], pollSeqs(res)...)
				cursor = res.Cursor
			}
		}()
	}
	wg.Wait()
	<-done
	for i, all := range results {
		var got [2][]uint64
		for _, seq := range all {
			got[room[seq]] = append(got[room[seq]], seq)
		}
		for r := range got {
			if !slices.Equal(got[r], want[r]) {
				j := 0
				for j < min(len(got[r]), len(want[r])) && got[r][j] == want[r][j] {
					j++
				}
				t.Errorf("poller %d, room %d: got %d events, want %d; from index %d got %v, want %v", i, r,
					len(got[r]), len(want[r]), j, got[r][j:min(len(got[r]), j+8)], want[r][j:min(len(want[r]), j+8)])
			}
		}
	}
}

// TestPollWithoutSession: a poll that does not ask to keep its session
// (its client did not name itself) leaves nothing joined behind.
func TestPollWithoutSession(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	cursor := e.poll(rooms.PollRequest{Channels: []string{"a"}}).Cursor
	seq := e.send("a")
	res := e.poll(rooms.PollRequest{Channels: []string{"a"}, Cursor: cursor, Client: "anonymous-1", Timeout: wait})
	if got := pollSeqs(res); !slices.Equal(got, []uint64{seq}) {
		t.Fatalf("poll = %v; want [%d]", got, seq)
	}
	if e.hub.PollSessions() != 0 || e.hub.Channels() != 0 {
		t.Fatalf("%d sessions, %d channels left", e.hub.PollSessions(), e.hub.Channels())
	}
}

// TestPollSessionCap: past MaxPollSessions, answered polls keep no
// connection, and are answered as well as ever.
func TestPollSessionCap(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{MaxPollSessions: 2}, memory.Options{})
	for i, client := range []string{"capped-client-1", "capped-client-2", "capped-client-3"} {
		e.session(client)
		if want := min(i+1, 2); e.hub.PollSessions() != want {
			t.Fatalf("after %d pollers: %d sessions, want %d", i+1, e.hub.PollSessions(), want)
		}
	}
	// The third poller's polls go on from history.
	cursor := e.poll(rooms.PollRequest{Channels: []string{"a"}, Client: "capped-client-3"}).Cursor
	seq := e.send("a")
	if got, _ := e.pollUntil("capped-client-3", cursor, 1, "a"); !slices.Equal(got, []uint64{seq}) {
		t.Fatalf("uncapped poller got %v; want [%d]", got, seq)
	}
	if rooms.ChannelConns(e.hub, "a") != 2 {
		t.Fatalf("%d connections on a; want the two sessions'", rooms.ChannelConns(e.hub, "a"))
	}
}
