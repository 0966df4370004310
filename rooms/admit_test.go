package rooms_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// TestAdmissionSharedByStreamsAndPolls checks that streams and polls are
// refused by the same rules, and that a refused request leaves no client-id
// binding behind.
func TestAdmissionSharedByStreamsAndPolls(t *testing.T) {
	ns := &rooms.Namespaces{
		Default: rooms.NamespaceOptions{Anonymous: true},
		Named:   map[string]rooms.NamespaceOptions{"members": {}},
		Strict:  true,
	}
	e := newEnv(t, rooms.HubOptions{MaxRooms: 2, Namespaces: ns, MaxClientIDsPerCaller: 1}, memory.Options{})
	ctx := context.Background()
	if err := e.hub.Ban(ctx, "banned", time.Hour); err != nil {
		t.Fatal(err)
	}
	// One caller holds its one binding.
	e.connect(rooms.ConnectRequest{Channels: []string{"a"}, Caller: "full"})
	held := e.hub.ClientIDsHeld()

	cases := []struct {
		name     string
		channels []string
		id       rooms.Identity
		caller   string
		want     error
	}{
		{"no room", nil, anon, "", rooms.ErrInvalidRoom},
		{"too many rooms", []string{"a", "b", "c"}, anon, "", rooms.ErrTooManyRooms},
		{"token needed", []string{"members:x"}, anon, "", rooms.ErrUnauthenticated},
		{"unknown namespace", []string{"other:x"}, anon, "", rooms.ErrUnknownNamespace},
		{"token's patterns", []string{"a"}, rooms.Identity{User: "u", Subscribe: []string{"b"}}, "", rooms.ErrForbidden},
		{"user channel", []string{"a", rooms.UserChannel("v")}, rooms.Identity{User: "u"}, "", rooms.ErrForbidden},
		{"banned", []string{"a"}, rooms.Identity{User: "banned"}, "", rooms.ErrBanned},
		{"client ids", []string{"a"}, anon, "full", rooms.ErrLimitExceeded},
	}
	for _, c := range cases {
		_, err := e.hub.Connect(ctx, rooms.ConnectRequest{Channels: c.channels, Identity: c.id, Caller: c.caller})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Connect = %v; want %v", c.name, err, c.want)
		}
		_, err = e.hub.Poll(ctx, rooms.PollRequest{Channels: c.channels, Identity: c.id, Caller: c.caller})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Poll = %v; want %v", c.name, err, c.want)
		}
	}
	if got := e.hub.ClientIDsHeld(); got != held {
		t.Errorf("refused streams and polls left bindings: %d held, want %d", got, held)
	}
}
