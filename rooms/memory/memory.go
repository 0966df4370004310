// Package memory is the embedded, single-process rooms.Backbone: history in
// memory, delivery by direct call. It is the reference implementation of the
// Backbone contract and what a relay runs with when no Redis is configured.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// Options configure a Backbone. Zero values take the defaults.
type Options struct {
	// HistorySize is how many events each channel retains (default 1000).
	HistorySize int
	// HistoryAge is how long events are retained (default 5 minutes); it is
	// also how long idempotency keys are remembered.
	HistoryAge time.Duration
	// Now is the clock, for tests.
	Now func() time.Time
	// SweepEvery is how often expired history, keys, sessions and poller
	// leases are freed (default HistoryAge/10, between 100 ms and 1 s).
	SweepEvery time.Duration
	// PresenceGrace is how long a user's last connection may be gone
	// before the user is announced as having left (default 5 s).
	PresenceGrace time.Duration
	// MaxChannels bounds the channels kept (default 1,000,000): a publish
	// or subscription that would create one more fails with
	// rooms.ErrLimitExceeded. Per caller, channels are bounded by the
	// connections, their rooms and the publish rate.
	MaxChannels int
	// MaxClientBindings bounds the client ids bound at once (default
	// rooms.DefaultMaxClientBindings); past it, new ids are refused with
	// rooms.ErrClientsFull until bindings expire.
	MaxClientBindings int
}

// Backbone is an in-memory rooms.Backbone. It is safe for concurrent use;
// Close stops its sweeper.
type Backbone struct {
	opts  Options
	epoch string

	mu       sync.Mutex
	seq      uint64
	channels map[string]*channel
	// forgotten is, for each bucket of channel names, the highest head of
	// a channel of the bucket freed entirely: a cursor below it on a
	// channel no longer known may have missed events. Buckets, rather than
	// one value for all, keep freeing one channel (or many that were only
	// subscribed) from making every other quiet channel's cursor look old.
	forgotten [forgottenBuckets]uint64
	// freed remembers, by name, the head of each channel with history
	// freed in the last freedKept (MaxChannels of them at most, oldest
	// first out into forgotten): a bucket mixes names, so a cursor of a
	// quiet channel would read as a gap whenever any other channel of its
	// bucket was freed after the cursor was taken — at scale, nearly every
	// quiet cursor some minutes old. freedOrder is the order they came in.
	freed      map[string]freedChannel
	freedOrder []freedName
	idem       map[string]idemEntry
	claims     int // how many of idem are single-use claims
	sessions   map[string]session
	bans       map[string]time.Time
	// tokens holds the publish tokens of resends, apart from the callers'
	// idempotency keys: each lives PublishTokenWindow, bounded by the
	// publish rate, and counts against no caller's key allowance.
	tokens  map[[16]byte]tokenEntry // by Message.TokenRecord's name
	clients map[string]clientBinding
	// clientsSwept is when a full binding store was last swept.
	clientsSwept time.Time

	// pmu guards presence. A presence change and its announcement happen
	// under it, so that they are never seen apart; it is taken before mu,
	// never after.
	pmu            sync.Mutex
	presence       map[string]*presenceRoom
	presenceClosed bool

	stop chan struct{}
	done chan struct{}
}

// forgottenBuckets is how many buckets of channel names remember the heads
// of freed channels (32 KiB).
const forgottenBuckets = 4096

// bucket is the forgotten bucket of channel name (FNV-1a).
func bucket(name string) int {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	return int(h % forgottenBuckets)
}

// freedKept is how long a freed channel's head is remembered by name.
const freedKept = 24 * time.Hour

type freedChannel struct {
	head uint64
	at   time.Time
}

type freedName struct {
	name string
	at   time.Time
}

type channel struct {
	retention rooms.Retention // the last publish's, zero fields: the backbone's
	events    []*rooms.Event
	head      uint64
	trimmed   uint64 // highest Seq dropped by retention
	emptied   time.Time
	receivers []rooms.Receiver
}

type idemEntry struct {
	result  rooms.Published
	expires time.Time
}

type tokenEntry struct {
	id      string
	seq     uint64
	digest  string // Message.TokenRecord's: a resend says the same
	expires time.Time
}

type session struct {
	channels []string
	expires  time.Time
}

var _ rooms.Backbone = (*Backbone)(nil)

