package sentineltest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms/redis"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// master is the name the sentinels know the primary by.
const master = "roomcast"

// wait bounds each wait for the topology to settle (a failover takes
// down-after-milliseconds, an election and a promotion).
const wait = 30 * time.Second

// node is one redis-server process (a data node or a sentinel) on a port
// of relaytest.FreePort, restartable with the same arguments and files.
type node struct {
	t    testing.TB
	dir  string
	port int
	args []string // after the port

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startNode starts redis-server with args (a config file first, for a
// sentinel), retrying on another port when the one drawn was taken.
func startNode(t testing.TB, dir string, args ...string) *node {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		redistest.Unavailable(t, "redis-server is not on PATH: %v", err)
	}
	n := &node{t: t, dir: dir, args: args}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			if b, err := os.ReadFile(n.logFile()); err == nil {
				t.Logf("%s log:\n%s", n.addr(), lastLines(b, 80))
			}
		}
	})
	var err error
	for range 5 {
		n.port = relaytest.FreePort(t)
		if err = n.start(); err == nil {
			return n
		}
	}
	t.Fatalf("starting redis-server %v: %v", args, err)
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (n *node) addr() string    { return "127.0.0.1:" + strconv.Itoa(n.port) }
func (n *node) logFile() string { return filepath.Join(n.dir, "log-"+strconv.Itoa(n.port)) }

