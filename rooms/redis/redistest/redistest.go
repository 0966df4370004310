// Package redistest gives tests a real Redis: a private redis-server on a
// free port that a test may stop, start and restart to inject faults, or the
// shared Redis at 127.0.0.1:6379 under a key prefix of the test's own.
//
// A test that needs Redis and cannot get it fails when the environment sets
// CI=true; elsewhere it is skipped with a loud message.
package redistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/roomcast/roomcast/rooms/roomstest"
)

// SharedAddr is where the machine's shared Redis listens.
const SharedAddr = "127.0.0.1:6379"

// startTimeout bounds how long a redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Unavailable ends a test that needs Redis and cannot have it: it fails
// under CI=true and is skipped, loudly, elsewhere.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("redis is required under CI: %s", msg)
	}
	t.Logf("!!! SKIPPING: redis is not available: %s (set CI=true to make this a failure)", msg)
	t.Skipf("SKIPPED: redis is not available: %s", msg)
}

// SharedURL returns the URL of the shared Redis after checking that it
// answers; see Unavailable for what happens when it does not.
func SharedURL(t testing.TB) string {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: SharedAddr, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		Unavailable(t, "shared redis at %s: %v", SharedAddr, err)
	}
	return "redis://" + SharedAddr
}

// Prefix returns a key prefix no other test uses. The keys under it are
// deleted from the shared Redis when the test ends.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "roomcast-test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() { deleteKeys(SharedAddr, prefix) })
	return prefix
}

// deleteKeys removes every key under prefix, best effort.
func deleteKeys(addr, prefix string) {
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			_ = rdb.Unlink(ctx, keys...).Err()
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		_ = rdb.Unlink(ctx, keys...).Err()
	}
}

// Server is a private redis-server without persistence, so a restart loses
// everything, as a failover to an empty replica would. It is stopped when
// the test ends. Its methods are safe for concurrent use.
type Server struct {
	t    testing.TB
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    *os.File
}

// NewServer starts a redis-server on a free port of 127.0.0.1; see
// Unavailable for what happens when redis-server is not installed.
func NewServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Unavailable(t, "redis-server is not on PATH: %v", err)
	}
	s := &Server{t: t, dir: t.TempDir()}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.dumpLog()
		}
	})
	// redis-server cannot bind port 0 and say which it got. A port from
	// the ephemeral range, released, may become the source port of any
	// connection meanwhile: the port is below that range, and another
	// port is tried if someone took it first.
	roomstest.StartOnFreePort(t, func(port int) error {
		s.port = port
		return s.start(bin)
	})
	return s
}

// Addr is the server's host:port; it stays the same across restarts.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a client to the server, closed when the test ends. Fault
// injection goes through it (CLIENT KILL, DEBUG SLEEP, ...).
func (s *Server) Client() *goredis.Client {
	rdb := goredis.NewClient(&goredis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Stop kills the server at once, as a crash would. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
	if s.log != nil {
		_ = s.log.Close()
		s.log = nil
	}
}

// Start starts a stopped server again on the same port, empty.
func (s *Server) Start() {
	s.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	// The port was just released: give the kernel a moment if another
	// socket still holds it.
	if roomstest.Poll(startTimeout, func() bool { err = s.start(bin); return err == nil }) != nil {
		s.t.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr(), err)
	}
}

// Restart stops and starts the server: every key and connection is lost.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

func (s *Server) start(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("redis-server on %s is already running", s.Addr())
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitPing(s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		_ = log.Close()
		// redis-server says why it exited in its log ("Address
		// already in use", which roomstest.StartOnFreePort retries).
		return fmt.Errorf("%w; log: %s", err, s.logTail())
	}
	s.cmd, s.exited, s.log = cmd, exited, log
	return nil
}

// waitPing waits until the server at addr answers PING, or its process
// exits.
func waitPing(addr string, exited <-chan struct{}) error {
	var err error
	gone := false
	answered := roomstest.Poll(startTimeout, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		err = ping(addr)
		return err == nil
	})
	switch {
	case gone:
		return errors.New("redis-server exited before answering")
	case answered != nil:
		return fmt.Errorf("redis-server on %s did not answer PING within %s: %w", addr, startTimeout, err)
	}
	return nil
}

// ping sends PING to addr and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, []byte("+PONG\r\n")) {
		return fmt.Errorf("PING answered %q", buf)
	}
	return nil
}

// logTail is the end of the server's log, for an error.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (s *Server) dumpLog() {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err == nil && len(b) > 0 {
		s.t.Logf("redis-server log:\n%s", b)
	}
}
