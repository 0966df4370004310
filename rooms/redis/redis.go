// Package redis is the Redis rooms.Backbone: history in Redis Streams, live
// fan-out over pub/sub, both written by one Lua script per publish so that
// live order equals history order. Instances subscribe only to the channels
// their connections need. A single Redis primary is supported, directly or
// through Redis Sentinel (failover.go); Redis Cluster is not.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

// Options configure a Backbone. Zero values take the defaults.
type Options struct {
	// Prefix starts every key (default "roomcast:").
	Prefix string
	// HistorySize is how many events each channel retains (default 1000).
	HistorySize int
	// HistoryAge is how long events and idempotency keys are kept (default 5 minutes).
	HistoryAge time.Duration
	// MetaTTL is how long a channel's position bookkeeping outlives its
	// last event (default 24 hours): cursors older than that may not
	// detect the loss of events that were published after them.
	MetaTTL time.Duration
	// OpTimeout bounds each Redis call made without a caller's deadline (default 2 s).
	OpTimeout time.Duration
	// PresenceGrace is how long a user's last connection may be gone
	// before the user is announced as having left (default 5 s).
	PresenceGrace time.Duration
	// MemberTTL is how long a stream's presence lasts unless its instance
	// renews it (default 45 s); it bounds how long the members of an
	// instance that died stay listed.
	MemberTTL time.Duration
	// SweepEvery is how often each instance expires members and ends grace
	// periods (default 1 s).
	SweepEvery time.Duration
	// MaxClientBindings bounds the client ids bound at once, for every
	// instance sharing the Redis (default rooms.DefaultMaxClientBindings);
	// past it, new ids are refused with rooms.ErrClientsFull until
	// bindings expire.
	MaxClientBindings int
	// SentinelMaster, when set, makes New read its url as the sentinels'
	// (see newFailoverClient) and follow the primary they name so.
	SentinelMaster string
}

// Backbone is a Redis rooms.Backbone. Close stops its goroutines.
type Backbone struct {
	rdb  *goredis.Client
	opts Options
	ps   *goredis.PubSub

	instance     string
	controlReady chan struct{}
	controlOnce  sync.Once

	mu      sync.Mutex
	subs    map[string]*subscription // by channel
	pending map[string]chan string   // forwarded commands awaiting replies, by correlation id
	run     func(context.Context, rooms.Command) error

	// pub carries publish scripts, keep the per-connection bookkeeping
	// (registrations, presence, slots, client ids): apart, because go-redis
	// retries a pipeline only when none of its commands forbids it, and
	// the bookkeeping may be retried while a publish never is by go-redis.
	pub, keep *pipe

	inbox  inbox
	watch  *connWatch
	seen   learned
	stop   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once
}

// subscription is an instance's interest in one channel. Its position
// fields are owned by the dispatch goroutine once ready is closed.
type subscription struct {
	channel   string
	receivers []*receiver
	ready     chan struct{}
	confirmed bool

	epoch   string
	lastSeq uint64
	lastN   uint64
	lastTS  int64 // server time of the last delivered event
}

var _ rooms.Backbone = (*Backbone)(nil)

// New connects to the Redis at url (redis:// or rediss://) and starts the
// goroutines that read and dispatch live events.
//
// With opts.SentinelMaster set, url names the sentinels instead, and the
// backbone follows the primary they name through failovers.
func New(ctx context.Context, url string, opts Options) (*Backbone, error) {
	rdb, err := newRedisClient(url, opts.SentinelMaster)
	if err != nil {
		return nil, err
	}
	return newBackbone(ctx, rdb, opts, opts.SentinelMaster != "")
}

// newRedisClient is the client for url, through the sentinels when master
// is set; it connects to nothing yet.
func newRedisClient(url, master string) (*goredis.Client, error) {
	if master != "" {
		return newFailoverClient(url, master)
	}
	ro, err := goredis.ParseURL(url)
	if err != nil {
		return nil, urlError("redis url", url, err)
	}
	ro.ContextTimeoutEnabled = true
	return goredis.NewClient(ro), nil
}