// New starts an in-memory backbone with a fresh random epoch.
func New(opts Options) *Backbone {
	if opts.HistorySize <= 0 {
		opts.HistorySize = 1000
	}
	if opts.HistoryAge <= 0 {
		opts.HistoryAge = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = min(max(opts.HistoryAge/10, 100*time.Millisecond), time.Second)
	}
	if opts.PresenceGrace <= 0 {
		opts.PresenceGrace = 5 * time.Second
	}
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = 1_000_000
	}
	if opts.MaxClientBindings <= 0 {
		opts.MaxClientBindings = rooms.DefaultMaxClientBindings
	}
	var e [4]byte
	_, _ = rand.Read(e[:])
	b := &Backbone{
		opts:     opts,
		epoch:    hex.EncodeToString(e[:]),
		channels: make(map[string]*channel),
		freed:    make(map[string]freedChannel),
		idem:     make(map[string]idemEntry),
		tokens:   make(map[[16]byte]tokenEntry),
		sessions: make(map[string]session),
		presence: make(map[string]*presenceRoom),
		bans:     make(map[string]time.Time),
		clients:  make(map[string]clientBinding),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go b.sweepLoop()
	return b
}

// Close stops the sweeper and waits for it.
func (b *Backbone) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	b.pmu.Lock()
	b.presenceClosed = true
	for _, pr := range b.presence {
		for _, u := range pr.users {
			if u.leaving != nil {
				u.leaving.Stop()
			}
		}
	}
	b.pmu.Unlock()
	return nil
}

// Publish implements rooms.Backbone.
func (b *Backbone) Publish(ctx context.Context, m rooms.Message, idemKey string) (rooms.Published, error) {
	if err := ctx.Err(); err != nil {
		return rooms.Published{}, err
	}
	if len(m.Channels) == 0 {
		return rooms.Published{}, fmt.Errorf("publish: no channels")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.publishLocked(m, idemKey, b.opts.Now())
}

// publishLocked is Publish with b.mu held. It is one function because it
// is one atomic step under b.mu, as the Redis backbone's is one script: the
// resend checks, the sequence, the history and the delivery to receivers
// must see one state, and the order of its steps is the contract.
func (b *Backbone) publishLocked(m rooms.Message, idemKey string, now time.Time) (rooms.Published, error) {
	// Nothing here can lose an answer, so a publish needs a token only
	// when it is a resend: one that came back from another backbone's
	// unknown outcome, or a client following the same contract.
	token := m.Token
	m.Token = rooms.PublishToken{}
	var name [16]byte
	var digest string
	if !token.IsZero() {
		if err := token.Check(now); err != nil {
			return rooms.Published{}, err
		}
		name, digest = m.TokenRecord(token)
		if e, ok := b.tokens[name]; ok && now.Before(e.expires) {
			if e.digest != digest {
				return rooms.Published{}, fmt.Errorf("%w: it named a publish with other rooms, event or body", rooms.ErrPublishTokenReused)
			}
			return rooms.Published{ID: e.id, Seq: e.seq, Channels: slices.Clone(m.Channels), Event: m.Event, Duplicate: true}, nil
		}
	}
	if idemKey != "" {
		if e, ok := b.idem[idemKey]; ok && now.Before(e.expires) {
			r := e.result
			r.Duplicate = true
			return r, nil
		}
	}
	if !m.Volatile {
		fresh := 0
		for _, name := range m.Channels {
			if b.channels[name] == nil {
				fresh++
			}
		}
		if fresh > 0 && len(b.channels)+fresh > b.opts.MaxChannels {
			return rooms.Published{}, b.full()
		}
	}
	var seq uint64
	if !m.Volatile {
		seq = b.seq + 1
	}
	ev, err := rooms.NewEvent(m, b.epoch, seq, now.UnixMilli())
	if err != nil {
		return rooms.Published{}, err
	}
	if !m.Volatile {
		b.seq = seq
	}
	for i, name := range m.Channels {
		c := b.channels[name]
		if c == nil {
			if m.Volatile {
				continue
			}
			// It holds history from now on: its trimmed position
			// carries what was forgotten of it until it is freed again.
			c = &channel{trimmed: b.forgottenHead(name)}
			delete(b.freed, name)
			b.channels[name] = c
		}
		if !m.Volatile {
			c.retention = m.Retention
			c.events = append(c.events, ev)
			c.head = seq
			b.trim(c, now)
		}
		for _, r := range c.receivers {
			r.Receive(ev, i)
		}
	}
	res := rooms.Published{ID: ev.ID(), Seq: seq, Channels: slices.Clone(m.Channels), Event: m.Event}
	if idemKey != "" {
		b.idem[idemKey] = idemEntry{result: res, expires: now.Add(b.opts.HistoryAge)}
	}
	if !token.IsZero() {
		b.tokens[name] = tokenEntry{id: res.ID, seq: seq, digest: digest,
			expires: token.RecordExpiry(now)}
	}
	return res, nil
}

// trim applies retention to c; b.mu must be held.
func (b *Backbone) trim(c *channel, now time.Time) {
	size, age := b.opts.HistorySize, b.opts.HistoryAge
	if c.retention.Size > 0 {
		size = c.retention.Size
	}
	if c.retention.Age > 0 {
		age = c.retention.Age
	}
	drop := max(len(c.events)-size, 0)
	cutoff := now.Add(-age).UnixMilli()
	for drop < len(c.events) && c.events[drop].TS < cutoff {
		drop++
	}
	if drop == 0 {
		return
	}
	c.trimmed = c.events[drop-1].Seq
	clear(c.events[:drop])
	c.events = c.events[drop:]
	if len(c.events) == 0 {
		c.events = nil
		c.emptied = now
	}
}

// Subscribe implements rooms.Backbone.
func (b *Backbone) Subscribe(ctx context.Context, name string, r rooms.Receiver) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.channels[name]
	if c == nil && len(b.channels) >= b.opts.MaxChannels {
		return 0, b.full()
	}
	if c == nil {
		// A channel the backbone does not know holds no event above the
		// highest head it forgot: it starts there. Cursors from before a
		// channel was freed still read as gaps, and a cursor of a channel
		// that was only ever subscribed (and freed when unsubscribed)
		// resumes without a history read.
		// Its freed head, if any, stays remembered: freeing this
		// subscribe-only channel keeps no record of its own.
		f := b.forgottenHead(name)
		c = &channel{trimmed: f, head: f}
		b.channels[name] = c
	}
	c.receivers = append(c.receivers, r)
	return c.head, nil
}

