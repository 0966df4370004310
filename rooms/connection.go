package rooms

import (
	"cmp"
	"fmt"
	"iter"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DeliveryKind says what a Delivery carries.
type DeliveryKind uint8

const (
	// KindEvent is an event for the subscriber.
	KindEvent DeliveryKind = iota
	// KindReset tells the subscriber that events of Channel were lost to it.
	KindReset
	// KindJoined and KindLeft confirm, in order with the events around
	// them, that Channel was joined or left while the stream was open.
	KindJoined
	KindLeft
	// The kinds below are cursor bookkeeping that Drain applies without
	// yielding them: they must stay after the exported ones.

	// kindSettled lifts every position to the join point once a replay
	// is complete.
	kindSettled
	// kindTrack and kindUntrack add and remove a channel implied by the
	// rooms (a namespace's) from the cursor without telling the client.
	kindTrack
	kindUntrack
	// kindPass is a copy of a multi-channel event that the connection
	// delivers through another of the event's channels: it only moves
	// its own channel's position.
	kindPass
)

// Delivery is one item of a connection's outgoing queue.
type Delivery struct {
	Kind DeliveryKind
	// Event and Index (into Event.Channels) are set for KindEvent.
	Event *Event
	Index int
	// Channel and Reason are set for KindReset; Channel is "" when the
	// reset concerns every channel of the connection.
	Channel string
	Reason  string
	// seq is a channel's position for the bookkeeping kinds. For
	// KindEvent and kindPass it marks instead, by index into
	// Event.Channels, further channels whose copies of the event the
	// delivery stands for, moving their positions too (see
	// queuePassLocked): one field, so that a queued delivery stays as
	// small as it was.
	seq   uint64
	epoch string // set on a reset caused by a new backbone epoch
}

// Reset reasons, sent as the data of roomcast:reset.
const (
	ResetCursorExpired  = "cursor_expired"
	ResetCursorInvalid  = "cursor_invalid"
	ResetHistoryLost    = "history_lost"
	ResetSessionExpired = "session_expired"
)

// CloseReason says why the server ended a connection and what the client
// should do. Error reasons are written as roomcast:error, others as
// roomcast:closing.
type CloseReason struct {
	Code        string
	Message     string
	Error       bool
	ReconnectMS int
}

// Close codes.
const (
	CloseShutdown     = "shutdown"
	CloseSlowConsumer = "slow_consumer"
	CloseMaxLifetime  = "max_lifetime"
	CloseTokenExpired = "token_expired"
	CloseBanned       = "banned"
	CloseClientInUse  = "client_in_use"
)

// maxLeftKept bounds the left channels a connection remembers (see
// Connection.left): past it they are forgotten at once.
const maxLeftKept = 64

// maxLeftInSession bounds the left rooms a multi-room session keeps (see
// Connection.leftRooms): a resume from a cursor written before the leave
// of an older one replays that room up to the resume's live start.
const maxLeftInSession = 16

// leftRoom is a room a multi-room stream left: events of it up to
// position leave reached the stream, and roomcast:left came after them.
type leftRoom struct {
	name   string
	leave  uint64
	reason string // of the roomcast:left
	// with is, for a namespace channel, the room whose leave took it.
	with string
}

// leftSessionPrefix starts a session entry for a left room. It is not a
// room name, so that a relay that does not know the entry drops it.
const leftSessionPrefix = "#left\x00"

// Connection is one subscriber: a live stream or a held poll. Events are
// queued by the Hub without blocking and taken by the connection's single
// writer, which owns the cursor.
type Connection struct {
	// ID is the connection's secret handle: whoever holds it may change
	// the connection's rooms.
	ID string
	// Client is the client id, stable across a client's reconnects.
	Client string
	// Proof proves Client (see clientid.go): the stream hands it to its
	// client, to use the id again and to name itself when publishing.
	Proof string
	// Session is the multi-room session id, "" for single-room streams and polls.
	Session string
	// sessionCaller is who the session counts against (Hub.sessions).
	sessionCaller string
	// bindCaller is who the client id's binding counts against
	// (Hub.bindings).
	bindCaller string

	hub        *Hub
	queueLimit int
	multi      bool

	// changing serialises joins and leaves of this connection.
	changing sync.Mutex

	mu       sync.Mutex
	epoch    string
	identity Identity
	rooms    map[string]bool // the rooms asked for
	present  []string        // rooms whose presence lists the connection
	// floor holds, per channel, a resume position this instance had not
	// reached yet: live events up to it were seen already.
	floor  map[string]uint64
	joined map[string]membership // rooms and the channels they imply
	// joinedAt holds, for the rooms of a multi-room stream, the position
	// (in epoch) each was joined at, kept in the session (see
	// sessionEntries) so that a resume from a cursor written before a
	// join replays the room from there.
	joinedAt map[string]uint64
	// leftRooms holds, for a multi-room stream, the rooms it left most
	// recently (at most maxLeftInSession, oldest first) with the position
	// each was left at, kept in the session so that a resume from a
	// cursor written before a roomcast:left replays the room up to there
	// and then sends the roomcast:left again.
	leftRooms []leftRoom
	// left keeps the memberships of channels left while the stream is
	// open, so that a late copy of an event delivered through one of
	// them is not delivered again; nil until a channel is left.
	left map[string]membership
	// owed holds, by the channel chosen to deliver them, the multi-channel
	// events whose copy came through another channel first: if that
	// channel is left before its copy came, they are delivered through a
	// channel still held. owedCount is their number, bounded by the queue.
	owed      map[string][]owedCopy
	owedCount int
	// connecting is set while Connect joins and replays: copies are
	// queued undecided, and settled once every channel's start is known.
	connecting bool
	queue      []Delivery
	replay     []Delivery
	closed     bool
	reason     CloseReason
	dropped    uint64
	notify     chan struct{}
	done       chan struct{}
	// identityChanged is signalled when a token refresh replaced the identity.
	identityChanged chan struct{}
	// closedFlag and identityGen mirror closed and identity changes for
	// writers that poll them per write, cheaper than a channel receive.
	closedFlag  atomic.Bool
	identityGen atomic.Uint64
	// onReady, when set, is called wherever Ready is signalled.
	onReady      atomic.Pointer[func()]
	touchedAt    time.Time // session last saved
	registeredAt time.Time // directory entry last written
	presentAt    time.Time // presence last renewed
	boundAt      time.Time // client id binding last renewed
	// claimsEpoch is the backbone epoch the four above were written in.
	claimsEpoch string

	// Owned by the writer (see Drain).
	cursor Cursor
	taken  []Delivery // taken from the queue, yielded up to next
	next   int
	// lastEvent and lastIndex are the single-room event in hand inside a
	// Drain loop, whose cursor AppendCursor may share with its other
	// subscribers; nil otherwise.
	lastEvent *Event
	lastIndex int
}

// Ready is signalled whenever deliveries are waiting to be taken.
func (c *Connection) Ready() <-chan struct{} { return c.notify }

// IdentityChanged is signalled when a token refresh replaced the identity.
func (c *Connection) IdentityChanged() <-chan struct{} { return c.identityChanged }

// IdentityGeneration counts the identity's replacements: a writer that saw
// another number last time reschedules its token timers.
func (c *Connection) IdentityGeneration() uint64 { return c.identityGen.Load() }

// Closed reports whether Done is closed.
func (c *Connection) Closed() bool { return c.closedFlag.Load() }

// Done is closed when the server ends the connection; Reason says why.
func (c *Connection) Done() <-chan struct{} { return c.done }

// Reason returns why the connection was closed by the server.
func (c *Connection) Reason() CloseReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// Rooms returns the rooms the connection is in, sorted; the user and
// namespace channels they imply are not listed.
func (c *Connection) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.rooms))
	for ch := range c.rooms {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

// rememberLeftLocked records that room ch was left at position leave, the
// latest leave last, forgetting the oldest past maxLeftInSession.
func (c *Connection) rememberLeftLocked(ch string, leave uint64, reason, with string) {
	c.leftRooms = slices.DeleteFunc(c.leftRooms, func(l leftRoom) bool { return l.name == ch })
	if len(c.leftRooms) >= maxLeftInSession {
		c.leftRooms = slices.Delete(c.leftRooms, 0, len(c.leftRooms)-maxLeftInSession+1)
	}
	c.leftRooms = append(c.leftRooms, leftRoom{name: ch, leave: leave, reason: reason, with: with})
}

// Identity returns who the connection belongs to.
func (c *Connection) Identity() Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identity
}