// NewClient is New for an existing client, which the Backbone then owns.
func NewClient(ctx context.Context, rdb *goredis.Client, opts Options) (*Backbone, error) {
	return newBackbone(ctx, rdb, opts, false)
}

// newBackbone is NewClient; follow is set for a Sentinel client (connWatch).
func newBackbone(ctx context.Context, rdb *goredis.Client, opts Options, follow bool) (*Backbone, error) {
	if opts.Prefix == "" {
		opts.Prefix = "roomcast:"
	}
	if opts.HistorySize <= 0 {
		opts.HistorySize = 1000
	}
	if opts.HistoryAge <= 0 {
		opts.HistoryAge = 5 * time.Minute
	}
	if opts.MetaTTL <= 0 {
		opts.MetaTTL = 24 * time.Hour
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 2 * time.Second
	}
	if opts.PresenceGrace <= 0 {
		opts.PresenceGrace = 5 * time.Second
	}
	if opts.MemberTTL <= 0 {
		opts.MemberTTL = 45 * time.Second
	}
	if opts.MaxClientBindings <= 0 {
		opts.MaxClientBindings = rooms.DefaultMaxClientBindings
	}
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = time.Second
	}
	b := &Backbone{
		rdb:      rdb,
		opts:     opts,
		subs:     make(map[string]*subscription),
		pending:  make(map[string]chan string),
		stop:     make(chan struct{}),
		instance: newEpoch() + newEpoch(),
	}
	b.pub = newPipe(rdb, pipeFlushers, pipeMaxBatch, pipeMaxBytes, opts.OpTimeout)
	b.keep = newPipe(rdb, 1, pipeMaxBatch, pipeMaxBytes, opts.OpTimeout)
	b.controlReady = make(chan struct{})
	b.inbox.wake = make(chan struct{}, 1)
	b.watch = newConnWatch(follow)
	rdb.AddHook(b.watch)
	pctx, cancel := context.WithTimeout(ctx, opts.OpTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		b.pub.Close()
		b.keep.Close()
		_ = rdb.Close()
		return nil, fmt.Errorf("%w: redis ping: %w", rooms.ErrBackboneDown, err)
	}
	b.ps = rdb.Subscribe(context.Background(), b.controlKey(b.instance))
	msgs := b.ps.ChannelWithSubscriptions(goredis.WithChannelSize(4096))
	b.wg.Add(4)
	go b.read(msgs)
	go b.dispatch()
	go b.sweepLoop()
	go b.checkLoop()
	// Commands for this instance's connections must reach it from the start.
	select {
	case <-b.controlReady:
	case <-pctx.Done():
		_ = b.Close()
		return nil, fmt.Errorf("%w: subscribing to the control channel: %w", rooms.ErrBackboneDown, pctx.Err())
	}
	return b, nil
}

// Close stops reading live events and closes the client.
func (b *Backbone) Close() error {
	b.closed.Do(func() {
		close(b.stop)
		_ = b.ps.Close()
		b.wg.Wait()
		b.pub.Close()
		b.keep.Close()
		_ = b.rdb.Close()
	})
	return nil
}

func (b *Backbone) key(kind, name string) string { return b.opts.Prefix + kind + name }
func (b *Backbone) streamKey(ch string) string   { return b.key("h:", ch) }
func (b *Backbone) metaKey(ch string) string     { return b.key("m:", ch) }
func (b *Backbone) liveKey(ch string) string     { return b.key("l:", ch) }

func (b *Backbone) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.opts.OpTimeout)
}

func down(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", rooms.ErrBackboneDown, op, err)
}

// body is a message as stored and carried: everything but its position.
type body struct {
	Channels []string        `json:"c"`
	Event    string          `json:"e"`
	Data     json.RawMessage `json:"d"`
	Base64   bool            `json:"b,omitempty"`
	From     *rooms.Sender   `json:"f,omitempty"`
	Client   string          `json:"cl,omitempty"`
	Exclude  []string        `json:"x,omitempty"`
	Volatile bool            `json:"v,omitempty"`
}

