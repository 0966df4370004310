package rooms_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// A multi-channel event reaches a connection through each of its channels
// the connection holds. The connection delivers it through exactly one of
// them, the first of the event's channels it holds; each of the other
// copies only moves its own channel's position, in that channel's order.
// With Redis the copies of one event can arrive far apart (a catch-up
// reads one channel's backlog, then the next's): the cursors below put
// two channels at such different points.

// burst publishes n events to a and b, and every tenth time one to a alone
// and one to b alone. It returns them by where they went.
func (e *env) burst(n int) (both, onlyA, onlyB []uint64) {
	e.t.Helper()
	for i := range n {
		both = append(both, e.send("a", "b"))
		if i%10 == 5 {
			onlyA = append(onlyA, e.send("a"))
			onlyB = append(onlyB, e.send("b"))
		}
	}
	return both, onlyA, onlyB
}

// withPositions returns cursor with the channels of pos moved to the
// positions given, signed as the relay would.
func (e *env) withPositions(cursor string, pos map[string]uint64) string {
	e.t.Helper()
	c := e.decode(cursor)
	for ch, p := range pos {
		c.Set(ch, p)
	}
	return e.codec.Encode(*c)
}

// merged returns the events of lists in Seq order.
func merged(lists ...[]uint64) []uint64 {
	var out []uint64
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return out
}

// TestMultiRoomResumeFromSplitCursor resumes a two-room stream from a
// cursor that has one room's copies of 80 two-room events behind it and
// not the other's — more than any dedupe window would hold: each event is
// delivered once, and no single-room event is lost or repeated.
func TestMultiRoomResumeFromSplitCursor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ahead  string // the room whose copies the cursor is past
		behind string
	}{
		{"the delivering room ahead", "a", "b"},
		{"the other room ahead", "b", "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, rooms.HubOptions{}, memory.Options{})
			first := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true})
			start := e.send("a", "b")
			cursor := first.expect([]uint64{start}, start)[0].cursor
			e.hub.Disconnect(first.conn)
			both, onlyA, onlyB := e.burst(80)
			only := map[string][]uint64{"a": onlyA, "b": onlyB}
			last := merged(both, only[tc.ahead])
			split := e.withPositions(cursor, map[string]uint64{tc.ahead: last[len(last)-1], tc.behind: start})

			// Past a's copies, a two-room event was delivered (through
			// a); past b's only, it was not.
			want := only[tc.behind]
			if tc.ahead == "b" {
				want = merged(both, onlyA)
			}
			again := e.connect(rooms.ConnectRequest{Multi: true, Resume: split})
			marker := e.send("a", "b")
			again.expect(append(want, marker), marker)
			again.quiet()
		})
	}
}

// TestMultiRoomPollFromSplitCursor is TestMultiRoomResumeFromSplitCursor
// for polls: answered from history at once, and held with the poller's
// session kept for the next poll.
func TestMultiRoomPollFromSplitCursor(t *testing.T) {
	for _, held := range []bool{false, true} {
		name := "answered at once"
		if held {
			name = "held, session kept"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, rooms.HubOptions{PollLimit: 1000}, memory.Options{})
			const client = "split-poller"
			req := func(cursor string) rooms.PollRequest {
				r := rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: cursor, Client: client}
				if held {
					r.Timeout, r.KeepSession = wait, true
				}
				return r
			}
			tail := e.poll(req("")).Cursor
			start := e.send("a", "b")
			res := e.poll(req(tail))
			if got := pollSeqs(res); !slices.Equal(got, []uint64{start}) || res.Events[0].Event.Channels[res.Events[0].Index] != "a" {
				t.Fatalf("first poll = %v; want [%d] through a", got, start)
			}
			cursor := res.Cursor
			both, onlyA, onlyB := e.burst(80)
			split := e.withPositions(cursor, map[string]uint64{"a": merged(both, onlyA)[len(both)+len(onlyA)-1]})
			if got := pollSeqs(e.poll(req(split))); !slices.Equal(got, onlyB) {
				t.Fatalf("poll past a's copies = %v; want b's own events %v", got, onlyB)
			}
			split = e.withPositions(cursor, map[string]uint64{"b": merged(both, onlyB)[len(both)+len(onlyB)-1]})
			res = e.poll(req(split))
			if got, want := pollSeqs(res), merged(both, onlyA); !slices.Equal(got, want) {
				t.Fatalf("poll past b's copies = %v; want %v", got, want)
			}
			// The next poll, from the session when one was kept,
			// has only what comes next.
			next := []uint64{e.send("b", "a"), e.send("a", "b")}
			got, _ := e.pollUntil(client, res.Cursor, len(next), "a", "b")
			if !slices.Equal(got, next) {
				t.Fatalf("next poll = %v; want %v", got, next)
			}
		})
	}
}

