package rooms

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"time"
)

// A long-poller's connection stays joined between its polls, for a few
// seconds: its next poll, carrying the cursor the last answer gave, takes
// what arrived meanwhile from the connection's queue instead of reading
// history and joining and leaving every channel again (measured: the
// relay's CPU per poll). Any other poll (another cursor, other rooms, an
// instance that never saw the client) takes the path from history, so a
// session is only ever a shortcut. HubOptions.PollSessionTTL says how long
// a session waits for its next poll, HubOptions.MaxPollSessions how many
// may wait.

type pollSession struct {
	conn   *Connection
	client string
	// owner is who the client id is bound to, and proof its proof: a
	// session is only continued by its owner.
	owner    string
	proof    string
	caller   string   // who the session counts against (PollRequest.Caller)
	channels []string // sorted, implied channels included
	cursor   string   // the answer's cursor text
	cur      Cursor   // and what it holds
	// caughtUp is set once an answer reached the point where conn joined:
	// from then on the queue has everything after cur.
	caughtUp bool
	keep     bool // parked after the answer
	// presentAt is when the poller's presence lease was last renewed,
	// boundAt its client id's binding.
	presentAt time.Time
	boundAt   time.Time
	timer     *time.Timer
	parked    uint64 // parkings so far, guarded by pollSessions.mu
	batch     []Delivery
}

type pollSessions struct {
	mu       sync.Mutex
	closed   bool
	byID     map[string]*pollSession // by client id
	byCaller map[string]int          // how many of byID each caller holds
}

// add parks s; ps.mu must be held.
func (ps *pollSessions) add(s *pollSession) {
	if ps.byID == nil {
		ps.byID = make(map[string]*pollSession)
		ps.byCaller = make(map[string]int)
	}
	ps.byID[s.client] = s
	ps.byCaller[s.caller]++
}

// remove unparks s; ps.mu must be held and s parked.
func (ps *pollSessions) remove(s *pollSession) {
	delete(ps.byID, s.client)
	if ps.byCaller[s.caller]--; ps.byCaller[s.caller] <= 0 {
		delete(ps.byCaller, s.caller)
	}
}

// checkPollSession refuses a long-poll that would park a session its
// caller has no room for, before the poll creates anything: a client
// that already has one parked replaces it and needs no more room.
func (h *Hub) checkPollSession(client, caller string) error {
	ps := &h.polls
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.byID[client] != nil || caller == "" || h.opts.MaxPollSessionsPerCaller < 0 ||
		ps.byCaller[caller] < h.opts.MaxPollSessionsPerCaller {
		return nil
	}
	return fmt.Errorf("%w: at most %d long-pollers of one caller are kept between polls; poll without ?client=, or end others",
		ErrTooManySessions, h.opts.MaxPollSessionsPerCaller)
}

// takePollSession hands out the session a poll of channels from cursor
// can continue from, or nil.
func (h *Hub) takePollSession(client, proof, cursor string, id Identity, channels []string) *pollSession {
	ps := &h.polls
	ps.mu.Lock()
	s := ps.byID[client]
	if s == nil && client == "" {
		// A poll may name its client by its proof alone.
		if c, _, ok := parseClientProof(proof); ok {
			s = ps.byID[c]
		}
	}
	if s == nil || s.owner != clientOwner(id, proofSecret(proof)) {
		// Another caller naming the client's id leaves its session be.
		ps.mu.Unlock()
		return nil
	}
	s.keep = true
	ps.remove(s)
	s.timer.Stop()
	ps.mu.Unlock()
	fits := s.cursor == cursor && slices.Equal(s.channels, channels)
	select {
	case <-s.conn.Done():
		fits = false // closed meanwhile: too slow, or shut down
	default:
	}
	if !fits {
		// The client went on from elsewhere: this one is stale.
		h.Disconnect(s.conn)
		return nil
	}
	return s
}

// park keeps s for the client's next poll, for HubOptions.PollSessionTTL.
func (h *Hub) parkPollSession(s *pollSession) {
	ps := &h.polls
	ps.mu.Lock()
	old := ps.byID[s.client]
	full := old == nil && (len(ps.byID) >= h.opts.MaxPollSessions ||
		s.caller != "" && h.opts.MaxPollSessionsPerCaller >= 0 && ps.byCaller[s.caller] >= h.opts.MaxPollSessionsPerCaller)
	if ps.closed || full {
		ps.mu.Unlock()
		h.Disconnect(s.conn)
		return
	}
	if old != nil {
		old.timer.Stop()
		ps.remove(old)
	}
	ps.add(s)
	// A timer of an earlier parking may fire late, after the session was
	// taken and parked again: the generation tells it apart.
	s.parked++
	gen := s.parked
	s.timer = time.AfterFunc(h.opts.PollSessionTTL, func() { h.expirePollSession(s, gen) })
	ps.mu.Unlock()
	if old != nil {
		h.Disconnect(old.conn)
	}
}

func (h *Hub) expirePollSession(s *pollSession, gen uint64) {
	ps := &h.polls
	ps.mu.Lock()
	if ps.byID[s.client] != s || s.parked != gen {
		ps.mu.Unlock()
		return // taken by a poll, replaced, or parked again since
	}
	ps.remove(s)
	ps.mu.Unlock()
	h.Disconnect(s.conn)
}

// closePollSessions ends every parked session and parks no more.
func (h *Hub) closePollSessions() {
	ps := &h.polls
	ps.mu.Lock()
	ps.closed = true
	parked := ps.byID
	ps.byID, ps.byCaller = nil, nil
	ps.mu.Unlock()
	for _, s := range parked {
		s.timer.Stop()
		h.Disconnect(s.conn)
	}
}

// PollSessions returns how many long-pollers' connections are parked
// between polls.
func (h *Hub) PollSessions() int {
	h.polls.mu.Lock()
	defer h.polls.mu.Unlock()
	return len(h.polls.byID)
}

// PollPresenceLeases returns how many presence leases long-polls hold.
func (h *Hub) PollPresenceLeases() int { return h.pollPresence.Held() }

// takeQueued adds to res what the session's connection queued after its
// cursor, advancing the cursor: copies already answered from history are
// skipped by their position in their channel; copies of multi-channel
// events that another channel delivers (kindPass) only move their
// channel's position.
func (ps *pollSession) takeQueued(res *PollResult) {
	conn, cur := ps.conn, &ps.cur
	ps.batch = conn.take(ps.batch[:0])
	defer clear(ps.batch)
	for _, d := range ps.batch {
		switch {
		case d.Kind == KindReset && d.epoch != "":
			// The backbone lost its history: positions start over in
			// the new epoch.
			res.Reset, cur.Epoch = true, d.epoch
			for i := range cur.Positions {
				cur.Positions[i].Seq, cur.Positions[i].From = 0, 0
			}
		case d.Kind != KindEvent && d.Kind != kindPass:
		case d.Event.Volatile:
			res.Events = append(res.Events, d)
		default:
			ev := d.Event
			ch, p := ev.Channels[d.Index], ev.Position(d.Index)
			q, ok := cur.Get(ch)
			answered := ok && q >= p
			if ok && !answered {
				cur.Set(ch, p)
			}
			for also := d.seq; also != 0; also &= also - 1 {
				j := bits.TrailingZeros64(also)
				if q, ok := cur.Get(ev.Channels[j]); ok && q < ev.Position(j) {
					cur.Set(ev.Channels[j], ev.Position(j))
				}
			}
			if d.Kind == KindEvent && !answered {
				d.seq = 0
				res.Events = append(res.Events, d)
			}
		}
	}
}
