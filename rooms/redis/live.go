package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

// inbox is an unbounded queue between the pub/sub reader, which must never
// block (go-redis drops messages when its channel stays full), and the
// dispatcher, which may wait on Redis while it catches up.
type inbox struct {
	mu    sync.Mutex
	items []any
	wake  chan struct{}
}

func (q *inbox) push(vs ...any) {
	q.mu.Lock()
	q.items = append(q.items, vs...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *inbox) take(dst []any) []any {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst, q.items...)
	clear(q.items)
	q.items = q.items[:0]
	return dst
}

// readBatch bounds the messages read moves into the inbox at once.
const readBatch = 256

// read moves pub/sub traffic into the inbox: whatever go-redis's reader
// has queued by the time the first message is taken goes in together, so
// that a burst costs one lock and one wake-up of the dispatcher rather
// than one per message.
func (b *Backbone) read(msgs <-chan any) {
	defer b.wg.Done()
	batch := make([]any, 0, readBatch)
	for {
		select {
		case <-b.stop:
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			batch = append(batch[:0], m)
		more:
			for len(batch) < readBatch {
				select {
				case m, ok := <-msgs:
					if !ok {
						b.inbox.push(batch...)
						return
					}
					batch = append(batch, m)
				default:
					break more
				}
			}
			b.inbox.push(batch...)
			clear(batch)
		}
	}
}

// dispatch delivers live events to receivers in order, catching up from
// history whenever the per-channel count shows that pub/sub lost messages
// or a (re)subscription happened.
func (b *Backbone) dispatch() {
	defer b.wg.Done()
	var batch []any
	for {
		select {
		case <-b.stop:
			return
		case <-b.inbox.wake:
		}
		batch = b.inbox.take(batch[:0])
		for _, m := range batch {
			switch m := m.(type) {
			case *goredis.Subscription:
				if m.Kind == "subscribe" && m.Channel == b.controlKey(b.instance) {
					b.controlOnce.Do(func() { close(b.controlReady) })
					continue
				}
				if m.Kind == "subscribe" {
					b.subscribed(strings.TrimPrefix(m.Channel, b.key("l:", "")))
				}
			case *goredis.Message:
				if m.Channel == b.controlKey(b.instance) {
					b.controlMessage(m.Payload)
					continue
				}
				b.live(strings.TrimPrefix(m.Channel, b.key("l:", "")), m.Payload)
			}
		}
		clear(batch)
	}
}

func (b *Backbone) subscription(ch string) *subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subs[ch]
}

func (b *Backbone) receivers(s *subscription) []*receiver {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(s.receivers)
}

// deliver hands ev, seen through its channel i, to the receivers of s.
func (b *Backbone) deliver(s *subscription, ev *rooms.Event, i int) {
	for _, rc := range b.receivers(s) {
		rc.deliver(ev, i)
	}
}

// receiver is a Receiver of one subscription. Subscribe registers it
// before it reads the head it returns, so no event after that head is
// missed; until the head is known deliveries are held, and from then on
// only events after it are handed over.
type receiver struct {
	r rooms.Receiver

	mu      sync.Mutex
	pending bool
	held    []heldEvent
	epoch   string
	after   uint64
}

type heldEvent struct {
	ev *rooms.Event
	i  int
}

func (rc *receiver) deliver(ev *rooms.Event, i int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.pending {
		rc.held = append(rc.held, heldEvent{ev, i})
		return
	}
	if rc.wants(ev) {
		rc.r.Receive(ev, i)
	}
}

// start sets the position the receiver's Subscribe returned and hands over
// what was held meanwhile.
func (rc *receiver) start(epoch string, head uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.epoch, rc.after, rc.pending = epoch, head, false
	for _, h := range rc.held {
		if rc.wants(h.ev) {
			rc.r.Receive(h.ev, h.i)
		}
	}
	rc.held = nil
}

// wants reports whether ev comes after the receiver's starting position.
func (rc *receiver) wants(ev *rooms.Event) bool {
	return ev.Volatile || ev.Epoch != rc.epoch || ev.Seq > rc.after
}