// ownedBy checks that caller may change the connection: anyone holding
// the id of an anonymous connection, the same user, or the server.
func (c *Connection) ownedBy(caller Identity) error {
	owner := c.Identity()
	if owner.User == "" || caller.Server || caller.User == owner.User {
		return nil
	}
	if caller.Anonymous() {
		return fmt.Errorf("%w: the connection belongs to a user: send that user's token", ErrUnauthenticated)
	}
	return fmt.Errorf("%w: the connection belongs to another user", ErrForbidden)
}

// inNamespace reports whether one of the connection's rooms is in the
// namespace whose channel is ns.
func (c *Connection) inNamespace(ns string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inNamespaceLocked(ns)
}

func (c *Connection) inNamespaceLocked(ns string) bool {
	for ch := range c.rooms {
		if NamespaceChannel(channelNamespace(ch)) == ns {
			return true
		}
	}
	return false
}

// Dropped returns how many volatile events were dropped for this slow connection.
func (c *Connection) Dropped() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// take appends every waiting delivery to dst, in order, and returns it.
// Only the connection's writer may call it (through Drain) or a poll,
// which keeps its own cursor.
func (c *Connection) take(dst []Delivery) []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.replay != nil {
		dst = append(dst, c.replay...)
		c.replay = nil
	}
	dst = append(dst, c.queue...)
	clear(c.queue)
	c.queue = c.queue[:0]
	return dst
}

