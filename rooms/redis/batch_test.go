package redis

import (
	"context"
	"strconv"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

func TestPublishManyInOrder(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{})
	ctx := context.Background()
	// No script in Redis's cache: the batch loads it itself.
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var ms []rooms.Message
	var keys []string
	for i := range 20 {
		m := message("a")
		if i%2 == 1 {
			m = message("b", "a")
		}
		m.Data = []byte(strconv.Itoa(i))
		ms = append(ms, m)
		keys = append(keys, "")
	}
	keys[3], keys[5] = "k", "k"
	res, errs := b.PublishMany(ctx, ms, keys)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if !res[5].Duplicate || res[5].ID != res[3].ID {
		t.Errorf("a key repeated within the batch: %+v, want a duplicate of %+v", res[5], res[3])
	}
	h, err := b.Since(ctx, "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != 19 {
		t.Fatalf("a holds %d events, want 19", len(h.Events))
	}
	j := 0
	for i := range ms {
		if i == 5 {
			continue
		}
		if h.Events[j].Seq != res[i].Seq {
			t.Errorf("event %d of a is seq %d, want message %d's %d", j, h.Events[j].Seq, i, res[i].Seq)
		}
		j++
	}
}
