package rooms_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// gatedSince holds every history read until released, and counts them.
type gatedSince struct {
	rooms.Backbone
	calls   atomic.Int32
	release chan struct{}
}

func (g *gatedSince) Since(ctx context.Context, ch string, after uint64, limit int) (rooms.History, error) {
	g.calls.Add(1)
	<-g.release
	return g.Backbone.Since(ctx, ch, after, limit)
}

func (g *gatedSince) Unwrap() rooms.Backbone { return g.Backbone }

// Many clients resuming one room from one position at once, as after an
// instance died, share one history read, and each gets the whole replay.
func TestResumesShareHistoryReads(t *testing.T) {
	bb := memory.New(memory.Options{})
	t.Cleanup(func() { _ = bb.Close() })
	gate := &gatedSince{Backbone: bb, release: make(chan struct{})}
	e := newEnvOn(t, bb, gate, rooms.HubOptions{})

	first := e.connect(rooms.ConnectRequest{Channels: []string{"storm"}})
	seen := first.untilSeq(e.send("storm"))
	cursor := seen[len(seen)-1].cursor
	e.hub.Disconnect(first.conn)
	missed := []uint64{e.send("storm"), e.send("storm"), e.send("storm")}

	const n = 10
	var wg sync.WaitGroup
	got := make([][]uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := e.hub.Connect(context.Background(), rooms.ConnectRequest{Channels: []string{"storm"}, Resume: cursor})
			if err != nil {
				t.Errorf("Connect: %v", err)
				return
			}
			defer e.hub.Disconnect(conn)
			for d := range conn.Drain() {
				if d.Kind == rooms.KindEvent {
					got[i] = append(got[i], d.Event.Seq)
				}
			}
		}()
	}
	roomstest.Eventually(t, "every resume to wait for history", func() bool { return rooms.ReplayWaiting(e.hub) == n })
	close(gate.release)
	wg.Wait()
	// All ten waited together; one read served them (a resume that had
	// counted itself but not yet joined the shared read when it was
	// released may read once more).
	if c := gate.calls.Load(); c > 2 {
		t.Errorf("%d history reads for %d resumes of one room from one position", c, n)
	}
	for i, seqs := range got {
		if len(seqs) != len(missed) || seqs[0] != missed[0] || seqs[len(seqs)-1] != missed[len(missed)-1] {
			t.Errorf("resume %d replayed %v, want %v", i, seqs, missed)
		}
	}
}

// A cursor ahead of the backbone's history (which lost its last writes
// but kept its epoch) is answered with a reset, not a silent gap.
func TestResumeAheadOfHistoryResets(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	e.send("ahead")
	epoch, err := e.bb.Epoch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var cur rooms.Cursor
	cur.Epoch = epoch
	cur.Set("ahead", 1000)
	cur.Set(rooms.NamespaceChannel(rooms.DefaultNamespace), 1000)
	conn, err := e.hub.Connect(context.Background(), rooms.ConnectRequest{Channels: []string{"ahead"}, Resume: e.codec.Encode(cur)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.hub.Disconnect(conn)
	var resets []string
	for d := range conn.Drain() {
		if d.Kind == rooms.KindReset {
			resets = append(resets, d.Reason+"@"+d.Channel)
		}
	}
	if !slices.Contains(resets, rooms.ResetHistoryLost+"@ahead") {
		t.Fatalf("resets %v, want history_lost for the room", resets)
	}
}