// Drain yields the deliveries waiting for the client, in order, the
// cursor already moved past each one when it is yielded: AppendCursor in
// the loop's body appends the cursor a client resumes from after it. The
// writer cannot forget to advance, nor advance out of order. The cursor
// keeps a position per channel, each moved by that channel's deliveries
// alone: nothing assumes a sequence across channels. Bookkeeping the
// client is not told of (a pass of a multi-channel event through a second
// channel, a replay settled, an implied channel tracked) moves the cursor
// without being yielded. A loop that stops early leaves the rest, with
// Ready signalled again, for the next Drain. The yielded Delivery is valid
// for that iteration only. Only the connection's writer may call it.
func (c *Connection) Drain() iter.Seq[*Delivery] {
	return func(yield func(*Delivery) bool) {
		// What an earlier loop left goes first, then what was queued since.
		n := copy(c.taken, c.taken[c.next:])
		clear(c.taken[n:])
		c.taken, c.next = c.take(c.taken[:n]), 0
		for c.next < len(c.taken) {
			d := &c.taken[c.next]
			c.next++
			c.advance(d)
			if d.Kind > KindLeft {
				continue
			}
			if d.Kind == KindEvent && !c.multi {
				c.lastEvent, c.lastIndex = d.Event, d.Index
			}
			ok := yield(d)
			c.lastEvent = nil
			if !ok {
				if c.next < len(c.taken) {
					c.mu.Lock()
					c.signal()
					c.mu.Unlock()
				}
				return
			}
		}
		clear(c.taken)
		c.taken, c.next = c.taken[:0], 0
	}
}

// AppendCursor appends the cursor a client resumes from: inside a Drain
// loop, the one after the delivery in hand. Only the connection's writer
// may call it.
func (c *Connection) AppendCursor(dst []byte) []byte {
	ev := c.lastEvent
	if ev == nil {
		return c.hub.codec.AppendEncoded(dst, c.cursor)
	}
	// Subscribers of one room who have seen the same events hold the same
	// cursor after this one: sign it once per event, not per subscriber.
	if p := ev.cursors[c.lastIndex].Load(); p != nil && p.epoch == c.cursor.Epoch && slices.Equal(p.positions, c.cursor.Positions) {
		return append(dst, p.text...)
	}
	cc := &cachedCursor{epoch: c.cursor.Epoch, positions: slices.Clone(c.cursor.Positions)}
	cc.text = c.hub.codec.AppendEncoded(nil, c.cursor)
	ev.cursors[c.lastIndex].Store(cc)
	return append(dst, cc.text...)
}

func (c *Connection) advance(d *Delivery) {
	switch d.Kind {
	case KindEvent, kindPass:
		// Only the channel the copy came through: a sibling channel's
		// position moves with its own copy, in its own order, so that
		// it never claims events of that channel not written yet.
		ev := d.Event
		if ev.Volatile {
			return
		}
		c.cursor.Epoch = ev.Epoch
		c.cursor.raise(ev.Channels[d.Index], ev.Position(d.Index))
		for also := d.seq; also != 0; also &= also - 1 {
			j := bits.TrailingZeros64(also)
			c.cursor.raise(ev.Channels[j], ev.Position(j))
		}
	case KindReset:
		if d.epoch != "" {
			c.cursor.Epoch = d.epoch
			for i := range c.cursor.Positions {
				c.cursor.Positions[i].Seq, c.cursor.Positions[i].From = 0, 0
			}
		}
	case KindJoined, kindTrack:
		if _, ok := c.cursor.Get(d.Channel); !ok {
			c.cursor.Set(d.Channel, d.seq)
			if d.Kind == KindJoined {
				// A resume must know that copies up to the join
				// point never came through the room: a sibling
				// room still behind it delivers them.
				c.cursor.setFrom(d.Channel, d.seq)
			}
		}
	case KindLeft, kindUntrack:
		c.cursor.Delete(d.Channel)
	case kindSettled:
		if p, ok := c.cursor.Get(d.Channel); ok && p < d.seq {
			c.cursor.Set(d.Channel, d.seq)
		}
	}
}

