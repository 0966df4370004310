package rooms

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
		ds, mark, err := h.replayChannel(ctx, conn, from, ch, head, joinedAt, leftBy, resets)
		if err != nil {
			return nil, err
		}
		events = append(events, ds...)
		if mark != nil {
			marks = append(marks, *mark)
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
	return placeMarks(events, marks), nil
}

// replayChannel returns the retained events of channel ch, held by the
// resumed stream with join point head, that a resume from the cursor from
// replays, and sets where ch starts; mark is the roomcast:left and
// roomcast:joined to place among them when the room was left and joined
// again after the cursor was written.
func (h *Hub) replayChannel(ctx context.Context, conn *Connection, from *Cursor, ch string, head uint64, joinedAt map[string]uint64, leftBy map[string]leftRoom, resets *[]Delivery) (events []Delivery, mark *leaveMark, err error) {
	pos, ok, start := h.replayPosition(conn, from, ch, head, joinedAt, resets)
	startAt := func(seq uint64) {
		conn.cursor.Set(ch, seq)
		if conn.multi && IsRoomChannel(ch) && start <= seq {
			conn.cursor.setFrom(ch, start)
		}
	}
	if ok && pos > head {
		return nil, nil, h.replayAhead(ctx, conn, ch, pos, head, startAt, resets)
	}
	if !ok || pos == head {
		startAt(head)
		return nil, nil, nil
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
		return nil, nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
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
		return nil, nil, nil
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
		return events, &leaveMark{channel: ch, leave: l.leave, reason: l.reason, rejoined: true, join: j}, nil
	}
	return events, nil, nil
}

// replayPosition returns where the resumed stream was in channel ch, held
// now with join point head: pos, when known (ok), and the point the
// channel was started at (start), whose copies up to it came through
// sibling channels.
func (h *Hub) replayPosition(conn *Connection, from *Cursor, ch string, head uint64, joinedAt map[string]uint64, resets *[]Delivery) (pos uint64, ok bool, start uint64) {
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
	start = head
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
	return pos, ok, start
}

// replayAhead starts channel ch, held with join point head, for a cursor
// at pos, ahead of head.
func (h *Hub) replayAhead(ctx context.Context, conn *Connection, ch string, pos, head uint64, startAt func(uint64), resets *[]Delivery) error {
	// The cursor is ahead of what this instance has seen of the
	// channel: either its live feed lags another instance's by a
	// moment, or the backbone's history went backwards.
	bbHead, err := h.bb.Head(ctx, ch)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if pos > bbHead {
		*resets = append(*resets, Delivery{Kind: KindReset, Channel: ch, Reason: ResetHistoryLost})
		startAt(head)
		return nil
	}
	// Lagging: what arrives live up to pos was seen already.
	conn.mu.Lock()
	if conn.floor == nil {
		conn.floor = make(map[string]uint64)
	}
	conn.floor[ch] = pos
	conn.mu.Unlock()
	startAt(pos)
	return nil
}

// placeMarks inserts the roomcast:left (and roomcast:joined) of each
// leave mark among the replayed events.
func placeMarks(events []Delivery, marks []leaveMark) []Delivery {
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
	return events
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
