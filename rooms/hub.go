package rooms

import (
	"strconv"

	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
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
	// PollSessionTTL is how long a long-poller's connection stays joined
	// after an answer, waiting for its next poll (default 5s).
	PollSessionTTL time.Duration
	// MaxPollSessions bounds the long-pollers' connections kept between
	// polls (default 65,536); past it, answered polls keep none. Negative
	// keeps none at all.
	MaxPollSessions int
	// MaxPollSessionsPerCaller bounds the sessions of MaxPollSessions one
	// caller (a user, else a client address: PollRequest.Caller) may keep
	// (default 500, the default connection limit of an address: no caller
	// keeps more parked than it could hold polls open); a long-poll that
	// would keep one more is refused with ErrTooManySessions.
	MaxPollSessionsPerCaller int
	// MaxPollPresencePerCaller and MaxPollPresence bound the presence
	// leases long-polls hold (one per room polled, for twice the hold,
	// outliving the poll) per caller and in all (default 4,096 and
	// 1,048,576); a poll that would hold more is refused with
	// ErrLimitExceeded.
	MaxPollPresencePerCaller int
	MaxPollPresence          int
	// MaxSessionsPerCaller and MaxSessions bound the multi-room sessions
	// kept — while their stream is open and SessionTTL after — per caller
	// (ConnectRequest.Caller) and in all (default 1,000 and 1,000,000); a
	// stream that would keep one more is refused with ErrTooManySessions.
	MaxSessionsPerCaller int
	MaxSessions          int
	// Observer is told about deliveries, drops and resumes (default: nobody).
	Observer Observer
	// Namespaces decides who may subscribe to what (default: everyone to everything).
	Namespaces *Namespaces
	// PresenceRenew is how often a stream renews its presence (default 15 s);
	// it must be well below the presence store's member lease.
	PresenceRenew time.Duration
	// ClientTTL is how long a client id stays bound to its owner after its
	// last stream or poll (default 2 minutes); streams and pollers renew
	// it every quarter of it.
	ClientTTL time.Duration
	// MaxClientIDsPerCaller bounds the client ids one caller
	// (ConnectRequest.Caller, PollRequest.Caller) holds bound through this
	// instance at once — each for ClientTTL after its last use — (default
	// 4,096); a stream or poll that would bind one more is refused with
	// ErrLimitExceeded. The backbone bounds them in all.
	MaxClientIDsPerCaller int
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
	// presence is set when the backbone keeps presence.
	presence PresenceStore
	// clients is set when the backbone binds client ids to their owners.
	clients ClientRegistry

	// replays shares history reads between resumes of one room from one
	// position.
	replays       singleflight.Group
	replayWaiting atomic.Int32 // resumes reading history, for tests

	mu       sync.RWMutex
	channels map[string]*hubChannel
	conns    map[string]*Connection
	draining bool
	drained  chan struct{} // closed by Drain, to answer held polls

	// polls are long-pollers' connections parked between their polls.
	polls pollSessions
	// pollPresence counts the presence leases long-polls hold, by caller.
	pollPresence *Quota
	// sessions counts the multi-room sessions kept, by caller.
	sessions *Quota
	// bindings counts the client ids bound for callers, by caller.
	bindings *Quota

	// epochMu guards the backbone's epoch as last read (epochRead, at
	// epochReadAt): a new one means the backbone lost its data, and with
	// it every claim the live connections renew only now and then.
	epochMu     sync.Mutex
	epochRead   string
	epochReadAt time.Time
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
	if opts.MaxPollSessions == 0 {
		opts.MaxPollSessions = 1 << 16
	}
	if opts.PollSessionTTL <= 0 {
		opts.PollSessionTTL = 5 * time.Second
	}
	if opts.PollLimit <= 0 {
		opts.PollLimit = 100
	}
	if opts.MaxPollSessionsPerCaller == 0 {
		opts.MaxPollSessionsPerCaller = 500
	}
	if opts.MaxPollPresencePerCaller <= 0 {
		opts.MaxPollPresencePerCaller = 4096
	}
	if opts.MaxPollPresence <= 0 {
		opts.MaxPollPresence = 1 << 20
	}
	if opts.MaxSessionsPerCaller <= 0 {
		opts.MaxSessionsPerCaller = 1000
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 1_000_000
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.PresenceRenew <= 0 {
		opts.PresenceRenew = 15 * time.Second
	}
	if opts.ClientTTL <= 0 {
		opts.ClientTTL = 2 * time.Minute
	}
	if opts.MaxClientIDsPerCaller <= 0 {
		opts.MaxClientIDsPerCaller = 4096
	}
	h := &Hub{
		bb:       bb,
		codec:    codec,
		opts:     opts,
		channels: make(map[string]*hubChannel),
		conns:    make(map[string]*Connection),
		drained:  make(chan struct{}),

		pollPresence: NewQuota(opts.MaxPollPresencePerCaller, opts.MaxPollPresence),
		sessions:     NewQuota(opts.MaxSessionsPerCaller, opts.MaxSessions),
		bindings:     NewQuota(opts.MaxClientIDsPerCaller, DefaultMaxClientBindings),
	}
	if p, ok := BackboneAs[PresenceStore](bb); ok {
		h.presence = p
	}
	if c, ok := BackboneAs[ClientRegistry](bb); ok {
		h.clients = c
	}
	if dir, ok := BackboneAs[Directory](bb); ok {
		h.dir = dir
		dir.HandleCommands(h.runCommand)
	}
	return h
}

// runCommand runs a command forwarded by another instance.
func (h *Hub) runCommand(ctx context.Context, cmd Command) error {
	caller := Identity{User: cmd.User, Server: cmd.Server}
	switch cmd.Op {
	case "join":
		return h.Join(ctx, caller, cmd.Connection, cmd.Channel)
	case "leave":
		return h.Leave(ctx, caller, cmd.Connection, cmd.Channel)
	case "refresh":
		if cmd.Identity == nil {
			return fmt.Errorf("refresh without an identity")
		}
		return h.Refresh(ctx, *cmd.Identity, cmd.Connection)
	}
	return fmt.Errorf("unknown command %q", cmd.Op)
}

// forward sends a join or leave for a connection this instance does not
// hold to the instance that does.
func (h *Hub) forward(ctx context.Context, caller Identity, op, id, channel string) error {
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
	return h.dir.Forward(ctx, info.Owner, Command{Op: op, Connection: id, Channel: channel,
		User: caller.User, Server: caller.Server})
}

func (h *Hub) register(ctx context.Context, conn *Connection) error {
	if h.dir == nil {
		return nil
	}
	return h.dir.RegisterConnection(ctx, ConnectionInfo{ID: conn.ID, Owner: h.dir.Instance(), Client: conn.Client,
		Holder: connectionHolder(conn.Identity())}, registrationTTL)
}

// MaxRooms returns how many rooms one connection may hold.
func (h *Hub) MaxRooms() int { return h.opts.MaxRooms }

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

// ConnectRequest describes a new stream.
type ConnectRequest struct {
	// Channels are the canonical channels named by the request.
	Channels []string
	// Client is the client id; "" makes the hub generate one (or take
	// the one Proof names).
	Client string
	// Proof is the client id's proof, which an anonymous caller must send
	// to use an id again (see clientid.go).
	Proof string
	// Multi makes a multi-room stream: it has a session, and rooms can be
	// joined and left while it is open.
	Multi bool
	// Resume is the cursor the client resumes from ("" for none).
	Resume string
	// Identity is who the stream belongs to; rooms it may not subscribe
	// to are refused, and a user's multi-room stream also carries the
	// user's private channel.
	Identity Identity
	// Caller is who a multi-room stream's session counts against: the
	// user, else the client's address. "" bounds it only in all.
	Caller string
}

// Connect opens a stream: it joins its channels, registers it under a new
// connection id, and queues what a resuming client missed (or a reset where
// that cannot be known) ahead of live events. When Connect returns, every
// event published afterwards on its channels reaches the connection.
func (h *Hub) Connect(ctx context.Context, req ConnectRequest) (_ *Connection, err error) {
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
	if err := h.checkBan(ctx, req.Identity); err != nil {
		return nil, err
	}
	conn := h.newConnection(claimedClient(req.Client, req.Proof), req.Multi)
	conn.connecting = true
	conn.epoch = epoch
	conn.claimsEpoch = epoch
	conn.identity = req.Identity
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
	var joinedAt map[string]uint64 // by the restored session
	var left []leftRoom            // by the restored session
	if req.Multi {
		conn.Session = randomID(12)
		if from != nil {
			saved, ok, err := h.bb.LoadSession(ctx, from.Session)
			switch {
			case err != nil:
				return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
			case ok:
				conn.Session = from.Session
				channels, joinedAt, left = parseSessionEntries(saved, epoch)
			default:
				resets = append(resets, Delivery{Kind: KindReset, Reason: ResetSessionExpired})
			}
		}
	}
	if req.Multi {
		// Only rooms are kept in a session; the user and namespace
		// channels follow from the identity and the rooms.
		channels = slices.DeleteFunc(channels, func(ch string) bool { return !IsRoomChannel(ch) })
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)
	if len(channels) > h.opts.MaxRooms {
		return nil, fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	if len(channels) == 0 && !req.Multi {
		return nil, fmt.Errorf("%w: no room", ErrInvalidRoom)
	}
	allowed := channels[:0:0]
	for _, ch := range channels {
		if err := h.authorize(req.Identity, ch); err != nil {
			if from == nil || !req.Multi {
				return nil, err
			}
			continue // a restored session keeps only what the token still allows
		}
		allowed = append(allowed, ch)
	}
	channels = allowed
	// A left room is replayed only while the token still allows it, a
	// namespace channel only with such a room of its namespace.
	left = slices.DeleteFunc(left, func(l leftRoom) bool { return h.authorize(req.Identity, l.name) != nil })
	left = slices.DeleteFunc(left, func(l leftRoom) bool {
		if IsRoomChannel(l.name) {
			return false
		}
		inNS := func(ch string) bool { return IsRoomChannel(ch) && NamespaceChannel(channelNamespace(ch)) == l.name }
		return !slices.ContainsFunc(channels, inNS) && !slices.ContainsFunc(left, func(o leftRoom) bool { return inNS(o.name) })
	})
	// Bound once the request is known to be valid, so that a refused
	// stream leaves no binding behind.
	conn.bindCaller = cmp.Or(req.Caller, "\x00"+conn.Client)
	_, proof, unclaim, err := h.claimClient(ctx, req.Identity, conn.bindCaller, conn.Client, req.Proof)
	if err != nil {
		return nil, err
	}
	conn.Proof = proof
	defer func() {
		if err != nil {
			unclaim() // a refused stream binds no new id
		}
	}()
	conn.boundAt = time.Now()
	conn.rooms = make(map[string]bool, len(channels))
	for _, ch := range channels {
		conn.rooms[ch] = true
	}
	channels = append(channels, implicitChannels(channels)...)
	if req.Multi && req.Identity.User != "" {
		channels = append(channels, UserChannel(req.Identity.User))
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)

	if req.Multi {
		// The session outlives the stream by SessionTTL: it counts
		// against its caller until then (Disconnect starts the clock).
		caller := cmp.Or(req.Caller, "\x00"+conn.Session)
		if !h.sessions.Take(caller, time.Time{}, conn.Session) {
			return nil, fmt.Errorf("%w: at most %d multi-room sessions of one caller are kept (for %s after their stream)",
				ErrTooManySessions, h.opts.MaxSessionsPerCaller, h.opts.SessionTTL)
		}
		conn.sessionCaller = caller
		restored := from != nil && from.Session == conn.Session
		defer func() {
			if err != nil && !restored {
				h.sessions.Release(caller, conn.Session) // never saved
			}
		}()
	}
	heads := make(map[string]uint64, len(channels))
	for _, ch := range channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		atLeast := uint64(0)
		if _, known := joinedAt[ch]; from != nil && !known {
			if _, had := from.Get(ch); !had {
				// New to the resumed stream, which may have had events
				// whose copies through it are still in flight (see joinAt).
				if atLeast, err = h.bb.Head(ctx, ch); err != nil {
					h.release(c)
					h.Disconnect(conn)
					return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
				}
			}
		}
		heads[ch] = h.joinAt(conn, c, atLeast)
	}
	conn.mu.Lock()
	for ch, j := range joinedAt {
		if _, ok := conn.joinedAt[ch]; ok {
			conn.joinedAt[ch] = j // joined then, not now
		}
	}
	// Kept until a cursor past their roomcast:left is all a resume can
	// come from: a second resume from the same old cursor needs them too.
	conn.leftRooms = left
	conn.mu.Unlock()
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
	conn.registeredAt = time.Now()

	conn.cursor = Cursor{Epoch: epoch, Session: conn.Session}
	replay, err := h.replay(ctx, conn, from, joinedAt, left, heads, &resets)
	if err != nil {
		h.Disconnect(conn)
		return nil, err
	}
	// What outlives the connection or others see — its session, its
	// presence — is written only once nothing can fail the stream any
	// more, so that a refused stream leaves none of it behind. Nobody
	// resumes the session before the stream has given out a cursor.
	if req.Multi {
		if err := h.bb.SaveSession(ctx, conn.Session, conn.sessionEntries(), h.opts.SessionTTL); err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		conn.touchedAt = time.Now()
	}
	for _, ch := range conn.Rooms() {
		h.enter(ctx, conn, ch)
	}
	conn.presentAt = time.Now()
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
	// that the replay's positions supersede. Now that every channel's
	// start is known, each multi-channel copy, replayed or live, is
	// decided: the replay's first, being earlier in every channel.
	conn.queue = slices.DeleteFunc(conn.queue, func(d Delivery) bool { return d.Kind == KindJoined || d.Kind == kindTrack })
	pending = conn.settleLocked(pending)
	conn.queue = conn.settleLocked(conn.queue)
	conn.connecting = false
	conn.replay = pending
	conn.signal()
	conn.mu.Unlock()
	return conn, nil
}

// replay collects the retained events of each channel between the resume
// cursor and the join point, merged into Seq order, each event once, and
// sets the writer's starting positions.
func (h *Hub) replay(ctx context.Context, conn *Connection, from *Cursor, joinedAt map[string]uint64, left []leftRoom, heads map[string]uint64, resets *[]Delivery) ([]Delivery, error) {
	var events []Delivery
	var marks []leaveMark
	leftBy := make(map[string]leftRoom, len(left))
	for _, l := range left {
		leftBy[l.name] = l
	}
	for ch, head := range heads {
		pos, ok := uint64(0), false
		if from != nil {
			pos, ok = from.Get(ch)
			if !ok && !conn.multi && !strings.HasPrefix(ch, namespaceChannelPrefix) {
				// A single-room cursor that does not know its own room
				// was made for another stream: what was missed is unknown.
				*resets = append(*resets, Delivery{Kind: KindReset, Channel: ch, Reason: ResetCursorInvalid})
			}
		}
		// A channel the cursor has was held before: its copies up to the
		// cursor reached the client, except those at or below the point
		// where it was started, which never came through it (a sibling
		// channel delivered them); the replay and live bring the rest. A
		// channel the cursor lacks starts here, at its head, and the
		// cursor says so, for the same reason.
		start := head
		if ok {
			start = from.From(ch)
		} else if j, known := joinedAt[ch]; known {
			// A room of the session joined after the cursor was
			// written: the stream had every event since the join
			// (copies up to it came through sibling rooms).
			pos, ok, start = j, true, j
		}
		if ok {
			conn.mu.Lock()
			m := conn.joined[ch]
			m.from = start
			m.got = max(m.got, pos)
			conn.joined[ch] = m
			conn.mu.Unlock()
		}
		startAt := func(seq uint64) {
			conn.cursor.Set(ch, seq)
			if conn.multi && IsRoomChannel(ch) && start <= seq {
				conn.cursor.setFrom(ch, start)
			}
		}
		if ok && pos > head {
			// The cursor is ahead of what this instance has seen of the
			// channel: either its live feed lags another instance's by a
			// moment, or the backbone's history went backwards.
			bbHead, err := h.bb.Head(ctx, ch)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
			}
			if pos > bbHead {
				*resets = append(*resets, Delivery{Kind: KindReset, Channel: ch, Reason: ResetHistoryLost})
				startAt(head)
				continue
			}
			// Lagging: what arrives live up to pos was seen already.
			conn.mu.Lock()
			if conn.floor == nil {
				conn.floor = make(map[string]uint64)
			}
			conn.floor[ch] = pos
			conn.mu.Unlock()
			startAt(pos)
			continue
		}
		if !ok || pos == head {
			startAt(head)
			continue
		}
		// A room left after the cursor was written and joined again:
		// the stream had its events up to the leave, roomcast:left,
		// roomcast:joined, then its events since the join.
		l, rejoined := leftBy[ch]
		j, joinKnown := joinedAt[ch]
		// A cursor written after the join has the room at j or past it.
		rejoined = rejoined && joinKnown && pos <= l.leave && l.leave < j && j <= head
		if rejoined {
			conn.mu.Lock()
			m := conn.joined[ch]
			m.from = j
			conn.joined[ch] = m
			if conn.left == nil {
				conn.left = make(map[string]membership)
			}
			conn.left[ch] = membership{from: start, got: l.leave}
			conn.mu.Unlock()
		}
		startAt(pos)
		hist, err := h.replayFrom(ctx, ch, pos)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		if hist.Truncated || (hist.More && hist.Events[len(hist.Events)-1].Seq < head) {
			*resets = append(*resets, Delivery{Kind: KindReset, Channel: ch, Reason: ResetCursorExpired})
			// The channel starts over at its head: a sibling still
			// behind it delivers the copies up to there.
			start = head
			conn.mu.Lock()
			m := conn.joined[ch]
			m.from = head
			conn.joined[ch] = m
			if rejoined {
				conn.left[ch] = membership{from: head, got: head} // none of its copies comes
			}
			conn.mu.Unlock()
			startAt(head)
			continue
		}
		for _, ev := range hist.Events {
			i := ev.ChannelIndex(ch)
			p := ev.Position(i)
			if p > head {
				break
			}
			if rejoined && p > l.leave && p <= j {
				continue // published while the room was not held
			}
			if !ev.Excludes(conn.Client) {
				events = append(events, Delivery{Kind: KindEvent, Event: ev, Index: i})
			}
		}
		if rejoined {
			marks = append(marks, leaveMark{channel: ch, leave: l.leave, reason: l.reason, rejoined: true, join: j})
		}
	}
	for _, l := range left {
		if _, held := heads[l.name]; held {
			continue
		}
		ds, mark, err := h.replayLeft(ctx, conn, from, l, resets)
		if err != nil {
			return nil, err
		}
		events = append(events, ds...)
		if mark.channel != "" {
			marks = append(marks, mark)
		}
	}
	// Every copy is kept, each channel's in its order: Connect decides
	// which one of a multi-channel event's copies delivers it, and the
	// others move their channel's position.
	slices.SortStableFunc(events, func(a, b Delivery) int { return cmp.Compare(a.Event.Seq, b.Event.Seq) })
	// A leave's roomcast:left follows the room's last replayed event
	// before the leave; a join's roomcast:joined comes just before the
	// room's first event after the join, or last.
	// A room's leave that took its namespace channel comes after that
	// channel's events up to the leave too.
	took := make(map[string]leaveMark)
	for _, mk := range marks {
		if mk.with != "" {
			took[mk.with] = mk
		}
	}
	for _, mk := range marks {
		at := 0
		for k, d := range events {
			if d.Kind != KindEvent {
				continue
			}
			ch, p := d.Event.Channels[d.Index], d.Event.Position(d.Index)
			ns, ok := took[mk.channel]
			if (ch == mk.channel && p <= mk.leave) || (ok && ch == ns.channel && p <= ns.leave) {
				at = k + 1
			}
		}
		left, joined := KindLeft, KindJoined
		if !IsRoomChannel(mk.channel) {
			left, joined = kindUntrack, kindTrack // a namespace channel's, unseen
		}
		events = slices.Insert(events, at, Delivery{Kind: left, Channel: mk.channel, Reason: mk.reason})
		if !mk.rejoined {
			continue
		}
		at = len(events)
		for k, d := range events {
			if d.Kind == KindEvent && d.Event.Channels[d.Index] == mk.channel && d.Event.Position(d.Index) > mk.join {
				at = k
				break
			}
		}
		events = slices.Insert(events, at, Delivery{Kind: joined, Channel: mk.channel, seq: mk.join})
	}
	return events, nil
}

