package rooms

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
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

// MaxRooms returns how many rooms one connection may hold.
func (h *Hub) MaxRooms() int { return h.opts.MaxRooms }

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

// Start subscribes the hub to the control channel, through which bans and
// kicks reach the connections of every instance. Serve no connection
// before it returns.
func (h *Hub) Start(ctx context.Context) error {
	if _, ok := BackboneAs[Moderator](h.bb); !ok {
		return nil
	}
	if _, err := h.acquire(ctx, controlChannel); err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	return nil
}
