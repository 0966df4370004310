package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// spender counts the allowances spent, and refuses past budget spendings.
type spender struct {
	mu     sync.Mutex
	budget int
	spent  [][]rooms.RateLimit
	caller []string
}

var errSpent = errors.New("rate limited")

func (s *spender) SpendAll(_ context.Context, caller string, charges []rooms.RateLimit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spent) >= s.budget {
		return errSpent
	}
	s.spent = append(s.spent, charges)
	s.caller = append(s.caller, caller)
	return nil
}

func newPublisher(t *testing.T, ns *rooms.Namespaces, sp *spender) (*env, *rooms.Publisher) {
	t.Helper()
	e := newEnv(t, rooms.HubOptions{}, memory.Options{})
	p := rooms.NewPublisher(e.hub, rooms.PublisherOptions{
		Policy:  rooms.PublishPolicy{Namespaces: ns, Limits: rooms.PublishLimits{MaxPayload: 100, Rate: 1, Burst: 1, CallerRate: 1, CallerBurst: 1}},
		Spender: sp, MaxKeysPerCaller: 2, MaxKeys: 10,
	})
	return e, p
}

func publishReq(user string, channels ...string) rooms.PublishRequest {
	return rooms.PublishRequest{Identity: rooms.Identity{User: user}, Caller: "user:" + user, Channels: channels,
		Event: "message", Data: json.RawMessage(`"hi"`), Size: 4}
}

func TestPublisherAppliesPolicyThenSpends(t *testing.T) {
	ns := &rooms.Namespaces{Named: map[string]rooms.NamespaceOptions{"news": {Publish: rooms.PublishServer, HistorySize: 7}}}
	sp := &spender{budget: 1}
	e, p := newPublisher(t, ns, sp)
	ctx := context.Background()

	if _, err := p.Publish(ctx, publishReq("alice", "news:today")); !errors.Is(err, rooms.ErrForbidden) {
		t.Fatalf("user publishing where only the server may: %v, want ErrForbidden", err)
	}
	big := publishReq("alice", "lobby")
	big.Size = 101
	if _, err := p.Publish(ctx, big); !errors.Is(err, rooms.ErrPayloadTooLarge) {
		t.Fatalf("body over the limit: %v, want ErrPayloadTooLarge", err)
	}
	if len(sp.spent) != 0 {
		t.Fatalf("refused publishes spent allowances: %v", sp.spent)
	}
	res, err := p.Publish(ctx, publishReq("alice", "lobby"))
	if err != nil || res.ID == "" {
		t.Fatalf("allowed publish: %+v, %v", res, err)
	}
	if len(sp.spent) != 1 || sp.caller[0] != "user:alice" || len(sp.spent[0]) != 2 {
		t.Fatalf("spent %v for %v; want the namespace's and the caller's total for user:alice", sp.spent, sp.caller)
	}
	if _, err := p.Publish(ctx, publishReq("alice", "lobby")); !errors.Is(err, errSpent) {
		t.Fatalf("publish past the allowance: %v, want the spender's refusal", err)
	}
	h, err := e.bb.Since(ctx, "lobby", 0, 0)
	if err != nil || len(h.Events) != 1 {
		t.Fatalf("history holds %d events (%v); want 1", len(h.Events), err)
	}

	// The server is not rate limited, may exclude and speak for a user,
	// and the namespace's retention applies.
	srv := rooms.PublishRequest{Identity: rooms.Identity{Server: true}, Channels: []string{"news:today"}, Event: "m",
		Data: json.RawMessage(`1`), From: &rooms.Sender{User: "bob"}, Exclude: []string{"c1"}}
	if _, err := p.Publish(ctx, srv); err != nil {
		t.Fatal(err)
	}
	h, _ = e.bb.Since(ctx, "news:today", 0, 0)
	if len(h.Events) != 1 || string(h.Events[0].Envelope(0)) == "" {
		t.Fatalf("server's publish not stored: %v", h.Events)
	}
	var env struct {
		From struct{ User string } `json:"from"`
	}
	if err := json.Unmarshal(h.Events[0].Envelope(0), &env); err != nil || env.From.User != "bob" {
		t.Fatalf("envelope %s: from %q, want bob (%v)", h.Events[0].Envelope(0), env.From.User, err)
	}
	notServer := publishReq("alice", "lobby")
	notServer.Exclude = []string{"c1"}
	if _, err := p.Publish(ctx, notServer); !errors.Is(err, rooms.ErrForbidden) {
		t.Fatalf("a user's exclude: %v, want ErrForbidden", err)
	}
	noClient := publishReq("alice", "lobby")
	noClient.ExcludeSelf = true
	if _, err := p.Publish(ctx, noClient); !errors.Is(err, rooms.ErrNoSenderConnection) {
		t.Fatalf("exclude_self without a connection: %v, want ErrNoSenderConnection", err)
	}
}