func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var args []string
	rest := n.args
	if len(rest) > 0 && strings.HasSuffix(rest[0], ".conf") {
		args, rest = append(args, rest[0]), rest[1:]
	}
	args = append(args, "--port", strconv.Itoa(n.port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--daemonize", "no", "--dir", n.dir, "--logfile", n.logFile())
	args = append(args, rest...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	rdb := goredis.NewClient(&goredis.Options{Addr: n.addr(), MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited at start (port taken?)", n.addr())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			n.cmd, n.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on %s: no PONG: %w", n.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the process at once (SIGKILL), as a crash would.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

// shutdown stops the server the way an operator restarts it: SHUTDOWN
// SAVE writes its RDB (and fsyncs its AOF) before it exits.
func (n *node) shutdown() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	rdb := goredis.NewClient(&goredis.Options{Addr: n.addr(), MaxRetries: -1})
	defer rdb.Close()
	_ = rdb.ShutdownSave(context.Background()).Err() // answered by the connection closing
	select {
	case <-n.exited:
	case <-time.After(wait):
		n.t.Fatalf("redis-server on %s did not shut down", n.addr())
	}
	n.cmd = nil
}

// restart starts a stopped node again, same port, same files.
func (n *node) restart() {
	n.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := n.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("restarting %s: %v", n.addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) signal(sig syscall.Signal) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatal(err)
	}
}

// client is a client of the node, closed when the test ends.
func (n *node) client() *goredis.Client {
	rdb := goredis.NewClient(&goredis.Options{Addr: n.addr(), MaxRetries: -1})
	n.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// topology is a primary, a replica and three sentinels watching them.
type topology struct {
	t         testing.TB
	primary   *node
	replica   *node
	sentinels []*node
}

// topologyOptions shape a topology.
type topologyOptions struct {
	// downAfter is the sentinels' down-after-milliseconds: how long the
	// primary may be unreachable before they fail over (default 1 s).
	downAfter time.Duration
	// data are extra redis-server arguments of the data nodes
	// (persistence).
	data []string
}

func newTopology(t testing.TB, o topologyOptions) *topology {
	t.Helper()
	if o.downAfter == 0 {
		o.downAfter = time.Second
	}
	dir := t.TempDir()
	data := func(name string, extra ...string) *node {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return startNode(t, d, append(append([]string{"--save", "", "--repl-diskless-sync-delay", "0"}, o.data...), extra...)...)
	}
	top := &topology{t: t}
	top.primary = data("primary")
	top.replica = data("replica", "--replicaof", "127.0.0.1", strconv.Itoa(top.primary.port))
	for i := range 3 {
		d := filepath.Join(dir, "sentinel"+strconv.Itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		// Sentinel rewrites its configuration file: one each.
		conf := filepath.Join(d, "sentinel.conf")
		text := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 3000\n"+
			"sentinel parallel-syncs %s 1\n", master, top.primary.port, master, o.downAfter.Milliseconds(), master, master)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		top.sentinels = append(top.sentinels, startNode(t, d, conf, "--sentinel"))
	}
	top.awaitReady()
	return top
}

// url is the sentinels' URL, in the form ROOMCAST_REDIS_URL takes with
// ROOMCAST_REDIS_SENTINEL_MASTER.
func (top *topology) url() string {
	u := "redis://" + top.sentinels[0].addr() + "?"
	for i, s := range top.sentinels[1:] {
		if i > 0 {
			u += "&"
		}
		u += "addr=" + s.addr()
	}
	return u
}

// backbone opens a backbone through the sentinels, closed when the test ends.
func (top *topology) backbone(t testing.TB, o redis.Options) *redis.Backbone {
	t.Helper()
	o.SentinelMaster = master
	if o.OpTimeout == 0 {
		o.OpTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, err := redis.New(ctx, top.url(), o)
	if err != nil {
		t.Fatalf("redis.New through sentinels: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// sentinelClient talks to sentinel i.
func (top *topology) sentinelClient(i int) *goredis.SentinelClient {
	c := goredis.NewSentinelClient(&goredis.Options{Addr: top.sentinels[i].addr(), MaxRetries: -1})
	top.t.Cleanup(func() { _ = c.Close() })
	return c
}

// awaitReady waits until every sentinel names the same data node as the
// primary and knows the other as its replica and the two other sentinels,
// so that a failover can be agreed on, and the replica's link is up. A
// busy machine may stall a node past down-after-milliseconds while the
// topology starts: the sentinels then fail over at once, and the roles
// are taken as they name them.
func (top *topology) awaitReady() {
	top.t.Helper()
	deadline := time.Now().Add(wait)
	ctx := context.Background()
	for {
		ok := true
		var why string
		primary, replica := top.primary, top.replica
		if addr, err := top.sentinelClient(0).GetMasterAddrByName(ctx, master).Result(); err == nil && len(addr) == 2 &&
			addr[1] == strconv.Itoa(replica.port) {
			primary, replica = replica, primary
		}
		for i := range top.sentinels {
			sc := top.sentinelClient(i)
			addr, err := sc.GetMasterAddrByName(ctx, master).Result()
			if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(primary.port) {
				ok, why = false, fmt.Sprintf("sentinel %d names %v (%v)", i, addr, err)
				break
			}
			reps, err := sc.Replicas(ctx, master).Result()
			if err != nil || !hasReplica(reps, replica.port) {
				ok, why = false, fmt.Sprintf("sentinel %d replicas %v (%v)", i, reps, err)
				break
			}
			peers, err := sc.Sentinels(ctx, master).Result()
			if err != nil || len(peers) < 2 {
				ok, why = false, fmt.Sprintf("sentinel %d knows %d sentinels (%v)", i, len(peers), err)
				break
			}
		}
		if ok {
			info, err := replica.client().Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(info, "master_link_status:up") ||
				!strings.Contains(info, "master_port:"+strconv.Itoa(primary.port)) {
				ok, why = false, "replica link not up"
			}
		}
		if ok {
			top.primary, top.replica = primary, replica
			return
		}
		if time.Now().After(deadline) {
			top.t.Fatalf("topology not ready within %s: %s", wait, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasReplica(reps []map[string]string, port int) bool {
	for _, r := range reps {
		if r["port"] == strconv.Itoa(port) && !strings.Contains(r["flags"], "down") &&
			!strings.Contains(r["flags"], "disconnected") && r["master-link-status"] == "ok" {
			return true
		}
	}
	return false
}

// awaitPrimary waits until every sentinel names n as the primary.
func (top *topology) awaitPrimary(n *node) {
	top.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		all := true
		for i := range top.sentinels {
			addr, err := top.sentinelClient(i).GetMasterAddrByName(context.Background(), master).Result()
			if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(n.port) {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			top.t.Fatalf("sentinels did not switch to %s within %s", n.addr(), wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
