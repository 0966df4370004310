package redis

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// The replication marker is on the replica only, never in the primary's
// own data; a replica promoted to primary starts a new epoch with its first
// publish, and a resend of a publish stored before the promotion is
// answered with the epoch it was stored in.
func TestPromotedReplicaStartsNewEpoch(t *testing.T) {
	primary, replica := redistest.NewServer(t), redistest.NewServer(t)
	ctx := context.Background()
	if err := primary.Client().ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(primary.Addr(), ":")
	if err := replica.Client().ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	// A full sync copies the primary's own data, without the marker:
	// only publishes after it carry the marker to the replica.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(replica.Client().Info(ctx, "replication").Val(), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("the replica never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := openBackbone(t, primary.URL(), Options{})
	m := message("promoted")
	m.Token = rooms.NewPublishToken(time.Now())
	stored, err := b.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	marker := b.key("", "epoch:replicated")
	for replica.Client().Get(ctx, marker).Val() != "r" {
		if time.Now().After(deadline) {
			t.Fatal("the marker never reached the replica")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := primary.Client().Exists(ctx, marker).Val(); n != 0 {
		t.Fatal("the primary holds the marker in its own data")
	}
	// A publish after the marker check keeps the epoch on the primary.
	again, err := b.Publish(ctx, message("promoted"), "")
	if err != nil {
		t.Fatal(err)
	}
	if epochOf(t, again.ID) != epochOf(t, stored.ID) {
		t.Fatalf("the primary changed epoch: %s, then %s", stored.ID, again.ID)
	}

	if err := replica.Client().ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	promoted := openBackbone(t, replica.URL(), Options{})
	resent, err := promoted.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	if !resent.Duplicate || resent.ID != stored.ID {
		t.Errorf("resend after the promotion answered %+v, want the stored %s", resent, stored.ID)
	}
	epoch, err := promoted.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if epoch == epochOf(t, stored.ID) {
		t.Errorf("the promoted replica kept the epoch %s", epoch)
	}
	next, err := promoted.Publish(ctx, message("promoted"), "")
	if err != nil {
		t.Fatal(err)
	}
	if epochOf(t, next.ID) != epoch {
		t.Errorf("publish on the promoted replica: %s, want epoch %s", next.ID, epoch)
	}
	if n := replica.Client().Exists(ctx, marker).Val(); n != 0 {
		t.Error("the promoted replica still holds the marker")
	}
}

func epochOf(t *testing.T, id string) string {
	t.Helper()
	e, _, err := rooms.ParseEventID(id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