// deliver queues ev, seen through its channel i, without blocking. The hub
// calls it while holding that channel's lock, so per channel it is called
// in the channel's order.
func (c *Connection) deliver(ev *Event, i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	kind := KindEvent
	if len(ev.Channels) > 1 {
		var ok bool
		if kind, ok = c.receiveCopyLocked(ev, i); !ok {
			return
		}
	} else if f, ok := c.floor[ev.Channels[i]]; ok && !ev.Volatile {
		if ev.Position(i) <= f {
			return // seen through another instance before this resume
		}
		delete(c.floor, ev.Channels[i])
	}
	if ev.Excludes(c.Client) {
		return
	}
	if ev.Volatile {
		// Volatile events are the first to go: they may only use
		// the first half of the queue.
		if len(c.queue) >= c.queueLimit/2 {
			c.dropped++
			c.hub.opts.Observer.Dropped(1)
			return
		}
	} else if len(c.queue) >= c.queueLimit {
		c.slowConsumerLocked()
		return
	}
	if kind == kindPass && c.queuePassLocked(ev, i) {
		return
	}
	c.queue = append(c.queue, Delivery{Kind: kind, Event: ev, Index: i})
	c.signal()
}

// queuePassLocked folds the pass of ev's copy through channel i into the
// last queued delivery when that one stands for the same event, or is a
// pass of the same channel alone: so an event to many rooms of a stream
// takes one place in its queue, and a channel's catch-up of events
// delivered through another channel one more. Folding into the last item
// keeps every channel's moves in its order. It reports whether it folded.
func (c *Connection) queuePassLocked(ev *Event, i int) bool {
	if len(c.queue) == 0 {
		return false
	}
	last := &c.queue[len(c.queue)-1]
	switch {
	case last.Kind != KindEvent && last.Kind != kindPass:
		return false
	case last.Event.sameAs(ev):
		last.seq |= 1 << i
		return true
	case last.Kind == kindPass && last.seq == 0 && last.Event.Channels[last.Index] == ev.Channels[i]:
		last.Event, last.Index = ev, i
		return true
	}
	return false
}

func (c *Connection) slowConsumerLocked() {
	c.hub.opts.Observer.SlowConsumer()
	c.closeLocked(CloseReason{Code: CloseSlowConsumer, Error: true,
		Message: "the connection fell too far behind; resume from the last cursor"})
}

// membership is a channel the connection holds or held: which copies of
// multi-channel events reach the connection through it.
type membership struct {
	c *hubChannel
	// from is the channel's position when it was joined: copies at or
	// below it never come. 0 for a channel resumed from a cursor: its
	// copies up to the cursor came to an earlier connection of the
	// client, and the replay brings the rest.
	from uint64
	// got is the position of the last multi-channel event received
	// through the channel (at least from): a copy above it is yet to come.
	got uint64
}

// owedCopy is the copy of ev through its channel i, which came before
// the copy through the channel chosen to deliver ev.
type owedCopy struct {
	ev *Event
	i  int
}

// reaches reports whether the copy of ev through its channel j reaches
// the connection, or did: j is held, or was held when that copy came.
func (c *Connection) reaches(ev *Event, j int) bool {
	ch := ev.Channels[j]
	if m, held := c.joined[ch]; held && (ev.Volatile || ev.Position(j) > m.from) {
		return true
	}
	// Held before, up to a leave (and joined again since): so a late copy
	// through another channel of an event it delivered then is not
	// delivered again, and a resume replays what it delivered.
	m, held := c.left[ch]
	if !held || ev.Volatile {
		return false
	}
	return ev.Position(j) > m.from && ev.Position(j) <= m.got
}

