package redis

import (
	"context"
	"strconv"
	"testing"

	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// A live event reusing a position already delivered, with a newer time,
// means Redis lost writes but kept its epoch: the backbone starts a new
// epoch so that subscribers are reset rather than silently miss events.
func TestPositionReuseRotatesEpoch(t *testing.T) {
	b := openBackbone(t, redistest.SharedURL(t), Options{Prefix: redistest.Prefix(t)})
	ctx := context.Background()
	epoch, err := b.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscription{channel: "r", confirmed: true, epoch: epoch, lastSeq: 10, lastN: 10, lastTS: 1000}
	b.mu.Lock()
	b.subs["r"] = s
	b.mu.Unlock()
	body := `{"c":["r"],"e":"message","d":1}`
	live := func(seq uint64, ts int64) {
		b.live("r", "1|"+epoch+"|"+strconv.FormatUint(seq, 10)+"|"+strconv.FormatInt(ts, 10)+"|0|"+strconv.FormatUint(seq, 10)+"|"+body)
	}
	live(10, 1000) // a duplicate of what was delivered: nothing happens
	if now, _ := b.Epoch(ctx); now != epoch {
		t.Fatalf("a duplicate changed the epoch %s to %s", epoch, now)
	}
	live(9, 2000) // position 9 again, by a newer event
	if now, _ := b.Epoch(ctx); now == epoch {
		t.Fatal("the epoch survived a reused position")
	}
}
