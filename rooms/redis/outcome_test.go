package redis

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// go-redis resends a command whose connection ended before its reply
// (io.EOF): a publish script that ran, and whose reply was lost, runs
// again. Its token makes the second run answer as the first did: one event
// in history, and the caller told it was published, not a duplicate.
func TestLostPublishReplyStoresOnce(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	b := openBackbone(t, proxy.URL(), Options{})
	ctx := context.Background()
	// The script is loaded by a first publish: the lost reply must be
	// the script's, not a NOSCRIPT error's.
	if _, err := b.Publish(ctx, message("warm-up"), ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		channels []string
		volatile bool
	}{
		{"one room", []string{"lost"}, false},
		{"several rooms", []string{"lost-a", "lost-b", "lost-c"}, false},
		{"volatile", []string{"lost-v"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			for _, ch := range tc.channels {
				if _, err := b.Subscribe(ctx, ch, r); err != nil {
					t.Fatal(err)
				}
			}
			proxy.LoseReplyTo(func(req []byte) bool { return bytes.Contains(req, []byte(publishScript.Hash())) })
			lostBefore := proxy.Lost()
			m := message(tc.channels...)
			m.Volatile = tc.volatile
			p, err := b.Publish(ctx, m, "")
			if err != nil {
				t.Fatalf("publish whose first reply was lost: %v", err)
			}
			if proxy.Lost() != lostBefore+1 {
				t.Fatal("the proxy lost no reply: the test did not test")
			}
			if p.Duplicate {
				t.Errorf("go-redis's own retry was answered as a duplicate: %+v", p)
			}
			marker, err := b.Publish(ctx, message(tc.channels...), "")
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range tc.channels {
				if !tc.volatile {
					h, err := b.Since(ctx, ch, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					if len(h.Events) != 2 || h.Events[0].Seq != p.Seq || h.Events[1].Seq != marker.Seq {
						t.Errorf("history of %s holds %v; want [%d %d]", ch, eventSeqs(h.Events), p.Seq, marker.Seq)
					}
				}
				var got []received
				roomstest.Eventually(t, "the marker on "+ch, func() bool {
					got = got[:0]
					for _, g := range r.all() {
						if g.channel == ch {
							got = append(got, g)
						}
					}
					return slices.ContainsFunc(got, func(g received) bool { return g.ev.Seq == marker.Seq && g.ev.Event == marker.Event })
				})
				if len(got) != 2 {
					t.Errorf("%s received %d events live; want the published one once and the marker", ch, len(got))
				}
			}
		})
	}
}

// The same class: a single-use claim (tickets) whose SET NX reply was lost
// is retried by go-redis, finds the key it set itself and must still count
// as the first claim.
func TestLostClaimReplyStillClaims(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	b := openBackbone(t, proxy.URL(), Options{})
	ctx := context.Background()
	// Loads the script, so that the lost reply is the claim's own.
	if ok, err := b.ClaimOnce(ctx, "ticket-0", time.Minute); err != nil || !ok {
		t.Fatalf("first claim of ticket-0: %v, %v", ok, err)
	}
	proxy.LoseReplyTo(func(req []byte) bool { return bytes.Contains(req, []byte("once:ticket-1")) })
	ok, err := b.ClaimOnce(ctx, "ticket-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if proxy.Lost() != 1 {
		t.Fatal("the proxy lost no reply: the test did not test")
	}
	if !ok {
		t.Error("the first claim of a key was refused because go-redis resent it after a lost reply")
	}
	if ok, err := b.ClaimOnce(ctx, "ticket-1", time.Minute); err != nil || ok {
		t.Errorf("a second claim answered %v, %v; want false", ok, err)
	}
}

// With Redis stalled past the call timeout the outcome is unknown: the
// error names the token, and a resend with it stores the event once.
func TestStalledPublishOutcomeUnknown(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{OpTimeout: time.Second})
	ctx := context.Background()
	if _, err := b.Publish(ctx, message("stall"), ""); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	paused := true
	defer func() {
		if paused {
			srv.Resume()
		}
	}()
	m := message("stall")
	_, err := b.Publish(ctx, m, "")
	var unknown *rooms.OutcomeUnknownError
	if !errors.As(err, &unknown) || !errors.Is(err, rooms.ErrOutcomeUnknown) || !errors.Is(err, rooms.ErrBackboneDown) {
		t.Fatalf("publish to a stalled Redis answered %v; want an *OutcomeUnknownError", err)
	}
	srv.Resume()
	paused = false
	// The script was sent before the stall ended: Redis runs it now.
	var stored []*rooms.Event
	roomstest.Eventually(t, "the stalled publish is stored", func() bool {
		h, err := b.Since(ctx, "stall", 0, 0)
		stored = h.Events
		return err == nil && len(h.Events) == 2
	})
	m.Token = unknown.Token
	p, err := b.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Duplicate || p.Seq != stored[1].Seq || p.ID != stored[1].ID() {
		t.Fatalf("resend answered %+v; want the stored event %s as a duplicate", p, stored[1].ID())
	}
	h, err := b.Since(ctx, "stall", 0, 0)
	if err != nil || len(h.Events) != 2 {
		t.Fatalf("history holds %d events after the resend (%v); want 2", len(h.Events), err)
	}
}

func eventSeqs(evs []*rooms.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

// A resend may reach another instance: the token's record is found from
// the token alone.
func TestPublishTokenAcrossInstances(t *testing.T) {
	prefix := redistest.Prefix(t)
	a := sharedBackbone(t, Options{Prefix: prefix})
	b := sharedBackbone(t, Options{Prefix: prefix})
	ctx := context.Background()
	m := message("x-a", "x-b")
	m.Token = rooms.NewPublishToken(time.Now())
	first, err := a.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Publish(ctx, m, "")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.ID != first.ID {
		t.Fatalf("resend on another instance answered %+v; want %s as a duplicate", again, first.ID)
	}
	for _, ch := range m.Channels {
		if got := historySeqs(t, b, ch, 0); len(got) != 1 {
			t.Errorf("history of %s holds %v; want one event", ch, got)
		}
	}
}
