package memory_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// announcements records the presence events a room hears.
type announcements struct {
	mu  sync.Mutex
	got []string // "roomcast:join bob"
}

func (a *announcements) Receive(ev *rooms.Event, i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	env := string(ev.Envelope(i))
	for _, u := range []string{"bob", "mallory"} {
		if strings.Contains(env, `"data":{"user":"`+u+`"`) {
			a.got = append(a.got, ev.Event+" "+u)
		}
	}
}

func (a *announcements) heard(what string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, g := range a.got {
		if g == what {
			return true
		}
	}
	return false
}

// TestPresenceConnectionChangesUser: a connection entered again for another
// user moves its count to that user, and the first one leaves; the list
// never names a user it cannot (it used to panic).
func TestPresenceConnectionChangesUser(t *testing.T) {
	b := memory.New(memory.Options{PresenceGrace: 50 * time.Millisecond})
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	rec := &announcements{}
	if _, err := b.Subscribe(ctx, "room", rec); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"bob", "mallory"} {
		if err := b.Enter(ctx, "room", rooms.Member{Conn: "poll:shared-id", User: user, Name: user}, true); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := b.List(ctx, "room")
		if err != nil {
			t.Fatal(err)
		}
		if rec.heard("roomcast:leave bob") && list.Users == 1 && list.Members[0].User == "mallory" && list.Members[0].Connections == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list %+v, heard %v; want bob gone and mallory listed", list, rec.got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !rec.heard("roomcast:join mallory") {
		t.Errorf("heard %v, want mallory's join", rec.got)
	}
}

// TestClientBindingsBounded: past MaxClientBindings, new client ids are
// refused until bindings expire; renewals still pass.
func TestClientBindingsBounded(t *testing.T) {
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	b := memory.New(memory.Options{MaxClientBindings: 2, Now: clk.Now, SweepEvery: time.Hour})
	t.Cleanup(func() { _ = b.Close() })
	ctx := context.Background()
	for _, c := range []string{"client-a", "client-b"} {
		if _, _, err := b.BindClient(ctx, c, "a:"+c, c, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.BindClient(ctx, "client-c", "a:c", "c", time.Minute); !errors.Is(err, rooms.ErrClientsFull) {
		t.Fatalf("a third binding: %v, want ErrClientsFull", err)
	}
	if _, _, err := b.BindClient(ctx, "client-a", "a:client-a", "client-a", time.Minute); err != nil {
		t.Fatalf("a renewal at the bound: %v", err)
	}
	clk.Add(2 * time.Minute)
	if _, _, err := b.BindClient(ctx, "client-c", "a:c", "c", time.Minute); err != nil {
		t.Fatalf("a binding once the others expired: %v", err)
	}
	if n, _ := b.ClientBindings(ctx); n != 1 {
		t.Errorf("ClientBindings = %d, want 1", n)
	}
}