// deliveringLocked returns the index of the channel through which the
// connection delivers the multi-channel event ev: the first of ev's
// channels whose copy reaches it; -1 when none does. It depends only on
// ev's channels and the connection's memberships, never on an order
// across channels, so every copy of ev, live or replayed, agrees on it.
func (c *Connection) deliveringLocked(ev *Event) int {
	for j := range ev.Channels {
		if c.reaches(ev, j) {
			return j
		}
	}
	return -1
}

// receiveCopyLocked takes in the copy of the multi-channel event ev
// through its channel i and says what to queue for it: the event itself
// when i is the channel that delivers it, else a pass that only moves
// i's position (a volatile copy is then dropped).
func (c *Connection) receiveCopyLocked(ev *Event, i int) (DeliveryKind, bool) {
	ch := ev.Channels[i]
	m, held := c.joined[ch]
	if !held {
		return 0, false // left, the leave is still being applied
	}
	if !ev.Volatile {
		if p := ev.Position(i); p > m.got {
			m.got = p
			c.joined[ch] = m
		}
		if f, ok := c.floor[ch]; ok {
			if ev.Position(i) <= f {
				return 0, false // seen through another instance before this resume
			}
			delete(c.floor, ch)
		}
	}
	if ev.Excludes(c.Client) {
		return 0, false
	}
	if c.connecting {
		return KindEvent, true // settled when Connect is done
	}
	return c.decideLocked(ev, i)
}

// decideLocked decides a copy of a multi-channel event that passed
// receiveCopyLocked; see there.
func (c *Connection) decideLocked(ev *Event, i int) (DeliveryKind, bool) {
	d := c.deliveringLocked(ev)
	switch {
	case d == i:
		c.settleOwedLocked(ev.Channels[i], ev.Position(i))
		return KindEvent, true
	case d < 0 || ev.Volatile:
		return 0, false
	}
	if dm, ok := c.joined[ev.Channels[d]]; ok && ev.Position(d) > dm.got {
		// The delivering channel's copy is still to come.
		if c.owedCount >= c.queueLimit {
			c.slowConsumerLocked()
			return 0, false
		}
		if c.owed == nil {
			c.owed = make(map[string][]owedCopy)
		}
		c.owed[ev.Channels[d]] = append(c.owed[ev.Channels[d]], owedCopy{ev, i})
		c.owedCount++
	}
	return kindPass, true
}

// settleOwedLocked forgets the owed copies that channel ch's copy up to
// position p has delivered.
func (c *Connection) settleOwedLocked(ch string, p uint64) {
	owed := c.owed[ch]
	if len(owed) == 0 {
		return
	}
	n := len(owed)
	owed = slices.DeleteFunc(owed, func(o owedCopy) bool {
		return o.ev.Position(o.ev.ChannelIndex(ch)) <= p
	})
	c.owedCount -= n - len(owed)
	if len(owed) == 0 {
		delete(c.owed, ch)
		return
	}
	c.owed[ch] = owed
}

// settleLocked decides the copies of multi-channel events that Connect
// queued undecided in ds, in place, and ends the connecting state.
func (c *Connection) settleLocked(ds []Delivery) []Delivery {
	out := ds[:0]
	for _, d := range ds {
		if d.Kind == KindEvent && len(d.Event.Channels) > 1 {
			kind, ok := c.decideLocked(d.Event, d.Index)
			if !ok {
				continue
			}
			d.Kind = kind
		}
		out = append(out, d)
	}
	clear(ds[len(out):])
	return out
}

// leftLocked records that channel ch, held as m, was left, and delivers
// the events it was to deliver whose copy through it had not come yet
// through the first channel still held that they came through. The
// deliveries are queued ahead of the roomcast:left that follows.
func (c *Connection) leftLocked(ch string, m membership) {
	if c.left == nil || len(c.left) >= maxLeftKept {
		// Only the copies still in flight need the record: forgetting
		// a long list of old ones costs at worst a late duplicate.
		c.left = make(map[string]membership)
	}
	c.left[ch] = m
	owed := c.owed[ch]
	delete(c.owed, ch)
	c.owedCount -= len(owed)
	for _, o := range owed {
		d := c.deliveringLocked(o.ev)
		if d < 0 {
			continue
		}
		dch := o.ev.Channels[d]
		dm, held := c.joined[dch]
		switch {
		case !held:
			// Delivered through a channel left since, or to nobody.
		case d == o.i:
			if !c.closed {
				c.queue = append(c.queue, Delivery{Kind: KindEvent, Event: o.ev, Index: d})
				c.signal()
			}
		case o.ev.Position(d) > dm.got:
			// Its copy through d is still to come and delivers it;
			// should d be left first, this copy is owed again.
			c.owed[dch] = append(c.owed[dch], o)
			c.owedCount++
		}
	}
}

