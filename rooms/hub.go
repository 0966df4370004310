package rooms

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// HubOptions configure a Hub. Zero values take the defaults.
type HubOptions struct {
	// QueueSize bounds each connection's queue (default 1024 events); a
	// connection that overflows it is closed as a slow consumer.
	QueueSize int
	// MaxRooms bounds the rooms of one connection or poll (default 64).
	MaxRooms int
	// SessionTTL is how long a multi-room session's room set outlives its
	// last connection (default 5 minutes).
	SessionTTL time.Duration
	// ReplayLimit bounds the events replayed per room on resume and
	// answered per room by a poll (default 1000).
	ReplayLimit int
	// PollLimit bounds the events of one poll answer per room (default 100).
	PollLimit int
	// Observer is told about deliveries, drops and resumes (default: nobody).
	Observer Observer
}

// Hub is an instance's local fan-out: it holds the instance's connections,
// subscribes to the backbone for the channels they need and queues every
// event for every connection in its channels, without blocking.
type Hub struct {
	bb    Backbone
	codec *CursorCodec
	opts  HubOptions

	// dir is set when the backbone is shared by several instances.
	dir Directory

	mu       sync.RWMutex
	channels map[string]*hubChannel
	conns    map[string]*Connection
	draining bool
}

// registrationTTL is how long a connection stays registered in a shared
// directory without a refresh; Touch refreshes it at every heartbeat.
const registrationTTL = time.Minute

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

// NewHub returns a hub delivering from bb and signing cursors with codec.
func NewHub(bb Backbone, codec *CursorCodec, opts HubOptions) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.MaxRooms <= 0 {
		opts.MaxRooms = 64
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 5 * time.Minute
	}
	if opts.ReplayLimit <= 0 {
		opts.ReplayLimit = 1000
	}
	if opts.PollLimit <= 0 {
		opts.PollLimit = 100
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	h := &Hub{
		bb:       bb,
		codec:    codec,
		opts:     opts,
		channels: make(map[string]*hubChannel),
		conns:    make(map[string]*Connection),
	}
	if dir, ok := BackboneAs[Directory](bb); ok {
		h.dir = dir
		dir.HandleCommands(h.runCommand)
	}
	return h
}

// runCommand runs a command forwarded by another instance.
func (h *Hub) runCommand(ctx context.Context, cmd Command) error {
	switch cmd.Op {
	case "join":
		return h.Join(ctx, cmd.Connection, cmd.Channel)
	case "leave":
		return h.Leave(ctx, cmd.Connection, cmd.Channel)
	}
	return fmt.Errorf("unknown command %q", cmd.Op)
}

// forward sends a join or leave for a connection this instance does not
// hold to the instance that does.
func (h *Hub) forward(ctx context.Context, op, id, channel string) error {
	if h.dir == nil {
		return ErrUnknownConnection
	}
	info, ok, err := h.dir.LookupConnection(ctx, id)
	if err != nil {
		return err
	}
	if !ok || info.Owner == h.dir.Instance() {
		return ErrUnknownConnection
	}
	return h.dir.Forward(ctx, info.Owner, Command{Op: op, Connection: id, Channel: channel})
}

// ClientOf returns the client id of the live connection id, wherever it is held.
func (h *Hub) ClientOf(ctx context.Context, id string) (string, error) {
	if conn, err := h.Lookup(id); err == nil {
		return conn.Client, nil
	}
	if h.dir == nil {
		return "", ErrUnknownConnection
	}
	info, ok, err := h.dir.LookupConnection(ctx, id)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", ErrUnknownConnection
	}
	return info.Client, nil
}

func (h *Hub) register(ctx context.Context, conn *Connection) error {
	if h.dir == nil {
		return nil
	}
	return h.dir.RegisterConnection(ctx, ConnectionInfo{ID: conn.ID, Owner: h.dir.Instance(), Client: conn.Client}, registrationTTL)
}

// Backbone returns the hub's backbone.
func (h *Hub) Backbone() Backbone { return h.bb }

// MaxRooms returns how many rooms one connection may hold.
func (h *Hub) MaxRooms() int { return h.opts.MaxRooms }

// Receive implements Receiver: the backbone hands every event here.
func (h *Hub) Receive(ev *Event, i int) {
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
func (h *Hub) join(conn *Connection, c *hubChannel) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	head := c.head
	conn.mu.Lock()
	conn.joined[c.name] = c
	if !conn.closed && conn.multi {
		conn.queue = append(conn.queue, Delivery{Kind: KindJoined, Channel: c.name, seq: head})
		conn.signal()
	}
	conn.mu.Unlock()
	c.conns = append(c.conns, conn)
	return head
}

func (h *Hub) part(conn *Connection, c *hubChannel) {
	c.mu.Lock()
	if i := slices.Index(c.conns, conn); i >= 0 {
		c.conns = slices.Delete(c.conns, i, i+1)
	}
	c.mu.Unlock()
	h.release(c)
}