type summary struct {
	Channels []string `json:"c"`
	Event    string   `json:"e"`
}

// Publish implements rooms.Backbone. A publish without a token gets one
// minted here, so that go-redis's own retry of a script whose reply was
// lost (it resends after io.EOF) finds the first run's record.
func (b *Backbone) Publish(ctx context.Context, m rooms.Message, idemKey string) (rooms.Published, error) {
	if !m.Token.IsZero() {
		if err := m.Token.Check(time.Now()); err != nil {
			return rooms.Published{}, err
		}
	}
	token, fresh := m.Token, m.Token.IsZero()
	if fresh {
		token = rooms.NewPublishToken(time.Now())
	}
	keys, args, err := b.publishArgs(m, idemKey, token, fresh)
	if err != nil {
		return rooms.Published{}, err
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return rooms.Published{}, down("publish", err)
	}
	// Publish retries itself, with the same token, rather than leaving it
	// to go-redis: whether the outcome is known depends on every attempt,
	// and go-redis reports only the last one's error (a refused connection
	// after a lost reply would read as "nothing was sent").
	var written bool
	for attempt := 0; ; attempt++ {
		p, err := b.runPublishKnown(ctx, keys, args, &m)
		if err == nil {
			if epoch, seq, err := rooms.ParseEventID(p.ID); err == nil {
				b.seen.note(epoch, seq)
			}
			return p, nil
		}
		if errors.Is(err, rooms.ErrPublishTokenReused) {
			return p, err
		}
		written = written || sentUnanswered(err)
		if attempt >= b.rdb.Options().MaxRetries || !retryPublish(err) || !sleepCtx(ctx, publishRetryBackoff<<attempt) {
			if written {
				return rooms.Published{}, &rooms.OutcomeUnknownError{Token: token, Err: err}
			}
			return p, err
		}
	}
}

// publishRetryBackoff is the wait before Publish's first retry, doubled for
// each next one (go-redis's own minimum).
const publishRetryBackoff = 8 * time.Millisecond

// retryPublish reports whether a failed publish attempt is worth another:
// not when Redis answered (a refusal is final) nor when the call's time is
// up.
func retryPublish(err error) bool {
	var reply goredis.Error
	return !errors.As(err, &reply) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, goredis.ErrClosed)
}

// sleepCtx waits d, or less when ctx ends first; it reports whether the
// whole wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// onceCmd is a command go-redis sends at most once: its retries would hide
// an attempt that was written from the caller that must know of it.
type onceCmd struct{ *goredis.Cmd }

// NoRetry implements goredis.Cmder.
func (onceCmd) NoRetry() bool { return true }

// sentUnanswered reports whether a failed call may have run in Redis. It
// did not when Redis answered with an error (OOM refuses the script's first
// write, which the script makes before any PUBLISH; the others refuse the
// script before it starts), nor when the attempt found no connection
// (refused, no pool slot, client closed): Publish asks it of every attempt,
// since go-redis sends the script once (onceCmd). A timeout, or a connection lost after the
// request was written, may come after the script ran; and a deadline that
// passes while go-redis is still dialling looks the same as one that
// passes while it waits for the reply, so a dead Redis is often unknown too.
func sentUnanswered(err error) bool {
	var reply goredis.Error
	var op *net.OpError
	switch {
	case errors.As(err, &reply):
		return false
	case errors.Is(err, errNotSent):
		return false // withdrawn before a pipeline took it
	case errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout), errors.Is(err, goredis.ErrPoolExhausted):
		return false
	case errors.As(err, &op) && op.Op == "dial":
		return false
	}
	return true
}

// tokenBucketWidth is the minting time each token bucket covers. Each
// bucket is freed whole when its tokens are too old; a second's worth keeps
// that free short (10,000 fields at 10,000 publishes/s) and, below 128
// publishes/s, the hash in Redis's compact encoding.
const tokenBucketWidth = time.Second

