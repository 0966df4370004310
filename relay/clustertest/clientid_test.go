package clustertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

// listing is GET /v1/rooms/{room}/presence with each user's connections.
type listing struct {
	Users   int `json:"users"`
	Members []struct {
		User        string `json:"user"`
		Connections int    `json:"connections"`
	} `json:"members"`
}

// summary renders the listed users and their connections, "bob:1 carol:0".
func (l listing) summary() string {
	var parts []string
	for _, m := range l.Members {
		parts = append(parts, m.User+":"+string(rune('0'+m.Connections)))
	}
	return strings.Join(parts, " ")
}

// presenceOn reads room's presence on n with the API key.
func presenceOn(t testing.TB, n *node, room string) listing {
	t.Helper()
	ans := do(t, http.MethodGet, n.url+"/v1/rooms/"+room+"/presence", server(), "")
	if ans.status != http.StatusOK {
		t.Fatalf("presence of %s on %s: %d %s", room, n.name, ans.status, ans.body)
	}
	var l listing
	if err := json.Unmarshal(ans.body, &l); err != nil {
		t.Fatalf("presence answer %s: %v", ans.body, err)
	}
	return l
}

// Client ids across instances: an id is its first user's on every
// instance. Another user polling, streaming or publishing with it (or
// with its owner's stream or proof) through another instance gets 409
// client_in_use and the presence list keeps the right user; once the
// instance holding a stream is killed, the stream's id proves nothing.
func TestClientIDsAcrossInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	bobH := bearer(userToken(t, "bob", map[string]any{"name": "Bob"}))
	malloryH := bearer(userToken(t, "mallory", map[string]any{"name": "Mallory"}))

	// (a) A poller's presence is keyed by its client id.
	const poller = "bob-poller-7"
	pollPath := "/v1/rooms/desk/poll?timeout=5&client=" + poller
	if ans := do(t, http.MethodGet, a.url+pollPath, bobH, ""); ans.status != http.StatusOK {
		t.Fatalf("bob's poll on A: %d %s", ans.status, ans.body)
	}
	if ans := do(t, http.MethodGet, b.url+pollPath, malloryH, ""); ans.status != http.StatusConflict || ans.errorCode() != "client_in_use" {
		t.Errorf("mallory's poll on B with bob's client id: %d %s, want 409 client_in_use", ans.status, ans.body)
	}
	if got := presenceOn(t, b, "desk").summary(); got != "bob:1" {
		t.Errorf("presence on B %q, want bob:1", got)
	}

	// (b) A stream's id and proof belong to its user.
	const phone = "bob-phone-7"
	bob := open(t, a, roomPath("desk")+"?client="+phone, bobH)
	hello := bob.conn
	if hello.Client != phone || !strings.HasPrefix(hello.Proof, phone+".") {
		t.Errorf("bob's stream: %+v, want client %s and its proof", hello, phone)
	}
	for name, sender := range map[string]string{"bob's stream": hello.Connection, "bob's proof": hello.Proof} {
		ans := do(t, http.MethodPost, b.url+roomPath("desk"), bearer(userToken(t, "mallory", nil), "Roomcast-Connection", sender),
			`{"data":"not for bob","exclude_self":true}`)
		if ans.status != http.StatusConflict || ans.errorCode() != "client_in_use" {
			t.Errorf("mallory publishing on B as %s: %d %s, want 409 client_in_use", name, ans.status, ans.body)
		}
	}
	if ans := do(t, http.MethodGet, b.url+"/v1/rooms/desk/poll?timeout=0&client="+phone, malloryH, ""); ans.status != http.StatusConflict {
		t.Errorf("mallory polling on B with bob's stream's client id: %d %s, want 409", ans.status, ans.body)
	}
	if s, status, body := tryOpen(b, roomPath("desk")+"?client="+phone, malloryH); status != http.StatusConflict {
		if s != nil {
			s.close()
		}
		t.Errorf("mallory streaming on B with bob's client id: %d %s, want 409", status, body)
	}
	ans := do(t, http.MethodPost, b.url+roomPath("desk"), bearer(userToken(t, "bob", nil), "Roomcast-Connection", hello.Connection),
		`{"data":"from bob","exclude_self":true}`)
	if ans.status != http.StatusAccepted {
		t.Fatalf("bob publishing on B with his stream on A: %d %s", ans.status, ans.body)
	}

	// (c) Once A is killed, no instance holds bob's stream: its id is no
	// proof any more, well before its directory entry would lapse.
	a.kill()
	relaytest.Eventually(t, "bob's stream on the killed instance is unknown", func() bool {
		ans := do(t, http.MethodPost, b.url+roomPath("desk"), bearer(userToken(t, "bob", nil), "Roomcast-Connection", hello.Connection), `{"data":"x"}`)
		return ans.status == http.StatusNotFound && ans.errorCode() == "unknown_connection"
	})
}

// The presence list and the join/leave events agree across instances: a
// user is listed from their join to their leave, through the grace period
// after their last connection, and a reconnect within it (to another
// instance) is neither a leave nor a join.
func TestPresenceListFollowsEventsAcrossInstances(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	c := newCluster(t, 2, "-presence-grace", grace.String())
	a, b := c.nodes[0], c.nodes[1]
	bobH := bearer(userToken(t, "bob", map[string]any{"name": "Bob"}))
	watcher := open(t, b, roomPath("porch"), bearer(userToken(t, "dave", nil)))

	bob := open(t, a, roomPath("porch"), bobH)
	if u := announced(t, watcher.expect(t, "roomcast:join")); u.User != "bob" {
		t.Fatalf("join of %s, want bob", u.User)
	}
	if got := presenceOn(t, b, "porch").summary(); got != "bob:1 dave:1" {
		t.Errorf("after the join: %q, want bob:1 dave:1", got)
	}
	bob.close()
	relaytest.Eventually(t, "bob's connection is gone and he is still listed", func() bool {
		return presenceOn(t, b, "porch").summary() == "bob:0 dave:1"
	})
	bob = open(t, b, roomPath("porch"), bobH)
	if got := presenceOn(t, b, "porch").summary(); got != "bob:1 dave:1" {
		t.Errorf("back within the grace period: %q, want bob:1 dave:1", got)
	}
	mark := publish(t, b, roomPath("porch"), "marker")
	watcher.expectEvent(t, mark) // no leave, no join before it
	bob.close()
	leave := watcher.expect(t, "roomcast:leave")
	if u := announced(t, leave); u.User != "bob" {
		t.Fatalf("leave of %s, want bob", u.User)
	}
	if got := presenceOn(t, a, "porch").summary(); got != "dave:1" {
		t.Errorf("after the leave: %q, want dave:1", got)
	}
}