// Unsubscribe implements rooms.Backbone.
func (b *Backbone) Unsubscribe(_ context.Context, name string, r rooms.Receiver) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.channels[name]; c != nil {
		if i := slices.Index(c.receivers, r); i >= 0 {
			c.receivers = slices.Delete(c.receivers, i, i+1)
		}
		if len(c.receivers) == 0 && c.neverHeld() {
			// Only subscribed, never published to: nothing is forgotten
			// by freeing it, and keeping it would let anyone grow the
			// map by subscribing to new names.
			delete(b.channels, name)
		}
	}
	return nil
}

// full is the error of a channel past MaxChannels.
func (b *Backbone) full() error {
	return fmt.Errorf("%w: the relay keeps at most %d channels", rooms.ErrLimitExceeded, b.opts.MaxChannels)
}

// forgottenHead is the highest position of channel name that the backbone
// no longer holds, for a channel it does not keep: its head when it was
// freed, else its bucket's; b.mu is held.
func (b *Backbone) forgottenHead(name string) uint64 {
	if f, ok := b.freed[name]; ok {
		return f.head
	}
	return b.forgotten[bucket(name)]
}

// forget remembers the head of channel name, freed at now; b.mu is held.
func (b *Backbone) forget(name string, head uint64, now time.Time) {
	// A channel is re-created with the head it was freed with at least,
	// so the name's record only grows.
	head = max(head, b.forgottenHead(name))
	b.freed[name] = freedChannel{head: head, at: now}
	b.freedOrder = append(b.freedOrder, freedName{name: name, at: now})
	for len(b.freedOrder) > b.opts.MaxChannels {
		b.dropFreed()
	}
}

// dropFreed moves the oldest freed head into its bucket; b.mu is held.
func (b *Backbone) dropFreed() {
	n := b.freedOrder[0]
	b.freedOrder[0] = freedName{}
	b.freedOrder = b.freedOrder[1:]
	if f, ok := b.freed[n.name]; ok && f.at.Equal(n.at) {
		// Not re-created or freed again since this entry.
		delete(b.freed, n.name)
		b.forgotten[bucket(n.name)] = max(b.forgotten[bucket(n.name)], f.head)
	}
}

// neverHeld reports that no event was ever appended to c: it was created
// by a subscription, and its positions say nothing a fresh one would not.
func (c *channel) neverHeld() bool { return len(c.events) == 0 && c.emptied.IsZero() }

// Channels returns how many channels the backbone keeps (with history,
// subscribed, or both).
func (b *Backbone) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.channels)
}

// FreedChannels returns how many freed channels' heads are remembered by
// name (at most MaxChannels, each at most a day).
func (b *Backbone) FreedChannels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.freedOrder)
}

// PresenceEntries returns how many members and users (those in their grace
// period included) the presence store keeps, over all rooms.
func (b *Backbone) PresenceEntries() int {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	n := 0
	for _, pr := range b.presence {
		n += len(pr.members) + len(pr.users)
	}
	return n
}

