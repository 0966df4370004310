package clustertest

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// presenceList is the body of GET /v1/rooms/{room}/presence.
type presenceList struct {
	Users   int           `json:"users"`
	Members []presentUser `json:"members"`
}

type presentUser struct {
	User string `json:"user"`
}

func (p presenceList) has(user string) bool {
	return slices.ContainsFunc(p.Members, func(m presentUser) bool { return m.User == user })
}

// announced returns the user of a roomcast:join or roomcast:leave, whose
// envelope's data is {"user","name"}.
func announced(t testing.TB, f frame) presentUser {
	t.Helper()
	var u presentUser
	if err := json.Unmarshal(f.env(t).Data, &u); err != nil {
		t.Fatalf("%s data %s: %v", f.Event, f.Data, err)
	}
	return u
}

// Presence after an instance dies: its members expire within the presence
// TTL, and after the grace period roomcast:leave is announced once, to
// watchers on other instances, as the user leaves the list.
func TestPresenceAfterInstanceDies(t *testing.T) {
	t.Parallel()
	const ttl, grace = 3 * time.Second, 500 * time.Millisecond
	c := newCluster(t, 3, "-presence-ttl", ttl.String(), "-presence-grace", grace.String())
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]

	list := func() (presenceList, answer) {
		ans := do(t, http.MethodGet, b.url+"/v1/rooms/hall/presence", server(), "")
		var p presenceList
		if ans.status == http.StatusOK {
			if err := json.Unmarshal(ans.body, &p); err != nil {
				t.Fatalf("presence answer %s: %v", ans.body, err)
			}
		}
		return p, ans
	}
	if _, ans := list(); ans.status == http.StatusNotFound && ans.errorCode() == "presence_off" {
		t.Fatalf("presence is off with the Redis backbone: %s", ans.body)
	}

	watcher := open(t, cc, roomPath("hall"), bearer(userToken(t, "dave", nil)))
	open(t, a, roomPath("hall"), bearer(userToken(t, "carol", map[string]any{"name": "Carol"})))
	join := watcher.expect(t, "roomcast:join")
	if d := announced(t, join); d.User != "carol" || join.HasID {
		t.Errorf("join %s (id line %v), want carol's, volatile", join.Data, join.HasID)
	}
	if p, ans := list(); !p.has("carol") || !p.has("dave") {
		t.Fatalf("presence on B: %d %s, want carol and dave", ans.status, ans.body)
	}

	a.kill()
	killed := time.Now()
	relaytest.Eventually(t, "carol is dropped from the presence list", func() bool {
		p, ans := list()
		return ans.status == http.StatusOK && !p.has("carol")
	})
	dropped := time.Since(killed)
	// She is listed until her leave is announced: her member expires
	// within the TTL, then the grace period runs.
	if dropped > ttl+grace+3*time.Second {
		t.Errorf("carol was listed %s after her instance died, beyond the %s presence TTL + %s grace + two sweeps + 1s", dropped, ttl, grace)
	}
	if p, ans := list(); !p.has("dave") || p.Users != 1 {
		t.Errorf("presence after the kill: %s, want dave alone", ans.body)
	}
	leave := watcher.expect(t, "roomcast:leave")
	if d := announced(t, leave); d.User != "carol" {
		t.Errorf("leave %s, want carol's", leave.Data)
	}
	t.Logf("carol left the list %s and was announced gone %s after SIGKILL", dropped.Round(time.Millisecond),
		leave.At.Sub(killed).Round(time.Millisecond))
	// The member expires within the TTL, a sweep (every second) sees it,
	// the grace period runs, and another sweep announces the leave.
	if d := leave.At.Sub(killed); d > ttl+grace+3*time.Second {
		t.Errorf("roomcast:leave came %s after the kill, beyond TTL + grace + two sweeps + 1s", d)
	}

	// Once: over two more heartbeats every instance has swept again, and
	// the next frame is the next event, not another leave.
	watcher.waitPings(t, watcher.pingCount()+2)
	mark := publish(t, b, roomPath("hall"), "marker")
	watcher.expectEvent(t, mark)
}
