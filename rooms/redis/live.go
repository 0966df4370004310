package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

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

func (q *inbox) push(v any) {
	q.mu.Lock()
	q.items = append(q.items, v)
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

// read moves pub/sub traffic into the inbox.
func (b *Backbone) read(msgs <-chan any) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			b.inbox.push(m)
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

func (b *Backbone) receivers(s *subscription) []rooms.Receiver {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(s.receivers)
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
		s.lastSeq, s.lastN, err = b.head(ctx, ch)
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
		if n <= s.lastN {
			return // already delivered by a catch-up
		}
		if s.lastN > 0 && n != s.lastN+1 || s.lastN == 0 && n > 1 && s.lastSeq == 0 {
			b.catchUp(s, seq)
			if n <= s.lastN {
				return
			}
		}
	}
	ev, err := decodeEvent(f[1], seq, ts, []byte(f[6]))
	if err != nil || i < 0 || i >= len(ev.Channels) || ev.Channels[i] != ch {
		return
	}
	if n > 0 {
		s.lastSeq, s.lastN = seq, n
	}
	for _, r := range b.receivers(s) {
		r.Receive(ev, i)
	}
}

// catchUp delivers the retained events of s's channel after its last
// delivered one and before seq (0: all of them).
func (b *Backbone) catchUp(s *subscription, before uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.OpTimeout)
	defer cancel()
	epoch, err := b.Epoch(ctx)
	if err != nil {
		return
	}
	if epoch != s.epoch {
		s.epoch, s.lastSeq, s.lastN = epoch, 0, 0
	}
	end := "+"
	if before > 0 {
		end = "(" + strconv.FormatUint(before, 10) + "-0"
	}
	msgs, err := b.rdb.XRange(ctx, b.streamKey(s.channel), "("+strconv.FormatUint(s.lastSeq, 10)+"-0", end).Result()
	if err != nil {
		return
	}
	for _, m := range msgs {
		ev, err := eventFromValues(m.ID, m.Values)
		if err != nil {
			continue
		}
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		n, _ := strconv.ParseUint(str("n"), 10, 64)
		i, _ := strconv.Atoi(str("i"))
		if ev.Epoch != s.epoch || n <= s.lastN || i < 0 || i >= len(ev.Channels) {
			continue
		}
		s.lastSeq, s.lastN = ev.Seq, n
		for _, r := range b.receivers(s) {
			r.Receive(ev, i)
		}
	}
}