// tokenBucketTTL is how long a bucket written at now outlives that write:
// every token in it stays recognisable for as long as it is accepted (see
// PublishToken.RecordExpiry), a token minted ahead of now too. The tokens
// of one bucket share their minting second, so a later write never
// shortens it.
func tokenBucketTTL(t rooms.PublishToken, now time.Time) time.Duration {
	return t.RecordExpiry(now).Sub(now) + tokenBucketWidth
}

// tokenBucketKey names the hash holding the tokens minted in t's second. It
// derives from the token alone, so any instance finds a resend's record;
// the Cluster backbone can put one such bucket in each partition a publish
// touches, under the partition's hash tag.
func (b *Backbone) tokenBucketKey(t rooms.PublishToken) string {
	return b.key("t:", strconv.FormatInt(t.Minted.Unix()/int64(tokenBucketWidth/time.Second), 10))
}

// publishArgs lays out the keys and arguments of publishScript for m named
// by token (fresh: minted for this call); the live channels come last.
func (b *Backbone) publishArgs(m rooms.Message, idemKey string, token rooms.PublishToken, fresh bool) (keys []string, args []any, err error) {
	if len(m.Channels) == 0 {
		return nil, nil, errors.New("publish: no channels")
	}
	raw, err := appendBody(nil, m)
	if err != nil {
		return nil, nil, err
	}
	sum := appendSummary(nil, m.Channels, m.Event)
	keys = []string{b.key("", "epoch"), b.key("", "seq"), b.key("i:", idemKey)}
	for _, ch := range m.Channels {
		keys = append(keys, b.streamKey(ch), b.metaKey(ch))
	}
	size, age := b.opts.HistorySize, b.opts.HistoryAge
	if m.Retention.Size > 0 {
		size = m.Retention.Size
	}
	if m.Retention.Age > 0 {
		age = m.Retention.Age
	}
	keys = append(keys, b.tokenBucketKey(token))
	name, digest := m.TokenRecord(token)
	args = []any{raw, flag(m.Volatile), size, age.Milliseconds(), newEpoch(),
		flag(idemKey != ""), b.opts.HistoryAge.Milliseconds(), b.opts.MetaTTL.Milliseconds(), sum,
		name[:], flag(fresh), tokenBucketTTL(token, time.Now()).Milliseconds(), digest}
	for _, ch := range m.Channels {
		args = append(args, b.liveKey(ch))
	}
	return keys, args, nil
}

// Publishes share pipelines (pipe): pipeFlushers send at once, each at
// most pipeMaxBatch scripts or about pipeMaxBytes of arguments. Two
// flushers let the relay write one pipeline while Redis runs the other.
const (
	pipeFlushers = 2
	pipeMaxBatch = 128
	pipeMaxBytes = 1 << 20
)

// runPublish runs publishScript, in a pipeline shared with the publishes
// in flight beside it, and reads its reply.
func (b *Backbone) runPublish(ctx context.Context, keys []string, args []any) (rooms.Published, error) {
	return b.runPublishKnown(ctx, keys, args, nil)
}

// runPublishKnown is runPublish for m, when known: a reply whose summary
// is m's own (any but an idempotency key's earlier answer) is read
// without decoding it.
func (b *Backbone) runPublishKnown(ctx context.Context, keys []string, args []any, m *rooms.Message) (rooms.Published, error) {
	call := make([]any, 0, 3+len(keys)+len(args))
	call = append(call, "evalsha", publishScript.Hash(), len(keys))
	for _, k := range keys {
		call = append(call, k)
	}
	cmd := onceCmd{goredis.NewCmd(ctx, append(call, args...)...)}
	err := b.pub.do(ctx, cmd, publishScript)
	var res []string
	if err == nil {
		res, err = cmd.StringSlice()
	}
	if err != nil {
		return rooms.Published{}, down("publish", err)
	}
	if len(res) == 2 && res[0] == "reused" {
		return rooms.Published{}, fmt.Errorf("%w: it named a publish with other rooms, event or body", rooms.ErrPublishTokenReused)
	}
	if len(res) != 2 {
		return rooms.Published{}, down("publish", fmt.Errorf("unexpected reply %q", res))
	}
	var p rooms.Published
	if m != nil && len(args) > 8 {
		sum, _ := args[8].([]byte)
		p, err = parseResultKnown(res[1], sum, m)
	} else {
		p, err = parseResult(res[1])
	}
	if err != nil {
		return rooms.Published{}, down("publish", err)
	}
	p.Duplicate = res[0] == "dup"
	return p, nil
}