// subscribed handles Redis's confirmation of a subscription: the first one
// fixes the position live delivery continues from; later ones follow a
// reconnect, after which whatever was published meanwhile is caught up.
func (b *Backbone) subscribed(ch string) {
	s := b.subscription(ch)
	if s == nil {
		return
	}
	if s.confirmed {
		b.catchUp(s, 0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.OpTimeout)
	defer cancel()
	epoch, err := b.Epoch(ctx)
	if err == nil {
		s.lastSeq, s.lastN, _, err = b.head(ctx, ch)
	}
	if err != nil {
		// Without a position, catch-up starts at the first live message.
		s.lastSeq, s.lastN = 0, 0
	}
	s.epoch = epoch
	s.confirmed = true
	close(s.ready)
}

// live handles one pub/sub message "1|epoch|seq|ts|i|n|body".
func (b *Backbone) live(ch, payload string) {
	s := b.subscription(ch)
	if s == nil || !s.confirmed {
		return
	}
	f := strings.SplitN(payload, "|", 7)
	if len(f) != 7 || f[0] != "1" {
		return
	}
	seq, err1 := strconv.ParseUint(f[2], 10, 64)
	ts, err2 := strconv.ParseInt(f[3], 10, 64)
	i, err3 := strconv.Atoi(f[4])
	n, err4 := strconv.ParseUint(f[5], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return
	}
	if n > 0 {
		if f[1] != s.epoch {
			s.epoch, s.lastSeq, s.lastN = f[1], 0, 0
		}
		// Seq, global and increasing, says what was delivered; the
		// per-channel count n only reveals gaps, and starts over when the
		// channel's bookkeeping expired while this instance listened.
		if seq <= s.lastSeq {
			if ts > s.lastTS && s.lastTS > 0 {
				// A position already used, by a newer event: Redis lost
				// its last writes (a failover to a lagging replica, a
				// restore) but kept its epoch. Start a new one, so that
				// subscribers are reset instead of silently missing
				// what was lost.
				b.rotateEpoch(f[1])
			}
			return // already delivered by a catch-up
		}
		if n != s.lastN+1 {
			if !b.catchUp(s, seq) {
				return
			}
			if s.epoch != f[1] || seq <= s.lastSeq {
				return // delivered, or its history was lost meanwhile
			}
		}
	}
	ev, err := decodeEvent(f[1], seq, ts, []byte(f[6]))
	if err != nil || i < 0 || i >= len(ev.Channels) || ev.Channels[i] != ch {
		return
	}
	if n > 0 {
		s.lastSeq, s.lastN, s.lastTS = seq, n, ts
		b.seen.note(s.epoch, seq)
	}
	b.deliver(s, ev, i)
}

// rotateEpochScript replaces the epoch when it still is ARGV[1].
var rotateEpochScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// rotateEpoch starts a new epoch in place of old, unless another instance
// already did.
func (b *Backbone) rotateEpoch(old string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.OpTimeout)
	defer cancel()
	_ = rotateEpochScript.Run(ctx, b.rdb, []string{b.key("", "epoch")}, old, newEpoch()).Err()
}

// catchUp delivers the retained events of s's channel after its last
// delivered one and before seq (0: all of them). It retries until history
// answers, and reports false only when the backbone closed first: giving up
// would lose those events silently, as the next live event moves the
// position past them.
func (b *Backbone) catchUp(s *subscription, before uint64) bool {
	wait := 50 * time.Millisecond
	for b.tryCatchUp(s, before) != nil {
		t := time.NewTimer(wait)
		select {
		case <-b.stop:
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
	return true
}

func (b *Backbone) tryCatchUp(s *subscription, before uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.OpTimeout)
	defer cancel()
	epoch, err := b.Epoch(ctx)
	if err != nil {
		return err
	}
	if epoch != s.epoch {
		// The history was lost: its positions, before among them, mean
		// nothing in the new one.
		s.epoch, s.lastSeq, s.lastN = epoch, 0, 0
		before = 0
	}
	end := "+"
	if before > 0 {
		end = "(" + strconv.FormatUint(before, 10) + "-0"
	}
	msgs, err := b.rdb.XRange(ctx, b.streamKey(s.channel), "("+strconv.FormatUint(s.lastSeq, 10)+"-0", end).Result()
	if err != nil {
		return err
	}
	for _, m := range msgs {
		ev, err := eventFromValues(m.ID, m.Values)
		if err != nil {
			continue
		}
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		n, _ := strconv.ParseUint(str("n"), 10, 64)
		i, _ := strconv.Atoi(str("i"))
		if ev.Epoch != s.epoch || ev.Seq <= s.lastSeq || i < 0 || i >= len(ev.Channels) {
			continue
		}
		s.lastSeq, s.lastN, s.lastTS = ev.Seq, n, ev.TS
		b.seen.note(s.epoch, ev.Seq)
		b.deliver(s, ev, i)
	}
	return nil
}
