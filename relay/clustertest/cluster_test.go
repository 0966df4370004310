package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// Credentials every instance of a test cluster is configured with.
const (
	apiKey    = "clustertest-server-api-key"
	jwtSecret = "clustertest HS256 secret, at least 32 bytes long"
)

// waitFor bounds every wait on an event the test expects.
const waitFor = relaytest.Wait

var binary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "roomcast-clustertest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary, err = relaytest.BuildRoomcast(dir, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// baseArgs are the flags of every instance: short timers so failures show
// quickly, and no limits that a test's burst of traffic from one address
// would hit.
var baseArgs = []string{
	"-addr", "127.0.0.1:0",
	"-metrics-addr", "127.0.0.1:0",
	"-log-format", "json",
	"-heartbeat", "1s",
	"-drain-timeout", "2s",
	"-retry-min", "100ms",
	"-retry-max", "200ms",
	"-publish-rate", "1000000",
	"-publish-burst", "1000000",
	"-max-conns-per-ip", "100000",
	"-max-conns-per-user", "100000",
}

// cluster is one private redis-server and the instances sharing it.
type cluster struct {
	redis *redistest.Server
	nodes []*node
}

// newCluster starts redis-server and n instances on it (A, B, C, ...).
func newCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{redis: redistest.NewServer(t)}
	for i := range n {
		c.nodes = append(c.nodes, c.start(t, string(rune('A'+i)), extra...))
	}
	return c
}

// start runs one more instance against the cluster's Redis.
func (c *cluster) start(t *testing.T, name string, extra ...string) *node {
	t.Helper()
	cmd := exec.Command(binary, append(append([]string{}, baseArgs...), extra...)...)
	// No cursor key is configured: cursors and tickets work across
	// instances only through the key they share in Redis.
	cmd.Env = relaytest.CleanEnv(
		"ROOMCAST_REDIS_URL="+c.redis.URL(),
		"ROOMCAST_API_KEY="+apiKey,
		"ROOMCAST_JWT_SECRET="+jwtSecret,
	)
	n := &node{name: name}
	n.Process = relaytest.StartProcess(t, cmd, relaytest.ProcessOptions{
		Name:     "instance " + name,
		Combined: true,
		Summary:  func(s string) string { return tail(s, 4000) },
	})
	n.log = n.Stderr
	line := n.log.AwaitListening(t)
	if line.Backbone != "redis" {
		t.Fatalf("instance %s runs the %q backbone, want redis", name, line.Backbone)
	}
	n.url = "http://" + line.Addr
	// Logged before the relay says it listens.
	n.metrics = "http://" + n.log.AwaitMatch(t, metricsListening)[1]
	return n
}

// tail returns the end of a log, about n bytes, with runs of the same
// go-redis complaint folded into one line.
func tail(s string, n int) string {
	var b strings.Builder
	prev, repeats := "", 0
	flush := func() {
		if repeats > 0 {
			fmt.Fprintf(&b, "(the line above %d more times)\n", repeats)
		}
		repeats = 0
	}
	for _, line := range strings.SplitAfter(s, "\n") {
		key := redisLogTime.ReplaceAllString(line, "")
		if key == prev {
			repeats++
			continue
		}
		flush()
		prev = key
		b.WriteString(line)
	}
	flush()
	if s = b.String(); len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

var metricsListening = regexp.MustCompile(`"msg":"metrics listener","addr":"([^"]+)"`)

var redisLogTime = regexp.MustCompile(`^redis: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d `)

// node is one running instance.
type node struct {
	*relaytest.Process
	name    string
	url     string
	metrics string            // base URL of its metrics listener
	log     *relaytest.Output // stdout and stderr
}

// kill ends the instance with SIGKILL, as a crash or an OOM kill would, and
// waits until it is gone.
func (n *node) kill() { n.Kill() }

// userToken returns a token of user signed with the cluster's JWT secret,
// valid for an hour, with the extra claims.
func userToken(t testing.TB, user string, extra map[string]any) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bearer returns headers carrying credential as a bearer token, plus the
// given header pairs.
func bearer(credential string, pairs ...string) http.Header {
	h := http.Header{"Authorization": {"Bearer " + credential}}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Set(pairs[i], pairs[i+1])
	}
	return h
}

// server is the API key's headers.
func server(pairs ...string) http.Header { return bearer(apiKey, pairs...) }

// httpClient is used for every request that is not a stream; its
// connections are not shared with streams.
var httpClient = &http.Client{Timeout: waitFor, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// answer is a fully read HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorCode returns the code of a JSON error answer.
func (a answer) errorCode() string {
	var e struct {
		Error struct{ Code string }
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

// send makes one request and reads its answer; err is a transport failure.
func send(ctx context.Context, method, url string, header http.Header, body string) (answer, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return answer{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// do is send that fails the test on a transport error.
func do(t testing.TB, method, url string, header http.Header, body string) answer {
	t.Helper()
	a, err := send(context.Background(), method, url, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

// published is the 202 answer of a publish.
type published struct {
	ID    *string `json:"id"`
	Room  string  `json:"room"`
	Event string  `json:"event"`
}

// publish posts data (a raw body: it becomes a JSON string) to path on n
// with the API key and requires a 202; it returns the event id.
func publish(t testing.TB, n *node, path, data string, header ...string) string {
	t.Helper()
	a := do(t, http.MethodPost, n.url+path, server(header...), data)
	if a.status != http.StatusAccepted {
		t.Fatalf("POST %s on %s: %d %s", path, n.name, a.status, a.body)
	}
	var p published
	if err := json.Unmarshal(a.body, &p); err != nil || p.ID == nil || *p.ID == "" {
		t.Fatalf("POST %s on %s: answer %s (%v)", path, n.name, a.body, err)
	}
	return *p.ID
}

// roomPath is the events path of room.
func roomPath(room string) string { return "/v1/rooms/" + room + "/events" }