// resetEpoch tells the connection, once per new epoch, that the backbone
// lost its history.
func (c *Connection) resetEpoch(epoch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.epoch == epoch {
		return
	}
	c.epoch = epoch
	// Positions start over in the new epoch.
	for ch, m := range c.joined {
		m.from, m.got = 0, 0
		c.joined[ch] = m
	}
	c.left, c.owed, c.owedCount = nil, nil, 0
	for ch := range c.joinedAt {
		c.joinedAt[ch] = 0 // every event of the new epoch came after the join
	}
	c.leftRooms = nil // their positions are of the old epoch
	c.queue = append(c.queue, Delivery{Kind: KindReset, Reason: ResetHistoryLost, epoch: epoch})
	c.signal()
}

// sessionEntries returns the multi-room session's entries: each room,
// then, when the position it was joined at is known, NUL, the epoch, NUL
// and that position (room names hold no NUL); and each room left (see
// leftRooms): leftSessionPrefix, the room, NUL, the epoch, NUL, the
// position it was left at, NUL and the leave's reason (for a namespace
// channel, the room whose leave took it). Sessions saved
// before join positions were kept hold bare names.
func (c *Connection) sessionEntries() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.rooms))
	for ch := range c.rooms {
		if j, ok := c.joinedAt[ch]; ok {
			ch += "\x00" + c.epoch + "\x00" + strconv.FormatUint(j, 10)
		}
		out = append(out, ch)
	}
	for _, l := range c.leftRooms {
		out = append(out, leftSessionPrefix+l.name+"\x00"+c.epoch+"\x00"+strconv.FormatUint(l.leave, 10)+"\x00"+cmp.Or(l.with, l.reason))
	}
	slices.Sort(out)
	return out
}

// parseSessionEntries splits the entries of a saved session into its rooms,
// the join positions known for them in epoch, and the rooms left in epoch
// (at most maxLeftInSession; a room may be held again since).
func parseSessionEntries(entries []string, epoch string) (rooms []string, joinedAt map[string]uint64, left []leftRoom) {
	joinedAt = make(map[string]uint64)
	for _, e := range entries {
		if l, ok := strings.CutPrefix(e, leftSessionPrefix); ok {
			ch, rest, _ := strings.Cut(l, "\x00")
			ep, rest, _ := strings.Cut(rest, "\x00")
			pos, reason, _ := strings.Cut(rest, "\x00")
			if p, err := strconv.ParseUint(pos, 10, 64); err == nil && ep == epoch && ch != "" && (IsRoomChannel(ch) || strings.HasPrefix(ch, namespaceChannelPrefix)) {
				l := leftRoom{name: ch, leave: p, reason: reason}
				if !IsRoomChannel(ch) {
					l.reason, l.with = "", reason
				}
				left = append(left, l)
			}
			continue
		}
		ch, rest, found := strings.Cut(e, "\x00")
		rooms = append(rooms, ch)
		if !found {
			continue
		}
		ep, pos, _ := strings.Cut(rest, "\x00")
		if j, err := strconv.ParseUint(pos, 10, 64); err == nil && ep == epoch {
			joinedAt[ch] = j
		}
	}
	if len(left) > maxLeftInSession {
		left = left[:maxLeftInSession]
	}
	return rooms, joinedAt, left
}

// control queues a cursor bookkeeping item.
func (c *Connection) control(d Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, d)
	c.signal()
}

func (c *Connection) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
	if f := c.onReady.Load(); f != nil {
		(*f)()
	}
}

// SetWake makes the connection call wake, in addition to signalling Ready,
// whenever deliveries are waiting, it is closed or its identity changes.
// wake must not block nor call back into the connection: it is called with
// the connection's lock held.
func (c *Connection) SetWake(wake func()) { c.onReady.Store(&wake) }

// Close ends the connection for reason; its writer sees Done and tells the
// client. Closing twice keeps the first reason.
func (c *Connection) Close(reason CloseReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(reason)
}

func (c *Connection) closeLocked(reason CloseReason) {
	if c.closed {
		return
	}
	c.closed = true
	c.reason = reason
	clear(c.queue)
	c.queue = nil
	c.closedFlag.Store(true)
	close(c.done)
	if f := c.onReady.Load(); f != nil {
		(*f)()
	}
}