// TestMultiRoomPollSessionOnce: a long-poller's session gets each of many
// two-room events published between its polls once.
func TestMultiRoomPollSessionOnce(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	const client = "session-poller"
	cursor := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Client: client}).Cursor
	first := e.send("a", "b")
	got, cursor := e.pollUntil(client, cursor, 1, "a", "b")
	if !slices.Equal(got, []uint64{first}) {
		t.Fatalf("first poll = %v; want [%d]", got, first)
	}
	both, onlyA, onlyB := e.burst(80)
	want := merged(both, onlyA, onlyB)
	got, cursor = e.pollUntil(client, cursor, len(want), "a", "b")
	if !slices.Equal(got, want) {
		t.Fatalf("session polls = %v; want %v", got, want)
	}
	res := e.poll(rooms.PollRequest{Channels: []string{"a", "b"}, Cursor: cursor, Client: client, Timeout: time.Millisecond, KeepSession: true})
	if len(res.Events) != 0 {
		t.Fatalf("a poll after everything = %v; want nothing", pollSeqs(res))
	}
}

// TestMultiRoomVolatileOnce: a volatile event to two rooms of a stream
// reaches it once too.
func TestMultiRoomVolatileOnce(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	r := e.connect(rooms.ConnectRequest{Channels: []string{"a", "b"}, Multi: true})
	e.publish(rooms.Message{Channels: []string{"b", "a"}, Volatile: true})
	marker := e.send("a")
	got := r.untilSeq(marker)
	if len(got) != 2 || !got[0].volatile || got[0].room != "b" {
		t.Fatalf("read %v; want the volatile event once, through b, then event %d", got, marker)
	}
	r.quiet()
}

// TestMultiRoomJoinLeaveResumeEveryCursor: a stream joins and leaves
// rooms between bursts of events to random sets of rooms (in random
// order); live, each event reaches it once iff it went to a room it held;
// and a resume from every cursor it wrote since the room change before
// the last one brings exactly what came after it (a resume from before a
// join lost the joined room's events since the join; one from before a
// leave, the left room's events up to the leave).
func TestMultiRoomJoinLeaveResumeEveryCursor(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		e := newEnv(t, rooms.HubOptions{QueueSize: 100000}, memory.Options{})
		all := []string{"r0", "r1", "r2", "r3"}
		held := map[string]bool{"r0": true, "r1": true}
		r := e.connect(rooms.ConnectRequest{Channels: []string{"r0", "r1"}, Multi: true})
		anon := rooms.Identity{}
		var live []item
		// Where the previous round's items start and end (before the
		// resumes' markers).
		prevStart, prevEnd := -1, -1
		for round := 0; round < 8; round++ {
			ch := all[rng.IntN(4)]
			if held[ch] && len(held) > 1 {
				if err := e.hub.Leave(context.Background(), anon, r.conn.ID, ch); err != nil {
					t.Fatal(err)
				}
				delete(held, ch)
			} else if !held[ch] {
				if err := e.hub.Join(context.Background(), anon, r.conn.ID, ch); err != nil {
					t.Fatal(err)
				}
				held[ch] = true
			}
			var want []uint64
			for range 30 {
				n := 1 + rng.IntN(4)
				rs := slices.Clone(all)
				rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
				rs = rs[:n]
				seq := e.send(rs...)
				for _, x := range rs {
					if held[x] {
						want = append(want, seq)
						break
					}
				}
			}
			var anyHeld string
			for x := range held {
				anyHeld = x
			}
			marker := e.send(anyHeld)
			want = append(want, marker)
			got := r.untilSeq(marker)
			if s := seqsOf(got); !slices.Equal(s, want) {
				t.Fatalf("seed %d round %d: live %v want %v", seed, round, got, want)
			}
			start := len(live)
			live = append(live, got...)
			// Resume from every cursor of this round and the previous
			// one: at most this round's room change came after it.
			end := len(live)
			ks := []int{}
			for k := prevStart; k >= 0 && k < prevEnd; k++ {
				ks = append(ks, k)
			}
			for k := start - 1; k < end; k++ {
				ks = append(ks, k)
			}
			prevStart, prevEnd = start, end
			for _, k := range ks {
				if k < 0 || live[k].cursor == "" {
					continue
				}
				var rest []uint64
				for _, it := range live[k+1:] {
					if it.kind == rooms.KindEvent {
						rest = append(rest, it.seq)
					}
				}
				again := e.connect(rooms.ConnectRequest{Multi: true, Resume: live[k].cursor})
				m2 := e.send(anyHeld)
				g := again.untilSeq(m2)
				e.hub.Disconnect(again.conn)
				if s := seqsOf(g); !slices.Equal(s, append(slices.Clone(rest), m2)) {
					t.Fatalf("seed %d round %d resume from item %d (%v): got %v want %v", seed, round, k, live[k], g, append(rest, m2))
				}
				// The live stream sees m2 as well.
				got := r.untilSeq(m2)
				live = append(live, got...)
			}
		}
	}
}
