package rooms_test

import (
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// A writer that stops a Drain loop early has consumed what it saw, no
// more: the cursor it wrote resumes after that delivery, Ready is
// signalled again, and the next Drain yields the rest in order.
func TestDrainStoppedEarlyKeepsTheRest(t *testing.T) {
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	r := e.single("early")
	r.fill(time.Second) // the connect bookkeeping
	r.pending = nil
	seqs := []uint64{e.send("early"), e.send("early"), e.send("early")}
	select {
	case <-r.conn.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("nothing queued")
	}
	var first uint64
	var cursor string
	for d := range r.conn.Drain() {
		first, cursor = d.Event.Seq, string(r.conn.AppendCursor(nil))
		break
	}
	if first != seqs[0] {
		t.Fatalf("first delivery is event %d, want %d", first, seqs[0])
	}
	r.expect(seqs[1:], seqs[2])

	// The cursor written with the first event resumes after it.
	again := e.connect(rooms.ConnectRequest{Channels: []string{"early"}, Resume: cursor})
	again.expect(seqs[1:], seqs[2])
}