// leaveMark is a leave after the resume cursor: of channel, at position
// leave, and when rejoined, the join after it at position join.
type leaveMark struct {
	channel     string
	leave, join uint64
	reason      string
	rejoined    bool
	with        string // see leftRoom
}

// replayLeft returns the events of room l, which the session left and
// the connection does not hold, that a resume from the cursor from must
// replay: those from the cursor up to where the room was left, and the
// roomcast:left the stream sent after them — so the resumed stream goes on
// exactly as the one it resumes did. The room is not joined again; its
// copies of multi-channel events count as those of a room left
// (Connection.left), which decides, with the other rooms' copies, which
// one delivers each.
func (h *Hub) replayLeft(ctx context.Context, conn *Connection, from *Cursor, l leftRoom, resets *[]Delivery) ([]Delivery, leaveMark, error) {
	if from == nil {
		return nil, leaveMark{}, nil
	}
	pos, ok := from.Get(l.name)
	if !ok {
		// Written after the roomcast:left, or before the join.
		return nil, leaveMark{}, nil
	}
	start := from.From(l.name)
	conn.cursor.Set(l.name, pos)
	if start <= pos {
		conn.cursor.setFrom(l.name, start)
	}
	got := l.leave
	var events []Delivery
	if pos < l.leave {
		hist, err := h.replayFrom(ctx, l.name, pos)
		if err != nil {
			return nil, leaveMark{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		if hist.Truncated || (hist.More && hist.Events[len(hist.Events)-1].Seq < l.leave) {
			*resets = append(*resets, Delivery{Kind: KindReset, Channel: l.name, Reason: ResetCursorExpired})
			start, got = l.leave, l.leave // none of its copies comes
		} else {
			for _, ev := range hist.Events {
				i := ev.ChannelIndex(l.name)
				if ev.Position(i) > l.leave {
					break
				}
				if !ev.Excludes(conn.Client) {
					events = append(events, Delivery{Kind: KindEvent, Event: ev, Index: i})
				}
			}
		}
	}
	conn.mu.Lock()
	if conn.left == nil {
		conn.left = make(map[string]membership)
	}
	conn.left[l.name] = membership{from: start, got: got}
	conn.mu.Unlock()
	return events, leaveMark{channel: l.name, leave: l.leave, reason: l.reason, with: l.with}, nil
}

// replayFrom reads the history a resume needs. When many clients of one
// room resume from the same position at once, as after an instance died,
// they share one read.
func (h *Hub) replayFrom(ctx context.Context, ch string, pos uint64) (History, error) {
	key := ch + "\x00" + strconv.FormatUint(pos, 10)
	h.replayWaiting.Add(1)
	defer h.replayWaiting.Add(-1)
	v, err, _ := h.replays.Do(key, func() (any, error) {
		// The read serves every waiter: it must not end with the first
		// one's request.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return h.bb.Since(rctx, ch, pos, h.opts.ReplayLimit)
	})
	if err != nil {
		return History{}, err
	}
	return v.(History), nil
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
		joined:     make(map[string]membership),
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),

		identityChanged: make(chan struct{}, 1),
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
	conn.joined = make(map[string]membership)
	present := conn.present
	conn.present = nil
	conn.closed = true
	conn.mu.Unlock()
	for _, m := range joined {
		h.part(conn, m.c)
	}
	for _, ch := range present {
		h.exit(conn.ID, ch)
	}
	if conn.sessionCaller != "" {
		h.sessions.Take(conn.sessionCaller, time.Now().Add(h.opts.SessionTTL), conn.Session)
	}
}

// Sessions returns how many multi-room sessions the hub counts as kept:
// of its open streams, and of streams that ended within SessionTTL.
func (h *Hub) Sessions() int { return h.sessions.Held() }

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
func (h *Hub) Join(ctx context.Context, caller Identity, id, channel string) error {
	conn, forwarded, err := h.changeable(ctx, caller, "join", id, channel)
	if conn == nil || forwarded {
		return err
	}
	if err := h.authorize(conn.Identity(), channel); err != nil {
		return err
	}
	// Joins and leaves of one connection are applied one at a time, so
	// that the room count and the namespace channels stay exact.
	conn.changing.Lock()
	defer conn.changing.Unlock()
	conn.mu.Lock()
	already := conn.rooms[channel]
	n := len(conn.rooms)
	conn.mu.Unlock()
	if already {
		return nil
	}
	if n >= h.opts.MaxRooms {
		return fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	want := []string{channel}
	if ns := NamespaceChannel(channelNamespace(channel)); !conn.inNamespace(ns) {
		want = append(want, ns)
	}
	// A join that fails takes back what it did, so that an error leaves
	// the connection as it was.
	var joinedNow []string
	undo := func() {
		conn.mu.Lock()
		var cs []*hubChannel
		for _, ch := range joinedNow {
			if m, ok := conn.joined[ch]; ok {
				delete(conn.joined, ch)
				cs = append(cs, m.c)
				conn.leftLocked(ch, m)
			}
		}
		conn.mu.Unlock()
		for _, c := range cs {
			h.part(conn, c)
		}
	}
	for _, ch := range want {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			undo()
			return fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		conn.mu.Lock()
		closed := conn.closed
		_, raced := conn.joined[ch]
		conn.mu.Unlock()
		if closed || raced {
			h.release(c)
			if closed {
				return ErrUnknownConnection
			}
			continue
		}
		atLeast, err := h.bb.Head(ctx, ch)
		if err != nil {
			h.release(c)
			undo()
			return fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		h.joinAt(conn, c, atLeast)
		joinedNow = append(joinedNow, ch)
	}
	conn.mu.Lock()
	conn.rooms[channel] = true
	conn.mu.Unlock()
	if err := h.saveSession(ctx, conn); err != nil {
		// The session would not name the room (a resume would lose it):
		// the join is undone, before anyone saw it in presence.
		h.leave(conn, channel, "")
		return err
	}
	h.enter(ctx, conn, channel)
	return nil
}

// changeable finds the multi-room connection id that caller may change. A
// connection held by another instance gets op forwarded there: forwarded is
// then true and err is the outcome.
func (h *Hub) changeable(ctx context.Context, caller Identity, op, id, channel string) (conn *Connection, forwarded bool, err error) {
	conn, err = h.Lookup(id)
	if err != nil {
		return nil, true, h.forward(ctx, caller, op, id, channel)
	}
	if err := conn.ownedBy(caller); err != nil {
		return nil, false, err
	}
	if !conn.multi {
		return nil, false, fmt.Errorf("%w: %s rooms on a /v1/stream connection", ErrSingleRoom, op)
	}
	return conn, false, nil
}

// Leave removes channel from the live multi-room connection id.
func (h *Hub) Leave(ctx context.Context, caller Identity, id, channel string) error {
	conn, forwarded, err := h.changeable(ctx, caller, "leave", id, channel)
	if conn == nil || forwarded {
		return err
	}
	conn.changing.Lock()
	defer conn.changing.Unlock()
	h.leave(conn, channel, "")
	return h.saveSession(ctx, conn)
}

// leave takes conn out of room channel, and out of its namespace channel
// when it was the last room there; reason ("" for a requested leave) goes
// with the roomcast:left event. conn.changing must be held.
func (h *Hub) leave(conn *Connection, channel, reason string) {
	conn.mu.Lock()
	if !conn.rooms[channel] {
		conn.mu.Unlock()
		return
	}
	delete(conn.rooms, channel)
	conn.present = slices.DeleteFunc(conn.present, func(ch string) bool { return ch == channel })
	parts := []string{channel}
	if ns := NamespaceChannel(channelNamespace(channel)); !conn.inNamespaceLocked(ns) {
		parts = append(parts, ns)
	}
	var cs []*hubChannel
	leftAt := make(map[string]uint64, len(parts)) // each channel's position at the leave
	for _, ch := range parts {
		if m, ok := conn.joined[ch]; ok {
			delete(conn.joined, ch)
			delete(conn.joinedAt, ch)
			cs = append(cs, m.c)
			conn.leftLocked(ch, m)
			leftAt[ch] = m.got
		}
	}
	conn.mu.Unlock()
	for _, c := range cs {
		// Events of the channel up to its head when it let the
		// connection go were queued ahead of the roomcast:left.
		leftAt[c.name] = max(leftAt[c.name], h.part(conn, c))
	}
	if conn.multi {
		// The namespace channel too: its broadcasts up to the leave
		// reached the stream.
		conn.mu.Lock()
		for _, ch := range parts {
			if p, ok := leftAt[ch]; ok {
				if ch == channel {
					conn.rememberLeftLocked(ch, p, reason, "")
				} else {
					conn.rememberLeftLocked(ch, p, "", channel)
				}
			}
		}
		conn.mu.Unlock()
	}
	h.exit(conn.ID, channel)
	if !conn.multi && reason != "" {
		// A stream of one room has nothing left to carry.
		conn.Close(CloseReason{Code: reason, Message: "the stream's room was taken away (" + reason + ")"})
		return
	}
	conn.control(Delivery{Kind: KindLeft, Channel: channel, Reason: reason})
	for _, ch := range parts[1:] {
		conn.control(Delivery{Kind: kindUntrack, Channel: ch})
	}
}

// ErrPresenceOff is returned for presence in a namespace that does not keep it.
var ErrPresenceOff = errors.New("presence is off")

// presenceRules says whether the room channel keeps presence and announces
// joins and leaves.
func (h *Hub) presenceRules(channel string) (on, announce bool) {
	if h.presence == nil || !IsRoomChannel(channel) {
		return false, false
	}
	if h.opts.Namespaces == nil {
		return true, true
	}
	o, err := h.opts.Namespaces.Lookup(channelNamespace(channel))
	if err != nil {
		return false, false
	}
	return o.Presence, o.Presence && o.JoinLeaveEvents
}

// enter records conn's presence in room channel. Presence is advisory: a
// failure to record it does not fail the stream.
func (h *Hub) enter(ctx context.Context, conn *Connection, channel string) {
	on, announce := h.presenceRules(channel)
	if !on {
		return
	}
	id := conn.Identity()
	conn.mu.Lock()
	conn.present = append(conn.present, channel)
	conn.mu.Unlock()
	_ = h.presence.Enter(ctx, channel, Member{Conn: conn.ID, Client: conn.Client, User: id.User, Name: id.Name}, announce)
}

// exit removes connection conn's presence from room channel.
func (h *Hub) exit(conn, channel string) {
	if on, _ := h.presenceRules(channel); !on {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.presence.Leave(ctx, channel, conn)
}

// Presence lists who is in room channel, for callers allowed to subscribe to it.
func (h *Hub) Presence(ctx context.Context, caller Identity, channel string) (PresenceList, error) {
	if err := h.authorize(caller, channel); err != nil {
		return PresenceList{}, err
	}
	if on, _ := h.presenceRules(channel); !on {
		return PresenceList{}, fmt.Errorf("%w for room %q", ErrPresenceOff, channel)
	}
	return h.presence.List(ctx, channel)
}

// Authorize checks that id may subscribe to channel, as a stream would.
func (h *Hub) Authorize(id Identity, channel string) error { return h.authorize(id, channel) }

// Refresh replaces the identity of connection id with next, a fresh token
// of the same user, so that a long-lived stream outlives its first token.
// Rooms the new token does not allow are left with reason "forbidden".
func (h *Hub) Refresh(ctx context.Context, next Identity, id string) error {
	conn, err := h.Lookup(id)
	if err != nil {
		return h.forwardRefresh(ctx, next, id)
	}
	cur := conn.Identity()
	if cur.User == "" || next.User != cur.User {
		return fmt.Errorf("%w: only a token of the connection's own user can refresh it", ErrForbidden)
	}
	conn.changing.Lock()
	defer conn.changing.Unlock()
	conn.mu.Lock()
	conn.identity = next
	conn.mu.Unlock()
	for _, ch := range conn.Rooms() {
		if h.authorize(next, ch) != nil {
			h.leave(conn, ch, "forbidden")
		}
	}
	conn.identityGen.Add(1)
	select {
	case conn.identityChanged <- struct{}{}:
	default:
	}
	conn.mu.Lock()
	conn.signal()
	conn.mu.Unlock()
	if conn.multi {
		return h.saveSession(ctx, conn)
	}
	return nil
}

func (h *Hub) forwardRefresh(ctx context.Context, next Identity, id string) error {
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
	return h.dir.Forward(ctx, info.Owner, Command{Op: "refresh", Connection: id, Identity: &next})
}

// authorize checks that id may subscribe to channel. User channels belong
// to their user alone; namespace channels come with the rooms.
func (h *Hub) authorize(id Identity, channel string) error {
	switch {
	case strings.HasPrefix(channel, userChannelPrefix):
		if id.Server || id.User == strings.TrimPrefix(channel, userChannelPrefix) {
			return nil
		}
		return fmt.Errorf("%w: a user's channel is theirs alone", ErrForbidden)
	case !IsRoomChannel(channel):
		return nil
	case h.opts.Namespaces == nil:
		return nil
	}
	room, err := ParseRoom(channel)
	if err != nil {
		return err
	}
	return h.opts.Namespaces.CanSubscribe(id, room)
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

func (h *Hub) saveSession(ctx context.Context, conn *Connection) error {
	if err := h.bb.SaveSession(ctx, conn.Session, conn.sessionEntries(), h.opts.SessionTTL); err != nil {
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
	now := time.Now()
	epoch, epochKnown := h.backboneEpoch(ctx, now)
	conn.mu.Lock()
	if epochKnown && epoch != conn.claimsEpoch {
		// The backbone lost its data (Redis restarted without
		// persistence): the registration, client-id binding, session and
		// presence this connection holds are gone, and are written again
		// now rather than a quarter of their TTL later, meanwhile refused
		// as proofs and free for anyone to claim.
		conn.claimsEpoch = epoch
		conn.registeredAt, conn.touchedAt, conn.boundAt, conn.presentAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	}
	register := h.dir != nil && now.Sub(conn.registeredAt) > registrationTTL/4
	session := conn.multi && now.Sub(conn.touchedAt) > h.opts.SessionTTL/4
	bind := now.Sub(conn.boundAt) > h.opts.ClientTTL/4
	if register {
		conn.registeredAt = now
	}
	if bind {
		conn.boundAt = now
	}
	conn.mu.Unlock()
	if register {
		if err := h.register(ctx, conn); err != nil {
			return err
		}
	}
	if bind {
		// The stream keeps its client id for as long as it lives.
		err := h.renewClient(ctx, conn.Identity(), conn.bindCaller, conn.Proof)
		if errors.Is(err, ErrClientInUse) {
			// Another caller bound the id while the backbone had lost
			// this stream's binding (Redis restarted empty): it now
			// speaks for the id, and could exclude this stream from what
			// it publishes. The stream goes; its client comes back under
			// a fresh id.
			conn.Close(CloseReason{Code: CloseClientInUse, Message: "another caller holds this stream's client id; reconnect under a fresh one"})
			return nil
		}
		if err != nil {
			return err
		}
	}
	if h.presence != nil && now.Sub(conn.presentAt) > h.opts.PresenceRenew {
		// Presence shared between instances expires unless renewed, so
		// that an instance that dies takes its members with it.
		conn.presentAt = now
		id := conn.Identity()
		conn.mu.Lock()
		present := slices.Clone(conn.present)
		conn.mu.Unlock()
		for _, ch := range present {
			_, announce := h.presenceRules(ch)
			_ = h.presence.Enter(ctx, ch, Member{Conn: conn.ID, Client: conn.Client, User: id.User, Name: id.Name}, announce)
		}
	}
	if session {
		return h.saveSession(ctx, conn)
	}
	return nil
}

// epochCheckInterval is how often, at most, the hub reads the backbone's
// epoch to notice that the backbone lost its data.
const epochCheckInterval = time.Second

// backboneEpoch returns the backbone's epoch, read at most once per
// epochCheckInterval for all the connections of the hub; ok is false when
// it is unknown (the backbone is down).
func (h *Hub) backboneEpoch(ctx context.Context, now time.Time) (string, bool) {
	h.epochMu.Lock()
	if now.Sub(h.epochReadAt) < epochCheckInterval {
		defer h.epochMu.Unlock()
		return h.epochRead, h.epochRead != ""
	}
	h.epochReadAt = now
	h.epochMu.Unlock()
	epoch, err := h.bb.Epoch(ctx)
	h.epochMu.Lock()
	defer h.epochMu.Unlock()
	if err != nil {
		h.epochRead = ""
		return "", false
	}
	h.epochRead = epoch
	return epoch, true
}

// Drain refuses new connections from now on and closes every open one with
// a reconnect delay chosen by delay.
func (h *Hub) Drain(delay func() time.Duration) {
	h.mu.Lock()
	if !h.draining {
		close(h.drained)
	}
	h.draining = true
	h.mu.Unlock()
	h.closePollSessions()
	h.mu.Lock()
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

// Rooms returns how many rooms the hub holds backbone subscriptions for:
// Channels without the user, namespace and control channels.
func (h *Hub) Rooms() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for ch := range h.channels {
		if IsRoomChannel(ch) {
			n++
		}
	}
	return n
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