func TestPublisherIdempotencyKeys(t *testing.T) {
	sp := &spender{budget: 100}
	_, p := newPublisher(t, nil, sp)
	ctx := context.Background()
	req := publishReq("alice", "lobby")
	req.IdempotencyKey = "k1"
	first, err := p.Publish(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.Publish(ctx, req)
	if err != nil || !again.Duplicate || again.ID != first.ID {
		t.Fatalf("resend with the key: %+v, %v; want a duplicate of %s", again, err, first.ID)
	}
	// Another user's same key is its own.
	other := publishReq("bob", "lobby")
	other.IdempotencyKey = "k1"
	if res, err := p.Publish(ctx, other); err != nil || res.Duplicate {
		t.Fatalf("another user's key: %+v, %v; want a fresh publish", res, err)
	}
	// The per-caller bound (2) counts distinct keys.
	req.IdempotencyKey = "k2"
	if _, err := p.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.IdempotencyKey = "k3"
	if _, err := p.Publish(ctx, req); !errors.Is(err, rooms.ErrLimitExceeded) {
		t.Fatalf("a third key: %v, want ErrLimitExceeded", err)
	}
	if p.IdempotencyKeys() != 3 {
		t.Fatalf("%d keys counted, want 3", p.IdempotencyKeys())
	}
	req.IdempotencyKey = "rt_not-a-token"
	if _, err := p.Publish(ctx, req); !errors.Is(err, rooms.ErrInvalidIdempotency) {
		t.Fatalf("a malformed token: %v, want ErrInvalidIdempotency", err)
	}
}

func TestPublishBatchAnswersEachInOrder(t *testing.T) {
	ns := &rooms.Namespaces{Named: map[string]rooms.NamespaceOptions{"news": {Publish: rooms.PublishServer}}}
	sp := &spender{budget: 3}
	e, p := newPublisher(t, ns, sp)
	ctx := context.Background()
	reqs := []rooms.PublishRequest{
		publishReq("alice", "lobby"),
		publishReq("alice", "news:today"), // forbidden
		publishReq("alice", "lobby"),
		publishReq("alice", "lobby"),
		publishReq("alice", "lobby"), // past the budget of 3
	}
	for i := range reqs {
		reqs[i].Data = json.RawMessage([]byte{'0' + byte(i)})
	}
	out := p.PublishBatch(ctx, reqs)
	if len(out) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(out), len(reqs))
	}
	for i, want := range []error{nil, rooms.ErrForbidden, nil, nil, errSpent} {
		if want == nil && (out[i].Err != nil || out[i].ID == "") || want != nil && !errors.Is(out[i].Err, want) {
			t.Errorf("result %d: %+v, want %v", i, out[i], want)
		}
	}
	h, err := e.bb.Since(ctx, "lobby", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range h.Events {
		var v struct{ Data json.RawMessage }
		_ = json.Unmarshal(ev.Envelope(0), &v)
		got = append(got, string(v.Data))
	}
	if len(got) != 3 || got[0] != "0" || got[1] != "2" || got[2] != "3" {
		t.Fatalf("lobby holds %v; want [0 2 3] in batch order", got)
	}
}
