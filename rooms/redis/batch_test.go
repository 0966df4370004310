package redis

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

func TestPublishManyInOrder(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{})
	ctx := context.Background()
	// No script in Redis's cache: the batch loads it itself.
	rdb := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var ms []rooms.Message
	var keys []string
	for i := range 20 {
		m := message("a")
		if i%2 == 1 {
			m = message("b", "a")
		}
		m.Data = []byte(strconv.Itoa(i))
		ms = append(ms, m)
		keys = append(keys, "")
	}
	keys[3], keys[5] = "k", "k"
	res, errs := b.PublishMany(ctx, ms, keys)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if !res[5].Duplicate || res[5].ID != res[3].ID {
		t.Errorf("a key repeated within the batch: %+v, want a duplicate of %+v", res[5], res[3])
	}
	h, err := b.Since(ctx, "a", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != 19 {
		t.Fatalf("a holds %d events, want 19", len(h.Events))
	}
	j := 0
	for i := range ms {
		if i == 5 {
			continue
		}
		if h.Events[j].Seq != res[i].Seq {
			t.Errorf("event %d of a is seq %d, want message %d's %d", j, h.Events[j].Seq, i, res[i].Seq)
		}
		j++
	}
}

// A connection that ends mid-pipeline: the publishes whose replies came
// back are answered as stored, every later one as an unknown outcome with
// its token, and nothing is sent twice; resent with their tokens, they are
// answered with the events Redis stored.
func TestPublishManyConnectionLostMidway(t *testing.T) {
	srv := redistest.NewServer(t)
	proxy := newCuttingProxy(t, srv.Addr())
	b := openBackbone(t, "redis://"+proxy.addr(), Options{})
	ctx := context.Background()
	if _, err := b.Publish(ctx, message("warm-up"), ""); err != nil {
		t.Fatal(err)
	}
	ms := make([]rooms.Message, 5)
	for i := range ms {
		ms[i] = message("cut")
		ms[i].Data = []byte(strconv.Itoa(i))
	}
	proxy.cutAfter(2, []byte(publishScript.Hash()))
	res, errs := b.PublishMany(ctx, ms, make([]string, len(ms)))
	var tokens []rooms.PublishToken
	for i, err := range errs {
		var unknown *rooms.OutcomeUnknownError
		switch {
		case i < 2 && (err != nil || res[i].ID == ""):
			t.Errorf("message %d, answered before the cut: %+v, %v", i, res[i], err)
		case i >= 2 && !errors.As(err, &unknown):
			t.Errorf("message %d, after the cut: %+v, %v; want an unknown outcome", i, res[i], err)
		case i >= 2:
			tokens = append(tokens, unknown.Token)
		}
	}
	if t.Failed() {
		return
	}
	// The whole pipeline reached Redis before the cut: every message ran,
	// once.
	h, err := b.Since(ctx, "cut", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != 5 {
		t.Fatalf("cut holds %d events, want 5", len(h.Events))
	}
	resend := ms[2:]
	for i := range resend {
		resend[i].Token = tokens[i]
	}
	again, errs := b.PublishMany(ctx, resend, make([]string, len(resend)))
	for i, err := range errs {
		if err != nil || !again[i].Duplicate || again[i].Seq != h.Events[i+2].Seq {
			t.Errorf("resend %d: %+v, %v; want the stored seq %d", i, again[i], err, h.Events[i+2].Seq)
		}
	}
	if h, _ := b.Since(ctx, "cut", 0, 0); len(h.Events) != 5 {
		t.Errorf("the resend stored more: %d events", len(h.Events))
	}
}

// cuttingProxy forwards TCP connections to a Redis server; armed, it ends
// the next connection whose request holds a marker after passing that
// many replies back (RESP2 or RESP3), as a network failing mid-pipeline.
type cuttingProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	marker []byte
	after  int
	conns  sync.WaitGroup
}

func newCuttingProxy(t *testing.T, target string) *cuttingProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{l: l, target: target}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		p.conns.Wait()
	})
	return p
}

func (p *cuttingProxy) addr() string { return p.l.Addr().String() }

// cutAfter arms the proxy.
func (p *cuttingProxy) cutAfter(replies int, marker []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker, p.after = marker, replies
}

func (p *cuttingProxy) serve(client net.Conn) {
	defer p.conns.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	var cut atomic.Int64 // replies still to pass; -1: no cut armed
	cut.Store(-1)
	closeBoth := func() { _ = client.Close(); _ = server.Close() }
	go func() {
		defer closeBoth()
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				p.mu.Lock()
				if p.marker != nil && bytes.Contains(buf[:n], p.marker) {
					cut.Store(int64(p.after))
					p.marker = nil
				}
				p.mu.Unlock()
				if _, err := server.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer closeBoth()
	rd := bufio.NewReader(server)
	for {
		var reply bytes.Buffer
		if err := readRESP(rd, &reply); err != nil {
			return
		}
		if n := cut.Load(); n == 0 {
			return
		} else if n > 0 {
			cut.Add(-1)
		}
		if _, err := client.Write(reply.Bytes()); err != nil {
			return
		}
	}
}

// readRESP copies one whole reply from rd to out.
func readRESP(rd *bufio.Reader, out *bytes.Buffer) error {
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	out.Write(line)
	if len(line) < 3 {
		return fmt.Errorf("short RESP line %q", line)
	}
	n, _ := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
	switch line[0] {
	case '$', '=', '!': // bulk, verbatim, bulk error
		if n < 0 {
			return nil
		}
		_, err := io.CopyN(out, rd, int64(n)+2)
		return err
	case '*', '~', '>': // array, set, push
		for range max(n, 0) {
			if err := readRESP(rd, out); err != nil {
				return err
			}
		}
	case '%', '|': // map, attribute
		for range 2 * max(n, 0) {
			if err := readRESP(rd, out); err != nil {
				return err
			}
		}
		if line[0] == '|' {
			return readRESP(rd, out) // the attributed reply itself
		}
	}
	return nil
}

// A batch whose time is up before it is sent is refused as not stored,
// like a single publish, never as an outcome to ask about: nothing of it
// reached Redis.
func TestPublishManyEndedContextNotSent(t *testing.T) {
	srv := redistest.NewServer(t)
	b := openBackbone(t, srv.URL(), Options{})
	ms := []rooms.Message{message("ended"), message("ended")}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, ctx := range []context.Context{cancelled, expired} {
		_, errs := b.PublishMany(ctx, ms, make([]string, len(ms)))
		for i, err := range errs {
			var u *rooms.OutcomeUnknownError
			if !errors.Is(err, rooms.ErrBackboneDown) || errors.As(err, &u) {
				t.Errorf("event %d of a batch whose context ended (%v): %v; want backbone down, not unknown", i, ctx.Err(), err)
			}
		}
	}
	h, err := b.Since(context.Background(), "ended", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Events) != 0 {
		t.Errorf("history holds %d events of batches never sent", len(h.Events))
	}
}
