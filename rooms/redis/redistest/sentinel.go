package redistest

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
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// SentinelMaster is the name the sentinels know the primary by.
const SentinelMaster = "roomcast"

// TopologyWait bounds each wait for the topology to settle (a failover takes
// down-after-milliseconds, an election and a promotion).
const TopologyWait = 30 * time.Second

// Node is one redis-server process (a data node or a sentinel) on a port
// of roomstest.FreePort, restartable with the same arguments and files.
type Node struct {
	t    testing.TB
	dir  string
	port int
	args []string // after the port

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartNode starts redis-server with args (a config file first, for a
// sentinel), retrying on another port when the one drawn was taken.
func StartNode(t testing.TB, dir string, args ...string) *Node {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server is not on PATH: %v", err)
	}
	n := &Node{t: t, dir: dir, args: args}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(n.logFile()); err == nil {
				t.Logf("%s log:\n%s", n.Addr(), lastLines(b, 80))
			}
		}
	})
	roomstest.StartOnFreePort(t, func(port int) error {
		n.port = port
		return n.start()
	})
	return n
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (n *Node) Addr() string    { return "127.0.0.1:" + strconv.Itoa(n.port) }
func (n *Node) logFile() string { return filepath.Join(n.dir, "log-"+strconv.Itoa(n.port)) }

func (n *Node) start() error {
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
	rdb := goredis.NewClient(&goredis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			// Its log says why ("Address already in use", which
			// StartOnFreePort retries on another port).
			b, _ := os.ReadFile(n.logFile())
			return fmt.Errorf("redis-server on %s exited at start: %s", n.Addr(), lastLines(b, 5))
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
			return fmt.Errorf("redis-server on %s: no PONG: %w", n.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the process at once (SIGKILL), as a crash would.
func (n *Node) Kill() {
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
func (n *Node) Shutdown() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	rdb := goredis.NewClient(&goredis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer rdb.Close()
	_ = rdb.ShutdownSave(context.Background()).Err() // answered by the connection closing
	select {
	case <-n.exited:
	case <-time.After(TopologyWait):
		n.t.Fatalf("redis-server on %s did not shut down", n.Addr())
	}
	n.cmd = nil
}

// restart starts a stopped Node again, same port, same files.
func (n *Node) Restart() {
	n.t.Helper()
	deadline := time.Now().Add(TopologyWait)
	for {
		err := n.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("restarting %s: %v", n.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *Node) Signal(sig syscall.Signal) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatal(err)
	}
}

// client is a client of the Node, closed when the test ends.
func (n *Node) Client() *goredis.Client {
	rdb := goredis.NewClient(&goredis.Options{Addr: n.Addr(), MaxRetries: -1})
	n.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Topology is a primary, a replica and three sentinels watching them.
type Topology struct {
	t         testing.TB
	Primary   *Node
	Replica   *Node
	Sentinels []*Node
}

// TopologyOptions shape a Topology.
type TopologyOptions struct {
	// DownAfter is the sentinels' down-after-milliseconds: how long the
	// primary may be unreachable before they fail over (default 1 s).
	DownAfter time.Duration
	// data are extra redis-server arguments of the data nodes
	// (persistence).
	Data []string
}

func NewTopology(t testing.TB, o TopologyOptions) *Topology {
	t.Helper()
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	dir := t.TempDir()
	data := func(name string, extra ...string) *Node {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return StartNode(t, d, append(append([]string{"--save", "", "--repl-diskless-sync-delay", "0"}, o.Data...), extra...)...)
	}
	top := &Topology{t: t}
	top.Primary = data("primary")
	top.Replica = data("replica", "--replicaof", "127.0.0.1", strconv.Itoa(top.Primary.port))
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
			"sentinel parallel-syncs %s 1\n", SentinelMaster, top.Primary.port, SentinelMaster, o.DownAfter.Milliseconds(), SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		top.Sentinels = append(top.Sentinels, StartNode(t, d, conf, "--sentinel"))
	}
	top.AwaitReady()
	return top
}

// url is the sentinels' URL, in the form ROOMCAST_REDIS_URL takes with
// ROOMCAST_REDIS_SENTINEL_MASTER.
func (top *Topology) URL() string {
	u := "redis://" + top.Sentinels[0].Addr() + "?"
	for i, s := range top.Sentinels[1:] {
		if i > 0 {
			u += "&"
		}
		u += "addr=" + s.Addr()
	}
	return u
}

// sentinelClient talks to sentinel i.
func (top *Topology) SentinelClient(i int) *goredis.SentinelClient {
	c := goredis.NewSentinelClient(&goredis.Options{Addr: top.Sentinels[i].Addr(), MaxRetries: -1})
	top.t.Cleanup(func() { _ = c.Close() })
	return c
}

// awaitReady waits until every sentinel names the same data Node as the
// primary and knows the other as its replica and the two other sentinels,
// so that a failover can be agreed on, and the replica's link is up. A
// busy machine may stall a Node past down-after-milliseconds while the
// Topology starts: the sentinels then fail over at once, and the roles
// are taken as they name them.
func (top *Topology) AwaitReady() {
	top.t.Helper()
	deadline := time.Now().Add(TopologyWait)
	ctx := context.Background()
	for {
		ok := true
		var why string
		primary, replica := top.Primary, top.Replica
		if addr, err := top.SentinelClient(0).GetMasterAddrByName(ctx, SentinelMaster).Result(); err == nil && len(addr) == 2 &&
			addr[1] == strconv.Itoa(replica.port) {
			primary, replica = replica, primary
		}
		for i := range top.Sentinels {
			sc := top.SentinelClient(i)
			addr, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
			if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(primary.port) {
				ok, why = false, fmt.Sprintf("sentinel %d names %v (%v)", i, addr, err)
				break
			}
			reps, err := sc.Replicas(ctx, SentinelMaster).Result()
			if err != nil || !hasReplica(reps, replica.port) {
				ok, why = false, fmt.Sprintf("sentinel %d replicas %v (%v)", i, reps, err)
				break
			}
			peers, err := sc.Sentinels(ctx, SentinelMaster).Result()
			if err != nil || len(peers) < 2 {
				ok, why = false, fmt.Sprintf("sentinel %d knows %d sentinels (%v)", i, len(peers), err)
				break
			}
		}
		if ok {
			info, err := replica.Client().Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(info, "master_link_status:up") ||
				!strings.Contains(info, "master_port:"+strconv.Itoa(primary.port)) {
				ok, why = false, "replica link not up"
			}
		}
		if ok {
			top.Primary, top.Replica = primary, replica
			return
		}
		if time.Now().After(deadline) {
			top.t.Fatalf("topology not ready within %s: %s", TopologyWait, why)
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
func (top *Topology) AwaitPrimary(n *Node) {
	top.t.Helper()
	deadline := time.Now().Add(TopologyWait)
	for {
		all := true
		for i := range top.Sentinels {
			addr, err := top.SentinelClient(i).GetMasterAddrByName(context.Background(), SentinelMaster).Result()
			if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(n.port) {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			top.t.Fatalf("sentinels did not switch to %s within %s", n.Addr(), TopologyWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
