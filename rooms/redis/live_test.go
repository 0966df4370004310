package redis

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// publishUnseen appends m to history exactly as Publish does, but sends its
// live copies to a pub/sub channel nobody reads: the silent loss pub/sub may
// inflict (go-redis drops a message its channel has no room for).
func publishUnseen(t testing.TB, b *Backbone, m rooms.Message) rooms.Published {
	t.Helper()
	keys, args, err := b.publishArgs(m, "", rooms.NewPublishToken(time.Now()), true)
	if err != nil {
		t.Fatal(err)
	}
	live := args[len(args)-len(m.Channels):]
	for i := range live {
		live[i] = b.key("lost:", m.Channels[i])
	}
	p, err := b.runPublish(context.Background(), keys, args)
	if err != nil {
		t.Fatalf("publish without live delivery: %v", err)
	}
	return p
}

// ids returns the id of every non-volatile event r received, in order.
func (r *recorder) ids() []string {
	var out []string
	for _, g := range r.all() {
		if !g.ev.Volatile {
			out = append(out, g.ev.ID())
		}
	}
	return out
}

// waitIDs waits until r received exactly the events want, in order.
func (r *recorder) waitIDs(t testing.TB, want []string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := r.ids()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("received %v,\nwant %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLiveOrderEqualsHistoryOrder publishes to one channel from several
// goroutines on several instances at once: every subscriber, on any
// instance, receives each event once, in the order of history.
func TestLiveOrderEqualsHistoryOrder(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix(t)
	publishers := []*Backbone{sharedBackbone(t, Options{Prefix: prefix}), sharedBackbone(t, Options{Prefix: prefix})}
	receivers := []*Backbone{sharedBackbone(t, Options{Prefix: prefix}), publishers[0]}
	recs := make([]*recorder, len(receivers))
	for i, b := range receivers {
		recs[i] = &recorder{}
		subscribe(t, b, "room", recs[i])
	}
	const goroutines, each = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		b := publishers[g%len(publishers)]
		wg.Go(func() {
			for i := range each {
				m := message("room")
				if i%5 == 0 {
					m = message("room", "side") // multi-room events share the order
				}
				if _, err := b.Publish(context.Background(), m, ""); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	history := historySeqs(t, receivers[0], "room", 0)
	if len(history) != goroutines*each || !slices.IsSorted(history) {
		t.Fatalf("history holds %d events (sorted: %v), want %d in Seq order", len(history), slices.IsSorted(history), goroutines*each)
	}
	for _, rec := range recs {
		rec.waitSeqs(t, history)
	}
}

// TestCatchUpAfterSilentLoss checks that a subscriber that misses live
// messages without any reconnect notices the gap at the next message and
// delivers what it missed from history first, each event once, in order.
func TestCatchUpAfterSilentLoss(t *testing.T) {
	t.Parallel()
	type step struct {
		channels []string
		unseen   bool // published to history only
	}
	seen := func(chs ...string) step { return step{channels: chs} }
	unseen := func(chs ...string) step { return step{channels: chs, unseen: true} }
	cases := []struct {
		name  string
		setup []step // before the subscription
		steps []step
	}{
		{"one lost between two", nil,
			[]step{seen("room"), unseen("room"), seen("room")}},
		{"several lost in a row", nil,
			[]step{seen("room"), unseen("room"), unseen("room"), unseen("room"), seen("room")}},
		{"the first event of a fresh channel lost", []step{seen("elsewhere")},
			[]step{unseen("room"), seen("room")}},
		{"the first event after subscribing lost", []step{seen("room"), seen("room")},
			[]step{unseen("room"), seen("room")}},
		{"a multi-room event lost", nil,
			[]step{seen("room"), unseen("side", "room"), seen("room")}},
		{"losses between events of other channels", []step{seen("room")},
			[]step{unseen("room"), seen("elsewhere"), unseen("room"), seen("side", "elsewhere"), seen("room")}},
		{"a lost event caught up by a multi-room one", nil,
			[]step{seen("room"), unseen("room"), seen("elsewhere", "room")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			prefix := redistest.Prefix(t)
			pub := sharedBackbone(t, Options{Prefix: prefix})
			sub := sharedBackbone(t, Options{Prefix: prefix})
			run := func(s step) rooms.Published {
				if s.unseen {
					return publishUnseen(t, pub, message(s.channels...))
				}
				return publish(t, pub, message(s.channels...))
			}
			for _, s := range c.setup {
				run(s)
			}
			var rec recorder
			subscribe(t, sub, "room", &rec)
			var want []string
			for _, s := range c.steps {
				if p := run(s); slices.Contains(s.channels, "room") {
					want = append(want, p.ID)
				}
			}
			rec.waitIDs(t, want)
		})
	}
}

// TestCatchUpAfterPubSubReconnect kills the subscriber's pub/sub connection
// again and again while events are published: go-redis reconnects and
// resubscribes, and the backbone catches up from history, so the
// subscriber receives every event exactly once, in order.
func TestCatchUpAfterPubSubReconnect(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	admin := srv.Client()
	sub := openBackbone(t, srv.URL(), Options{})
	pub := openBackbone(t, srv.URL(), Options{})
	ctx := context.Background()
	var rec recorder
	subscribe(t, sub, "room", &rec)

	var count atomic.Int64
	var published []string // owned by the publishing goroutine until done
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			p, err := pub.Publish(ctx, message("room"), "")
			if err != nil {
				done <- err
				return
			}
			published = append(published, p.ID)
			count.Add(1)
		}
	}()
	live := sub.liveKey("room")
	for range 5 {
		from := count.Load()
		roomstest.Eventually(t, "more events to be published", func() bool { return count.Load() >= from+20 })
		if n, err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n < 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v", n, err)
		}
		roomstest.Eventually(t, "the subscriber to resubscribe", func() bool {
			n, err := admin.PubSubNumSub(ctx, live).Result()
			return err == nil && n[live] == 1
		})
	}
	from := count.Load()
	roomstest.Eventually(t, "events after the last resubscription", func() bool { return count.Load() >= from+20 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("publish: %v", err)
	}
	rec.waitIDs(t, published)
}

// TestRedisRestart stops Redis while events are published and starts it
// again, empty: publishes fail as the backbone being down while it is gone,
// then succeed in a new epoch, and subscribers receive the new events
// without subscribing again.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{})
	// fast gives up quickly, so the outage can be probed many times.
	fast := openBackbone(t, srv.URL(), Options{OpTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	var rec recorder
	subscribe(t, b, "room", &rec)
	var want []string
	for range 3 {
		want = append(want, publish(t, fast, message("room")).ID)
	}
	rec.waitIDs(t, want)
	oldEpoch, err := b.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	failed := 0
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; failed++ {
		p, err := fast.Publish(ctx, message("room"), "")
		if err == nil {
			t.Fatalf("publish accepted %s while redis is down", p.ID)
		}
		if !errors.Is(err, rooms.ErrBackboneDown) {
			t.Fatalf("publish while redis is down: %v, want ErrBackboneDown", err)
		}
	}
	downCalls := map[string]func() error{
		"Subscribe":    func() error { _, err := fast.Subscribe(ctx, "room-2", &recorder{}); return err },
		"Since":        func() error { _, err := fast.Since(ctx, "room", 0, 0); return err },
		"Before":       func() error { _, err := fast.Before(ctx, "room", 0, 0); return err },
		"Head":         func() error { _, err := fast.Head(ctx, "room"); return err },
		"Epoch":        func() error { _, err := fast.Epoch(ctx); return err },
		"SharedSecret": func() error { _, err := fast.SharedSecret(ctx, "cursor"); return err },
		"SaveSession":  func() error { return fast.SaveSession(ctx, "s", []string{"room"}, time.Minute) },
		"Lookup": func() error {
			_, _, err := fast.LookupConnection(ctx, "c")
			return err
		},
	}
	for name, call := range downCalls {
		if err := call(); !errors.Is(err, rooms.ErrBackboneDown) {
			t.Errorf("%s while redis is down: %v, want ErrBackboneDown", name, err)
		}
	}
	srv.Start()

	var after []string
	roomstest.Eventually(t, "a publish to succeed after the restart", func() bool {
		p, err := fast.Publish(ctx, message("room"), "")
		if err == nil {
			after = append(after, p.ID)
		}
		return err == nil
	})
	for range 3 {
		after = append(after, publish(t, b, message("room")).ID)
	}
	newEpoch, err := b.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newEpoch == oldEpoch {
		t.Fatalf("epoch %s survived a restart that lost the history", newEpoch)
	}
	for _, id := range after {
		if !strings.HasPrefix(id, newEpoch+"-") {
			t.Fatalf("event %s after the restart, want epoch %s", id, newEpoch)
		}
	}
	rec.waitIDs(t, append(want, after...))
	t.Logf("%d publishes failed during the outage", failed)

	// New subscriptions work on the restarted server too.
	var rec2 recorder
	subscribe(t, b, "room-2", &rec2)
	rec2.waitIDs(t, []string{publish(t, b, message("room-2")).ID})
}

// TestSubscriberOutlivesChannelBookkeeping keeps a subscription open while
// its channel's bookkeeping expires, as it does after MetaTTL (a day by
// default) without events: the channel's next events must still arrive.
func TestSubscriberOutlivesChannelBookkeeping(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{MetaTTL: 200 * time.Millisecond})
	ctx := context.Background()
	var rec recorder
	subscribe(t, b, "room", &rec)
	var want []string
	for range 3 {
		want = append(want, publish(t, b, message("room")).ID)
	}
	rec.waitIDs(t, want)
	roomstest.Eventually(t, "the channel's bookkeeping to expire", func() bool {
		n, err := b.rdb.Exists(ctx, b.metaKey("room")).Result()
		return err == nil && n == 0
	})
	for range 2 {
		want = append(want, publish(t, b, message("room")).ID)
	}
	rec.waitIDs(t, want)
}

// TestCatchUpRetriesUntilHistoryAnswers makes the history read of a
// catch-up fail (the subscriber's Redis user loses XRANGE) when a gap is
// seen: the subscriber must hold the event that revealed the gap and
// deliver the missing one first once history answers again, not skip it.
func TestCatchUpRetriesUntilHistoryAnswers(t *testing.T) {
	t.Parallel()
	srv := redistest.NewServer(t)
	admin := srv.Client()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "sub", "on", ">secret", "~*", "&*", "+@all", "-xrange").Err(); err != nil {
		t.Fatal(err)
	}
	sub := openBackbone(t, "redis://sub:secret@"+srv.Addr(), Options{})
	pub := openBackbone(t, srv.URL(), Options{})
	var rec recorder
	subscribe(t, sub, "room", &rec)
	want := []string{publish(t, pub, message("room")).ID}
	rec.waitIDs(t, want)
	want = append(want, publishUnseen(t, pub, message("room")).ID, publish(t, pub, message("room")).ID)
	roomstest.Eventually(t, "the catch-up to be refused", func() bool {
		stats, err := admin.Info(ctx, "errorstats").Result()
		return err == nil && strings.Contains(stats, "errorstat_NOPERM:")
	})
	if err := admin.Do(ctx, "ACL", "SETUSER", "sub", "+xrange").Err(); err != nil {
		t.Fatal(err)
	}
	rec.waitIDs(t, want)
}
