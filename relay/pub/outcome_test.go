package pub

import (
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// startRedisRelay runs a relay over a Redis backbone at url whose calls
// time out after opTimeout.
func startRedisRelay(t *testing.T, url string, opTimeout time.Duration) *relaytest.Relay {
	t.Helper()
	return relaytest.Start(t, relaytest.Options{
		Backbone: relaytest.RedisBackbone(t, url, redis.Options{OpTimeout: opTimeout}),
		Relay:    relay.Options{Auth: relaytest.NewAuth(t, auth.Config{})},
	})
}

// A publish answered 503 outcome_unknown may have been stored: pub said
// only the relay's message, which asks to resend with "this answer's
// Idempotency-Key", without showing that key, so the only way to retry
// was a plain re-run that may store the event twice. It now prints the
// key and the command to resend with, and that resend is stored once.
func TestOutcomeUnknownShowsTheKey(t *testing.T) {
	srv := redistest.NewServer(t)
	r := startRedisRelay(t, srv.URL(), time.Second)
	env := map[string]string{"ROOMCAST_URL": r.URL, "ROOMCAST_API_KEY": relaytest.APIKey}
	// Warm connections up: a new one's handshake would stall before the
	// publish is even sent.
	var warm sync.WaitGroup
	for range 4 {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if code, _, stderr := pub(t, env, "", "warm-up", "0"); code != 0 {
				t.Errorf("warm-up: exit %d: %s", code, stderr)
			}
		}()
	}
	warm.Wait()

	srv.Pause()
	code, stdout, stderr := pub(t, env, "", "-event", "order", "orders", "paid")
	srv.Resume()
	if code != 1 || stdout != "" || !strings.Contains(stderr, "outcome_unknown") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and outcome_unknown", code, stdout, stderr)
	}
	m := regexp.MustCompile(`-idempotency-key (rt_[A-Za-z0-9_-]+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("stderr %q does not say which -idempotency-key to resend with", stderr)
	}
	if !strings.Contains(stderr, "retry after") {
		t.Errorf("stderr %q does not pass on Retry-After", stderr)
	}
	code, stdout, stderr = pub(t, env, "", "-idempotency-key", m[1], "-event", "order", "orders", "paid")
	if code != 0 {
		t.Fatalf("resend: exit %d: %s", code, stderr)
	}
	a := decode(t, stdout)
	if a.ID == nil {
		t.Fatalf("resend answered %s", stdout)
	}
	// Whether the stalled publish was stored or not, the room holds it once.
	var history struct{ Events []struct{ ID string } }
	resp := r.Do(t, relaytest.Request{Path: "/v1/rooms/orders/history", Header: relaytest.Bearer(relaytest.APIKey)})
	resp.JSON(t, &history)
	if len(history.Events) != 1 || history.Events[0].ID != *a.ID {
		t.Errorf("history %+v; want the one event %s", history.Events, *a.ID)
	}
}
