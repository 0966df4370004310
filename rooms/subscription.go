package rooms

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

type hubChannel struct {
	name  string
	ready chan struct{} // closed once the backbone subscription is settled
	err   error         // the subscription's failure; read after ready
	refs  int           // guarded by Hub.mu

	mu    sync.Mutex
	epoch string
	head  uint64
	conns []*Connection
}

// Receive implements Receiver: the backbone hands every event here.
func (h *Hub) Receive(ev *Event, i int) {
	if ev.Channels[i] == controlChannel {
		h.obey(ev)
		return
	}
	h.mu.RLock()
	c := h.channels[ev.Channels[i]]
	h.mu.RUnlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Epoch != c.epoch {
		if c.epoch != "" {
			// The backbone lost its history: positions start over, and
			// every subscriber must hear that it may have missed events.
			for _, conn := range c.conns {
				conn.resetEpoch(ev.Epoch)
			}
		}
		c.epoch, c.head = ev.Epoch, 0
	}
	if !ev.Volatile {
		if ev.Seq <= c.head {
			return // already delivered through an earlier subscription
		}
		c.head = ev.Seq
	}
	for _, conn := range c.conns {
		conn.deliver(ev, i)
	}
	h.opts.Observer.Delivered(len(c.conns))
}

// acquire returns the hub's channel, subscribed to the backbone, with one
// more reference held for the caller.
func (h *Hub) acquire(ctx context.Context, name string) (*hubChannel, error) {
	h.mu.Lock()
	c := h.channels[name]
	if c != nil {
		c.refs++
		h.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			h.release(c)
			return nil, ctx.Err()
		}
		if c.err != nil {
			h.release(c)
			return nil, c.err
		}
		return c, nil
	}
	c = &hubChannel{name: name, ready: make(chan struct{}), refs: 1}
	h.channels[name] = c
	h.mu.Unlock()

	epoch, err := h.bb.Epoch(ctx)
	var head uint64
	if err == nil {
		head, err = h.bb.Subscribe(ctx, name, h)
	}
	if err != nil {
		c.err = fmt.Errorf("subscribe %s: %w", name, err)
		h.mu.Lock()
		if h.channels[name] == c {
			delete(h.channels, name)
		}
		h.mu.Unlock()
		close(c.ready)
		h.release(c)
		return nil, c.err
	}
	c.mu.Lock()
	if c.epoch == "" || c.epoch == epoch {
		c.epoch, c.head = epoch, max(c.head, head)
	}
	c.mu.Unlock()
	close(c.ready)
	return c, nil
}

func (h *Hub) release(c *hubChannel) {
	h.mu.Lock()
	c.refs--
	last := c.refs == 0 && h.channels[c.name] == c
	if last {
		delete(h.channels, c.name)
	}
	h.mu.Unlock()
	if last && c.err == nil {
		// Unsubscribing is best effort: a failure only costs unwanted
		// events, which Receive ignores.
		_ = h.bb.Unsubscribe(context.Background(), c.name, h)
	}
}

// join adds conn to c and returns the channel's head at that moment: every
// event above it reaches conn, none at or below it does.
func (h *Hub) join(conn *Connection, c *hubChannel) uint64 { return h.joinAt(conn, c, 0) }

// joinAt is join with the join point at least atLeast, the backbone's head
// of the channel read before: the channel's events up to it that this
// instance has yet to receive (a catch-up in flight) were published before
// the join, so none of them reaches conn. Without it, a copy in flight of
// an event another channel of conn had delivered would count as a copy of
// a channel joined before the event, and deliver the event again.
func (h *Hub) joinAt(conn *Connection, c *hubChannel, atLeast uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	head := c.head
	conn.mu.Lock()
	if atLeast > head && c.epoch == conn.epoch {
		head = atLeast
		if conn.floor == nil {
			conn.floor = make(map[string]uint64)
		}
		conn.floor[c.name] = head
	}
	// A left span of the channel stays (Connection.reaches): its
	// positions are all at or below head.
	conn.joined[c.name] = membership{c: c, from: head, got: head}
	if conn.multi && IsRoomChannel(c.name) {
		if conn.joinedAt == nil {
			conn.joinedAt = make(map[string]uint64)
		}
		conn.joinedAt[c.name] = head
	}
	if !conn.closed && conn.multi {
		kind := KindJoined
		if !IsRoomChannel(c.name) {
			kind = kindTrack
		}
		conn.queue = append(conn.queue, Delivery{Kind: kind, Channel: c.name, seq: head})
		conn.signal()
	}
	conn.mu.Unlock()
	c.conns = append(c.conns, conn)
	return head
}

// part takes conn out of c and returns the channel's head at that moment:
// no event above it reaches conn.
func (h *Hub) part(conn *Connection, c *hubChannel) uint64 {
	c.mu.Lock()
	if i := slices.Index(c.conns, conn); i >= 0 {
		c.conns = slices.Delete(c.conns, i, i+1)
	}
	head := c.head
	c.mu.Unlock()
	h.release(c)
	return head
}

// implicitChannels returns the namespace channels of rooms.
func implicitChannels(rooms []string) []string {
	var out []string
	for _, ch := range rooms {
		if IsRoomChannel(ch) {
			out = append(out, NamespaceChannel(channelNamespace(ch)))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
