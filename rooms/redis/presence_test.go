package redis

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// scriptLog is a go-redis hook that records the scripts a client runs and
// the plain PUBLISH commands it sends.
type scriptLog struct {
	mu      sync.Mutex
	scripts []string // SHA1 of each EVALSHA, the source's of each EVAL
	publish int
}

func (l *scriptLog) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (l *scriptLog) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		l.note(cmd)
		return next(ctx, cmd)
	}
}

func (l *scriptLog) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, cmd := range cmds {
			l.note(cmd)
		}
		return next(ctx, cmds)
	}
}

func (l *scriptLog) note(cmd goredis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	args := cmd.Args()
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		l.scripts = append(l.scripts, args[1].(string))
	case "eval":
		l.scripts = append(l.scripts, goredis.NewScript(args[1].(string)).Hash())
	case "publish", "spublish":
		l.publish++
	}
}

func (l *scriptLog) snapshot() ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.scripts), l.publish
}

// TestPresenceEventsInTheScript: the join and the leave are published by
// the very script that lists or unlists the user, never by a call of its
// own after it (which a crash could skip): while a user joins and leaves,
// the backbone runs only the presence scripts, and the room hears both.
func TestPresenceEventsInTheScript(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{PresenceGrace: 100 * time.Millisecond, SweepEvery: 50 * time.Millisecond})
	const room = "scripted"
	rec := &recorder{}
	subscribe(t, b, room, rec)
	log := &scriptLog{}
	b.rdb.AddHook(log)
	heard := func(event string) bool {
		for _, r := range rec.all() {
			if r.ev.Event == event {
				return true
			}
		}
		return false
	}
	ctx := context.Background()

	if err := b.Enter(ctx, room, rooms.Member{Conn: "c1", Client: "client-1", User: "bob", Name: "Bob"}, true); err != nil {
		t.Fatal(err)
	}
	scripts, _ := log.snapshot()
	if !slices.Contains(scripts, enterScript.Hash()) || slices.Contains(scripts, publishScript.Hash()) {
		t.Errorf("Enter ran scripts %v; want the enter script, and not the publish script %s", scripts, publishScript.Hash())
	}
	roomstest.Eventually(t, "the join is heard", func() bool { return heard(rooms.EventJoin) })
	list, err := b.List(ctx, room)
	if err != nil || list.Users != 1 || list.Members[0].User != "bob" {
		t.Fatalf("List = %+v, %v; want bob", list, err)
	}

	if err := b.Leave(ctx, room, "c1"); err != nil {
		t.Fatal(err)
	}
	// Within the grace period bob is still listed, with no connection.
	if list, err := b.List(ctx, room); err != nil || list.Users != 1 || list.Members[0].Connections != 0 {
		t.Errorf("List in the grace period = %+v, %v; want bob with no connection", list, err)
	}
	roomstest.Eventually(t, "the leave is heard", func() bool { return heard(rooms.EventLeave) })
	if list, err := b.List(ctx, room); err != nil || list.Users != 0 {
		t.Errorf("List after the leave = %+v, %v; want nobody", list, err)
	}
	scripts, publishes := log.snapshot()
	if slices.Contains(scripts, publishScript.Hash()) {
		t.Errorf("the publish script ran besides the presence scripts: %v", scripts)
	}
	if publishes != 0 {
		t.Errorf("%d PUBLISH commands sent outside the scripts", publishes)
	}
}

// TestPresenceConnectionChangesUser: a connection entered again for another
// user moves its count to that user; the first one's leave follows.
func TestPresenceConnectionChangesUser(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{PresenceGrace: 100 * time.Millisecond, SweepEvery: 50 * time.Millisecond})
	const room = "changed"
	rec := &recorder{}
	subscribe(t, b, room, rec)
	ctx := context.Background()
	for _, user := range []string{"bob", "mallory"} {
		if err := b.Enter(ctx, room, rooms.Member{Conn: "poll:shared-id", User: user, Name: user}, true); err != nil {
			t.Fatal(err)
		}
	}
	roomstest.Eventually(t, "bob's leave is heard and mallory alone is listed", func() bool {
		list, err := b.List(ctx, room)
		left := slices.ContainsFunc(rec.all(), func(r received) bool {
			return r.ev.Event == rooms.EventLeave && strings.Contains(string(r.ev.Envelope(0)), `"user":"bob"`)
		})
		return err == nil && left && list.Users == 1 && list.Members[0].User == "mallory" && list.Members[0].Connections == 1
	})
}

// TestClientBindingsBounded: past MaxClientBindings, new client ids are
// refused until bindings expire; renewals still pass.
func TestClientBindingsBounded(t *testing.T) {
	t.Parallel()
	b := sharedBackbone(t, Options{MaxClientBindings: 2})
	ctx := context.Background()
	for _, c := range []string{"client-a", "client-b"} {
		if _, _, err := b.BindClient(ctx, c, "a:"+c, c, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.BindClient(ctx, "client-c", "a:c", "c", time.Minute); !errors.Is(err, rooms.ErrClientsFull) {
		t.Fatalf("a third binding: %v, want ErrClientsFull", err)
	}
	if _, _, err := b.BindClient(ctx, "client-a", "a:client-a", "client-a", 300*time.Millisecond); err != nil {
		t.Fatalf("a renewal at the bound: %v", err)
	}
	if n, err := b.ClientBindings(ctx); err != nil || n != 2 {
		t.Fatalf("ClientBindings = %d, %v; want 2", n, err)
	}
	roomstest.Eventually(t, "the bindings expire and a new one fits", func() bool {
		_, _, err := b.BindClient(ctx, "client-c", "a:c", "c", time.Minute)
		return err == nil
	})
	// client-a was renewed after client-b was bound, so on a slow run
	// client-c may have fitted in b's place while a still held its own:
	// the count reaches 1 once a has expired too.
	roomstest.Eventually(t, "only client-c is bound", func() bool {
		n, err := b.ClientBindings(ctx)
		return err == nil && n == 1
	})
}