// ConnectRequest describes a new stream.
type ConnectRequest struct {
	// Channels are the canonical channels named by the request.
	Channels []string
	// Client is the client id; "" makes the hub generate one.
	Client string
	// Multi makes a multi-room stream: it has a session, and rooms can be
	// joined and left while it is open.
	Multi bool
	// Resume is the cursor the client resumes from ("" for none).
	Resume string
}

// Connect opens a stream: it joins its channels, registers it under a new
// connection id, and queues what a resuming client missed (or a reset where
// that cannot be known) ahead of live events. When Connect returns, every
// event published afterwards on its channels reaches the connection.
func (h *Hub) Connect(ctx context.Context, req ConnectRequest) (*Connection, error) {
	h.mu.RLock()
	draining := h.draining
	h.mu.RUnlock()
	if draining {
		return nil, ErrDraining
	}
	epoch, err := h.bb.Epoch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn := h.newConnection(req.Client, req.Multi)
	conn.epoch = epoch
	var resets []Delivery
	var from *Cursor
	if req.Resume != "" {
		cur, err := h.codec.Decode(req.Resume)
		switch {
		case err != nil:
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
		case cur.Epoch != epoch:
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetHistoryLost})
		case req.Multi != (cur.Session != ""):
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
		default:
			from = &cur
		}
	}
	channels := slices.Clone(req.Channels)
	if req.Multi {
		conn.Session = randomID(12)
		if from != nil {
			saved, ok, err := h.bb.LoadSession(ctx, from.Session)
			switch {
			case err != nil:
				return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
			case ok:
				conn.Session = from.Session
				channels = saved
			default:
				resets = append(resets, Delivery{Kind: KindReset, Reason: ResetSessionExpired})
			}
		}
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)
	if len(channels) > h.opts.MaxRooms {
		return nil, fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	if len(channels) == 0 && !req.Multi {
		return nil, fmt.Errorf("%w: no room", ErrInvalidRoom)
	}

	heads := make(map[string]uint64, len(channels))
	for _, ch := range channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		heads[ch] = h.join(conn, c)
	}
	h.mu.Lock()
	if h.draining {
		// Drain may have taken its snapshot while this connection was joining.
		h.mu.Unlock()
		h.Disconnect(conn)
		return nil, ErrDraining
	}
	h.conns[conn.ID] = conn
	h.mu.Unlock()
	if err := h.register(ctx, conn); err != nil {
		h.Disconnect(conn)
		return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if req.Multi {
		if err := h.bb.SaveSession(ctx, conn.Session, channels, h.opts.SessionTTL); err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		conn.touchedAt = time.Now()
	}

	conn.cursor = Cursor{Epoch: epoch, Session: conn.Session}
	replay, err := h.replay(ctx, conn, from, heads, &resets)
	if err != nil {
		h.Disconnect(conn)
		return nil, err
	}
	if from != nil || len(resets) > 0 {
		outcome := "replayed"
		if len(resets) > 0 {
			outcome = "reset"
		}
		h.opts.Observer.Resumed(outcome)
	}
	pending := append(resets, replay...)
	for _, ch := range channels {
		pending = append(pending, Delivery{Kind: kindSettled, Channel: ch, seq: heads[ch]})
	}
	conn.mu.Lock()
	// The queue holds only live events so far; joins queued bookkeeping
	// that the replay's positions supersede.
	conn.queue = slices.DeleteFunc(conn.queue, func(d Delivery) bool { return d.Kind == KindJoined })
	conn.replay = pending
	conn.signal()
	conn.mu.Unlock()
	return conn, nil
}