// Keys returns how many idempotency keys, single-use claims (redeemed
// tickets) and multi-room sessions the backbone remembers.
//
// The counts are kept as keys come and go, not counted here: a scrape
// holds b.mu, which every publish needs.
func (b *Backbone) Keys() (idempotency, claims, sessions int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.idem) - b.claims, b.claims, len(b.sessions)
}

// Since implements rooms.Backbone.
func (b *Backbone) Since(ctx context.Context, name string, after uint64, limit int) (rooms.History, error) {
	if err := ctx.Err(); err != nil {
		return rooms.History{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.channels[name]
	if c == nil {
		return rooms.History{Truncated: after < b.forgottenHead(name)}, nil
	}
	b.trim(c, b.opts.Now())
	h := rooms.History{Truncated: after < c.trimmed}
	i := sort.Search(len(c.events), func(i int) bool { return c.events[i].Seq > after })
	n := len(c.events) - i
	if limit > 0 && n > limit {
		n, h.More = limit, true
	}
	h.Events = slices.Clone(c.events[i : i+n])
	return h, nil
}

// Before implements rooms.Backbone.
func (b *Backbone) Before(ctx context.Context, name string, before uint64, limit int) ([]*rooms.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.channels[name]
	if c == nil {
		return nil, nil
	}
	b.trim(c, b.opts.Now())
	end := len(c.events)
	if before > 0 {
		end = sort.Search(len(c.events), func(i int) bool { return c.events[i].Seq >= before })
	}
	start := 0
	if limit > 0 {
		start = max(end-limit, 0)
	}
	return slices.Clone(c.events[start:end]), nil
}

// Head implements rooms.Backbone.
func (b *Backbone) Head(ctx context.Context, name string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.channels[name]; c != nil {
		return c.head, nil
	}
	return b.seq, nil
}

// Epoch implements rooms.Backbone. An in-memory history dies with the
// process, so every process has its own epoch.
func (b *Backbone) Epoch(context.Context) (string, error) { return b.epoch, nil }

// SaveSession implements rooms.Backbone.
func (b *Backbone) SaveSession(_ context.Context, id string, channels []string, ttl time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions[id] = session{channels: slices.Clone(channels), expires: b.opts.Now().Add(ttl)}
	return nil
}

// LoadSession implements rooms.Backbone.
func (b *Backbone) LoadSession(_ context.Context, id string) ([]string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sessions[id]
	if !ok || !b.opts.Now().Before(s.expires) {
		return nil, false, nil
	}
	return slices.Clone(s.channels), true, nil
}

func (b *Backbone) sweepLoop() {
	defer close(b.done)
	t := time.NewTicker(b.opts.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweep()
			b.pmu.Lock()
			b.expireLeases(b.opts.Now())
			b.pmu.Unlock()
		}
	}
}

// sweep frees what retention no longer needs. A channel is freed only once
// it has been empty and unsubscribed for a whole retention age, so cursors
// pointing into it are answered precisely until they are expired anyway.
func (b *Backbone) sweep() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	for name, c := range b.channels {
		b.trim(c, now)
		switch {
		case len(c.receivers) > 0:
		case c.neverHeld():
			delete(b.channels, name)
		case len(c.events) == 0 && now.Sub(c.emptied) > b.opts.HistoryAge:
			b.forget(name, c.head, now)
			delete(b.channels, name)
		}
	}
	for len(b.freedOrder) > 0 && now.Sub(b.freedOrder[0].at) > freedKept {
		b.dropFreed()
	}
	for k, e := range b.idem {
		if !now.Before(e.expires) {
			delete(b.idem, k)
			if strings.HasPrefix(k, claimPrefix) {
				b.claims--
			}
		}
	}
	for k, e := range b.tokens {
		if !now.Before(e.expires) {
			delete(b.tokens, k)
		}
	}
	for id, s := range b.sessions {
		if !now.Before(s.expires) {
			delete(b.sessions, id)
		}
	}
	for user, until := range b.bans {
		if !now.Before(until) {
			delete(b.bans, user)
		}
	}
	b.sweepClients(now)
}

// claimPrefix marks the single-use claims among the idempotency keys.
const claimPrefix = "claim\x00"

// ClaimOnce implements rooms.Claimer.
func (b *Backbone) ClaimOnce(_ context.Context, key string, ttl time.Duration) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	k := claimPrefix + key
	if e, ok := b.idem[k]; ok && now.Before(e.expires) {
		return false, nil
	}
	if _, ok := b.idem[k]; !ok {
		b.claims++
	}
	b.idem[k] = idemEntry{expires: now.Add(ttl)}
	return true, nil
}
