package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"

	goredis "github.com/redis/go-redis/v9"
)

// newFailoverClient connects through Redis Sentinel to the primary the
// sentinels name master. url lists the sentinels in the form go-redis's
// ParseFailoverURL reads: redis://[user:password@]host:port[/db] with the
// other sentinels as repeated ?addr=host:port (the user and password are
// the sentinels'; ?username= and ?password= are the primary's).
func newFailoverClient(url, master string) (*goredis.Client, error) {
	fo, err := goredis.ParseFailoverURL(url)
	if err != nil {
		return nil, urlError("redis sentinel url", url, err)
	}
	if fo.MasterName != "" && fo.MasterName != master {
		return nil, fmt.Errorf("redis sentinel url names master %q, the setting %q", fo.MasterName, master)
	}
	fo.MasterName = master
	fo.ContextTimeoutEnabled = true
	return goredis.NewFailoverClient(fo), nil
}

// connWatch is the client's dial hook. It follows the primary across a
// failover: when a connection is made to another address than the last,
// it closes every connection still open to another one — go-redis drops
// its pooled connections to the old primary itself, but not the pub/sub
// one, which would go on listening to a demoted primary (a replica, which
// sees publishes only as they are replicated to it). The pub/sub
// connection then reconnects to the new primary and resubscribes, and
// each resubscription catches up from history (Backbone.subscribed). Every
// new connection also wakes the failover check (Backbone.checkLoop).
type connWatch struct {
	wake chan struct{}
	// follow is set for a Sentinel client: with a plain URL, a name may
	// resolve to several addresses of the same server.
	follow bool

	mu    sync.Mutex
	addr  string // of the last connection made
	conns map[*watchedConn]struct{}
}

func newConnWatch(follow bool) *connWatch {
	return &connWatch{wake: make(chan struct{}, 1), follow: follow, conns: make(map[*watchedConn]struct{})}
}

// DialHook implements goredis.Hook.
func (w *connWatch) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		cn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
		if !w.follow {
			return cn, nil
		}
		wc := &watchedConn{Conn: cn, w: w, addr: cn.RemoteAddr().String()}
		var stale []*watchedConn
		w.mu.Lock()
		if w.addr != "" && w.addr != wc.addr {
			for c := range w.conns {
				if c.addr != wc.addr {
					stale = append(stale, c)
				}
			}
		}
		w.addr = wc.addr
		w.conns[wc] = struct{}{}
		w.mu.Unlock()
		for _, c := range stale {
			_ = c.Close()
		}
		if _, ok := cn.(syscall.Conn); ok {
			// go-redis checks pooled connections through the socket
			// before reusing them: keep that possible.
			return &watchedSyscallConn{wc}, nil
		}
		return wc, nil
	}
}

// ProcessHook implements goredis.Hook.
func (w *connWatch) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

// ProcessPipelineHook implements goredis.Hook.
func (w *connWatch) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// watchedConn is a connection the watch can close.
type watchedConn struct {
	net.Conn
	w    *connWatch
	addr string
}

func (c *watchedConn) Close() error {
	c.w.mu.Lock()
	delete(c.w.conns, c)
	c.w.mu.Unlock()
	return c.Conn.Close()
}

// NetConn returns the connection underneath, as crypto/tls.Conn does.
func (c *watchedConn) NetConn() net.Conn { return c.Conn }

type watchedSyscallConn struct{ *watchedConn }

func (c *watchedSyscallConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// failoverCheckScript is the check a new connection triggers: it starts a
// new epoch when the primary holds the replication marker (a promoted
// replica, see replicaMarkerLua) or when its position is below the highest
// this instance learned from Redis in the same epoch (writes acknowledged
// and then lost: a restart from a stale snapshot, or a replica promoted
// before the marker reached it). Neither depends on timing.
//
// KEYS: epoch, seq. ARGV: the epoch and position this instance last
// learned, the new epoch. Returns 1 when it started one.
var failoverCheckScript = goredis.NewScript(replicaMarkerLua + `
local epoch = redis.call('GET', KEYS[1])
if not epoch then return 0 end
local lost = promoted(KEYS[1])
if not lost and epoch == ARGV[1] then
  lost = tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2])
end
if not lost then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
return 1
`)

// learned is the highest position an instance learned from Redis: answers
// to its publishes, live events and catch-ups.
type learned struct {
	mu    sync.Mutex
	epoch string
	seq   uint64
}

func (l *learned) note(epoch string, seq uint64) {
	if seq == 0 || epoch == "" {
		return
	}
	l.mu.Lock()
	if epoch != l.epoch {
		l.epoch, l.seq = epoch, seq
	} else if seq > l.seq {
		l.seq = seq
	}
	l.mu.Unlock()
}

func (l *learned) get() (string, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch, l.seq
}

// checkLoop runs the failover check each time the client made new
// connections (Redis came back, or Sentinel named another primary).
func (b *Backbone) checkLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.watch.wake:
		}
		b.checkFailover(context.Background())
	}
}

// checkFailover runs failoverCheckScript. It is best effort: a primary it
// cannot reach now is checked on the next connection, and publishes check
// the marker themselves.
func (b *Backbone) checkFailover(ctx context.Context) (rotated bool, err error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	epoch, seq := b.seen.get()
	n, err := failoverCheckScript.Run(ctx, b.rdb, []string{b.key("", "epoch"), b.key("", "seq")},
		epoch, strconv.FormatUint(seq, 10), newEpoch()).Int()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return false, down("failover check", err)
	}
	return n == 1, nil
}