// replay collects the retained events of each channel between the resume
// cursor and the join point, merged into Seq order, each event once, and
// sets the writer's starting positions.
func (h *Hub) replay(ctx context.Context, conn *Connection, from *Cursor, heads map[string]uint64, resets *[]Delivery) ([]Delivery, error) {
	var events []Delivery
	for ch, head := range heads {
		pos, ok := uint64(0), false
		if from != nil {
			pos, ok = from.Get(ch)
		}
		if !ok || pos >= head {
			conn.cursor.Set(ch, head)
			continue
		}
		conn.cursor.Set(ch, pos)
		hist, err := h.bb.Since(ctx, ch, pos, h.opts.ReplayLimit)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		if hist.Truncated || (hist.More && hist.Events[len(hist.Events)-1].Seq < head) {
			*resets = append(*resets, Delivery{Kind: KindReset, Channel: ch, Reason: ResetCursorExpired})
			conn.cursor.Set(ch, head)
			continue
		}
		for _, ev := range hist.Events {
			if ev.Seq > head {
				break
			}
			events = append(events, Delivery{Kind: KindEvent, Event: ev, Index: ev.ChannelIndex(ch)})
		}
	}
	slices.SortStableFunc(events, func(a, b Delivery) int { return cmp.Compare(a.Event.Seq, b.Event.Seq) })
	out := events[:0]
	var last uint64
	for _, d := range events {
		ev := d.Event
		if ev.Seq == last {
			continue
		}
		last = ev.Seq
		if ev.Excludes(conn.Client) || comesLive(ev, heads) {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// comesLive reports whether a multi-room event will reach the connection
// live through another of its rooms, which it joined before the event.
func comesLive(ev *Event, heads map[string]uint64) bool {
	if len(ev.Channels) == 1 {
		return false
	}
	for _, ch := range ev.Channels {
		if head, ok := heads[ch]; ok && ev.Seq > head {
			return true
		}
	}
	return false
}

func (h *Hub) newConnection(client string, multi bool) *Connection {
	if client == "" {
		client = NewClientID()
	}
	return &Connection{
		ID:         randomID(16),
		Client:     client,
		hub:        h,
		queueLimit: h.opts.QueueSize,
		multi:      multi,
		joined:     make(map[string]*hubChannel),
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

// Disconnect removes conn from its channels and from the hub. The stream's
// handler calls it once the stream has ended; it is idempotent.
func (h *Hub) Disconnect(conn *Connection) {
	h.mu.Lock()
	registered := h.conns[conn.ID] == conn
	if registered {
		delete(h.conns, conn.ID)
	}
	h.mu.Unlock()
	if registered && h.dir != nil {
		// Best effort: an entry left behind expires with its TTL.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = h.dir.UnregisterConnection(ctx, conn.ID)
		cancel()
	}
	conn.mu.Lock()
	joined := conn.joined
	conn.joined = make(map[string]*hubChannel)
	conn.closed = true
	conn.mu.Unlock()
	for _, c := range joined {
		h.part(conn, c)
	}
}

// Lookup returns the live connection with id.
func (h *Hub) Lookup(id string) (*Connection, error) {
	h.mu.RLock()
	conn := h.conns[id]
	h.mu.RUnlock()
	if conn == nil {
		return nil, ErrUnknownConnection
	}
	return conn, nil
}

// ErrSingleRoom is returned when rooms are joined to or left from a stream
// that was opened for one room.
var ErrSingleRoom = errors.New("single-room stream")

// Join adds channel to the live multi-room connection id. When Join
// returns, every event published to channel afterwards reaches the
// connection, and none published before does.
func (h *Hub) Join(ctx context.Context, id, channel string) error {
	conn, err := h.Lookup(id)
	if err != nil {
		return h.forward(ctx, "join", id, channel)
	}
	if !conn.multi {
		return fmt.Errorf("%w: join rooms on a /v1/stream connection", ErrSingleRoom)
	}
	conn.mu.Lock()
	_, already := conn.joined[channel]
	n := len(conn.joined)
	conn.mu.Unlock()
	if already {
		return nil
	}
	if n >= h.opts.MaxRooms {
		return fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	c, err := h.acquire(ctx, channel)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn.mu.Lock()
	closed := conn.closed
	_, raced := conn.joined[channel]
	conn.mu.Unlock()
	if closed || raced {
		h.release(c)
		if closed {
			return ErrUnknownConnection
		}
		return nil
	}
	h.join(conn, c)
	return h.saveSession(ctx, conn)
}

// Leave removes channel from the live multi-room connection id.
func (h *Hub) Leave(ctx context.Context, id, channel string) error {
	conn, err := h.Lookup(id)
	if err != nil {
		return h.forward(ctx, "leave", id, channel)
	}
	if !conn.multi {
		return fmt.Errorf("%w: leave rooms on a /v1/stream connection", ErrSingleRoom)
	}
	conn.mu.Lock()
	c := conn.joined[channel]
	delete(conn.joined, channel)
	conn.mu.Unlock()
	if c == nil {
		return nil
	}
	h.part(conn, c)
	conn.control(Delivery{Kind: KindLeft, Channel: channel})
	return h.saveSession(ctx, conn)
}

func (h *Hub) saveSession(ctx context.Context, conn *Connection) error {
	if err := h.bb.SaveSession(ctx, conn.Session, conn.Rooms(), h.opts.SessionTTL); err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn.mu.Lock()
	conn.touchedAt = time.Now()
	conn.mu.Unlock()
	return nil
}

// Touch keeps a connection's registration and a multi-room connection's
// session alive; writers call it on every heartbeat. Sessions are written
// to the backbone at most once per quarter TTL.
func (h *Hub) Touch(ctx context.Context, conn *Connection) error {
	if err := h.register(ctx, conn); err != nil {
		return err
	}
	if !conn.multi {
		return nil
	}
	conn.mu.Lock()
	due := time.Since(conn.touchedAt) > h.opts.SessionTTL/4
	conn.mu.Unlock()
	if !due {
		return nil
	}
	return h.saveSession(ctx, conn)
}

// Drain refuses new connections from now on and closes every open one with
// a reconnect delay chosen by delay.
func (h *Hub) Drain(delay func() time.Duration) {
	h.mu.Lock()
	h.draining = true
	conns := make([]*Connection, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.Close(CloseReason{Code: CloseShutdown, Message: "the server is shutting down; reconnect",
			ReconnectMS: int(delay().Milliseconds())})
	}
}

// Channels returns how many channels the hub holds backbone subscriptions for.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}

// Connections returns how many connections the hub holds.
func (h *Hub) Connections() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.conns)
}

// NewClientID returns a fresh random client id.
func NewClientID() string { return randomID(12) }

// randomID returns n random bytes as URL-safe base64.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
