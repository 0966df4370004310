package browsertest

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// TestClientInNode runs roomcast.js in Node against a real relay that needs
// tokens: it connects (long-polling, Node has no EventSource), joins,
// receives what a backend publishes, and publishes as its user.
func TestClientInNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed: roomcast.js cannot be tested in Node")
		}
		t.Skip("SKIPPED: node is not installed")
	}
	ns := rooms.Namespaces{Default: rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true}}
	r := relaytest.Start(t, relaytest.Options{Relay: relay.Options{Auth: relaytest.NewAuth(t, auth.Config{}), Namespaces: &ns}})
	token := relaytest.Token(t, "node-user", time.Hour, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "../../web/examples/node-client.mjs", r.URL, token)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := relaytest.NewOutput()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan map[string]any)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
	}()
	// next returns the first line with key not returned yet: the lines
	// of concurrent things (an emit's answer, its event coming back) may
	// come in either order.
	var early []map[string]any
	next := func(key string) map[string]any {
		t.Helper()
		for i, m := range early {
			if _, ok := m[key]; ok {
				early = append(early[:i], early[i+1:]...)
				return m
			}
		}
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("node exited before %q; stderr:\n%s", key, stderr.String())
				}
				t.Logf("node: %v", m)
				if _, ok := m[key]; ok {
					return m
				}
				early = append(early, m)
			case <-ctx.Done():
				t.Fatalf("no %q from node; stderr:\n%s", key, stderr.String())
			}
		}
	}
	if m := next("connect"); m["connect"] != "poll" && m["connect"] != "sse" {
		t.Errorf("connected over %v", m["connect"])
	}
	next("ready")
	if m := next("chat"); m["chat"] != "from node" || m["from"] != "node-user" {
		t.Errorf("its own event came back as %v, want from node-user", m)
	}
	if m := next("emitted"); m["emitted"] == "" {
		t.Errorf("emit resolved with %v", m)
	}
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
		Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + relaytest.APIKey}},
		Body:   []byte(`{"event":"chat","data":{"text":"bye"}}`)})
	if resp.Status != http.StatusAccepted {
		t.Fatalf("publish: %d %s", resp.Status, resp.Body)
	}
	if m := next("chat"); m["chat"] != "bye" {
		t.Errorf("got %v, want the backend's bye", m)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("node: %v; stderr:\n%s", err, stderr.String())
	}
}