// parseResultKnown is parseResult for a publish of m whose summary is sum.
func parseResultKnown(s string, sum []byte, m *rooms.Message) (rooms.Published, error) {
	epoch, rest, ok1 := strings.Cut(s, "|")
	seqText, rest, ok2 := strings.Cut(rest, "|")
	_, got, ok3 := strings.Cut(rest, "|")
	if !ok1 || !ok2 || !ok3 || got != string(sum) {
		return parseResult(s)
	}
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return rooms.Published{}, fmt.Errorf("bad publish result %q", s)
	}
	p := rooms.Published{Seq: seq, Channels: m.Channels, Event: m.Event}
	if seq > 0 {
		p.ID = rooms.FormatEventID(epoch, seq)
	}
	return p, nil
}

// parseResult reads "epoch|seq|ts|summary".
func parseResult(s string) (rooms.Published, error) {
	parts := strings.SplitN(s, "|", 4)
	if len(parts) != 4 {
		return rooms.Published{}, fmt.Errorf("bad publish result %q", s)
	}
	seq, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return rooms.Published{}, fmt.Errorf("bad publish result %q", s)
	}
	var sum summary
	if err := json.Unmarshal([]byte(parts[3]), &sum); err != nil {
		return rooms.Published{}, fmt.Errorf("bad publish summary: %w", err)
	}
	p := rooms.Published{Seq: seq, Channels: sum.Channels, Event: sum.Event}
	if seq > 0 {
		p.ID = rooms.FormatEventID(parts[0], seq)
	}
	return p, nil
}

func flag(v bool) string {
	if v {
		return "1"
	}
	return "0"
}

func newEpoch() string {
	var e [4]byte
	_, _ = rand.Read(e[:])
	return hex.EncodeToString(e[:])
}

// Epoch implements rooms.Backbone. The epoch key is created once; after a
// flush or a failover that lost it, the next call or publish creates a new one.
func (b *Backbone) Epoch(ctx context.Context) (string, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	key := b.key("", "epoch")
	e, err := b.rdb.Get(ctx, key).Result()
	if errors.Is(err, goredis.Nil) {
		if err := b.rdb.SetNX(ctx, key, newEpoch(), 0).Err(); err != nil {
			return "", down("epoch", err)
		}
		e, err = b.rdb.Get(ctx, key).Result()
	}
	if err != nil {
		return "", down("epoch", err)
	}
	return e, nil
}

// Head implements rooms.Backbone.
func (b *Backbone) Head(ctx context.Context, ch string) (uint64, error) {
	head, _, _, err := b.head(ctx, ch)
	return head, err
}

// head reads a channel's head and count, and the epoch they belong to.
func (b *Backbone) head(ctx context.Context, ch string) (head, n uint64, epoch string, err error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := headScript.Run(ctx, b.rdb, []string{b.metaKey(ch), b.key("", "seq"), b.key("", "epoch")}).Slice()
	if err != nil {
		return 0, 0, "", down("head", err)
	}
	if len(v) != 3 {
		return 0, 0, "", down("head", fmt.Errorf("unexpected reply %v", v))
	}
	h, _ := v[0].(int64)
	c, _ := v[1].(int64)
	epoch, _ = v[2].(string)
	return uint64(h), uint64(c), epoch, nil
}

// Since implements rooms.Backbone.
func (b *Backbone) Since(ctx context.Context, ch string, after uint64, limit int) (rooms.History, error) {
	if limit <= 0 {
		limit = b.opts.HistorySize
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := sinceScript.Run(ctx, b.rdb, []string{b.streamKey(ch), b.metaKey(ch)},
		strconv.FormatUint(after+1, 10)+"-0", limit+1).Slice()
	if err != nil || len(v) != 4 {
		return rooms.History{}, down("history", err)
	}
	trimmed, _ := v[0].(int64)
	now, _ := v[2].(int64)
	entries, err := b.parseEntries(v[1])
	if err != nil {
		return rooms.History{}, down("history", err)
	}
	h := rooms.History{Truncated: after < uint64(trimmed)}
	// Entries past their age count as trimmed even before a publish
	// removes them.
	age := b.opts.HistoryAge.Milliseconds()
	if a, _ := v[3].(int64); a > 0 {
		age = a // the channel's own, from its namespace
	}
	cutoff := now - age
	for len(entries) > 0 && entries[0].TS < cutoff {
		h.Truncated = true
		entries = entries[1:]
	}
	if len(entries) > limit {
		entries, h.More = entries[:limit], true
	}
	h.Events = entries
	return h, nil
}

// Before implements rooms.Backbone.
func (b *Backbone) Before(ctx context.Context, ch string, before uint64, limit int) ([]*rooms.Event, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	end := "+"
	if before > 0 {
		end = "(" + strconv.FormatUint(before, 10) + "-0"
	}
	count := int64(limit)
	if limit <= 0 {
		count = int64(b.opts.HistorySize)
	}
	msgs, err := b.rdb.XRevRangeN(ctx, b.streamKey(ch), end, "-", count).Result()
	if err != nil {
		return nil, down("history", err)
	}
	now := time.Now().UnixMilli()
	cutoff := now - b.opts.HistoryAge.Milliseconds()
	out := make([]*rooms.Event, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		ev, err := eventFromValues(msgs[i].ID, msgs[i].Values)
		if err != nil {
			return nil, down("history", err)
		}
		if ev.TS >= cutoff {
			out = append(out, ev)
		}
	}
	return out, nil
}

// parseEntries reads XRANGE output as returned inside a script reply.
func (b *Backbone) parseEntries(v any) ([]*rooms.Event, error) {
	list, _ := v.([]any)
	out := make([]*rooms.Event, 0, len(list))
	for _, item := range list {
		pair, ok := item.([]any)
		if !ok || len(pair) != 2 {
			return nil, errors.New("bad stream entry")
		}
		id, _ := pair[0].(string)
		fields, _ := pair[1].([]any)
		values := make(map[string]any, len(fields)/2)
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			values[k] = fields[i+1]
		}
		ev, err := eventFromValues(id, values)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// eventFromValues rebuilds an event from a stream entry.
func eventFromValues(id string, values map[string]any) (*rooms.Event, error) {
	seqText, _, _ := strings.Cut(id, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad entry id %q", id)
	}
	str := func(k string) string { s, _ := values[k].(string); return s }
	ts, err := strconv.ParseInt(str("ts"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad entry ts in %q", id)
	}
	return decodeEvent(str("e"), seq, ts, []byte(str("b")))
}

func decodeEvent(epoch string, seq uint64, ts int64, raw []byte) (*rooms.Event, error) {
	var bd body
	if err := json.Unmarshal(raw, &bd); err != nil {
		return nil, fmt.Errorf("bad event body: %w", err)
	}
	return rooms.NewEvent(rooms.Message{Channels: bd.Channels, Event: bd.Event, Data: bd.Data, Base64: bd.Base64,
		From: bd.From, Client: bd.Client, Exclude: bd.Exclude, Volatile: bd.Volatile}, epoch, seq, ts)
}

// SaveSession implements rooms.Backbone.
func (b *Backbone) SaveSession(ctx context.Context, id string, channels []string, ttl time.Duration) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	raw, _ := json.Marshal(channels)
	if err := b.rdb.Set(ctx, b.key("s:", id), raw, ttl).Err(); err != nil {
		return down("session", err)
	}
	return nil
}

// LoadSession implements rooms.Backbone.
func (b *Backbone) LoadSession(ctx context.Context, id string) ([]string, bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	raw, err := b.rdb.Get(ctx, b.key("s:", id)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, down("session", err)
	}
	var channels []string
	if err := json.Unmarshal(raw, &channels); err != nil {
		return nil, false, nil
	}
	return channels, true, nil
}

// Subscribe implements rooms.Backbone. It returns once Redis confirmed the
// subscription, so every event published afterwards is delivered; r is
// handed exactly the events after the head it returns.
func (b *Backbone) Subscribe(ctx context.Context, ch string, r rooms.Receiver) (uint64, error) {
	b.mu.Lock()
	s := b.subs[ch]
	first := s == nil
	if first {
		s = &subscription{channel: ch, ready: make(chan struct{})}
		b.subs[ch] = s
	}
	rc := &receiver{r: r, pending: true}
	s.receivers = append(s.receivers, rc)
	b.mu.Unlock()

	if first {
		sctx, cancel := b.opCtx(ctx)
		err := b.ps.Subscribe(sctx, b.liveKey(ch))
		cancel()
		if err != nil {
			_ = b.Unsubscribe(context.Background(), ch, r)
			return 0, down("subscribe", err)
		}
	}
	wctx, cancel := b.opCtx(ctx)
	defer cancel()
	select {
	case <-s.ready:
	case <-wctx.Done():
		_ = b.Unsubscribe(context.Background(), ch, r)
		return 0, down("subscribe", wctx.Err())
	}
	head, _, epoch, err := b.head(ctx, ch)
	if err != nil {
		_ = b.Unsubscribe(context.Background(), ch, r)
		return 0, err
	}
	rc.start(epoch, head)
	return head, nil
}

// Channels returns how many channels this process is subscribed to.
func (b *Backbone) Channels() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Unsubscribe implements rooms.Backbone.
func (b *Backbone) Unsubscribe(ctx context.Context, ch string, r rooms.Receiver) error {
	b.mu.Lock()
	s := b.subs[ch]
	if s == nil {
		b.mu.Unlock()
		return nil
	}
	if i := slices.IndexFunc(s.receivers, func(rc *receiver) bool { return rc.r == r }); i >= 0 {
		s.receivers = slices.Delete(s.receivers, i, i+1)
	}
	last := len(s.receivers) == 0
	if last {
		delete(b.subs, ch)
	}
	b.mu.Unlock()
	if !last {
		return nil
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.ps.Unsubscribe(ctx, b.liveKey(ch)); err != nil {
		return down("unsubscribe", err)
	}
	return nil
}

// SharedSecret returns the secret called name that every instance using
// this Redis shares, creating it (32 random bytes) on first use.
func (b *Backbone) SharedSecret(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	key := b.key("secret:", name)
	fresh := make([]byte, 32)
	_, _ = rand.Read(fresh)
	if err := b.rdb.SetNX(ctx, key, fresh, 0).Err(); err != nil {
		return nil, down("secret", err)
	}
	v, err := b.rdb.Get(ctx, key).Bytes()
	if err != nil {
		return nil, down("secret", err)
	}
	return v, nil
}

// claimScript sets a single-use key to a value of the caller's own unless it
// exists; it answers 1 when the key holds that value, so a resend of the
// same call (go-redis after a lost reply) still counts as the claim.
//
// KEYS: the key. ARGV: the caller's value, ttl ms.
var claimScript = goredis.NewScript(`
local prev = redis.call('GET', KEYS[1])
if prev then
  if prev == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
`)

// ClaimOnce implements rooms.Claimer.
func (b *Backbone) ClaimOnce(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	mine := newEpoch() + newEpoch()
	ok, err := claimScript.Run(ctx, b.rdb, []string{b.key("once:", key)}, mine, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, down("claim", err)
	}
	return ok == 1, nil
}
