package rooms

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// PollRequest is one long-poll.
type PollRequest struct {
	// Channels are the canonical channels polled.
	Channels []string
	// Cursor is where the previous answer left off ("" for a first poll).
	Cursor string
	// Client is the polling client's id, for exclude_self; "" makes the
	// hub generate one (or take the one Proof names).
	Client string
	// Caller is who the state the poll keeps (its session, its presence
	// leases) counts against: the user, else the client's address. ""
	// bounds it only in all (HubOptions.MaxPollSessions, MaxPollPresence).
	Caller string
	// Proof is the client id's proof, which an anonymous caller must send
	// to use an id again (see clientid.go).
	Proof string
	// Timeout is how long to hold the poll when nothing is waiting.
	Timeout time.Duration
	// Identity is who polls; an authenticated poll of several rooms also
	// carries the user's private channel.
	Identity Identity
	// Multi marks a poll of /v1/poll, which carries the user's channel.
	Multi bool
	// KeepSession keeps a long-poll's connection joined after the answer
	// for the client's next poll (see pollsession.go): set it when the
	// client named itself, so that its next poll can be recognised.
	KeepSession bool
}

// PollResult is the answer to a poll.
type PollResult struct {
	// Events are KindEvent deliveries in the order they were published.
	Events []Delivery
	// Cursor is where the next poll continues from.
	Cursor string
	// Reset is set when the cursor was older than retention or from a
	// lost history: Events then start at the oldest retained event.
	Reset bool
	// Client is the poller's client id and Proof its proof.
	Client, Proof string
}

// Poll answers a long-poll from its cursor: at once when events follow it,
// otherwise once one arrives or Timeout passes. Any instance can answer any
// poll from history; the instance that answered a poller's last poll
// answers its next one from the connection it kept (pollsession.go).
func (h *Hub) Poll(ctx context.Context, req PollRequest) (_ PollResult, err error) {
	h.mu.RLock()
	draining := h.draining
	h.mu.RUnlock()
	held := req.Cursor != "" && !draining && req.Timeout > 0
	// Everything that can refuse the poll is checked before the poll
	// creates anything (presence, a connection, a session): a refused
	// poll leaves nothing behind.
	a, err := h.admit(ctx, admitRequest{kind: admitPoll, rooms: req.Channels, client: req.Client,
		proof: req.Proof, caller: req.Caller, identity: req.Identity, cursor: req.Cursor, user: req.Multi,
		parked: req.Cursor != "" && req.Timeout > 0 && req.KeepSession, park: held && req.KeepSession})
	if err != nil {
		return PollResult{}, err
	}
	if a.parked != nil {
		return h.pollParked(ctx, req, a)
	}
	defer func() {
		if err != nil {
			a.undo() // a refused poll binds no new id
		}
	}()
	req.Client = a.client
	res := PollResult{Client: a.client, Proof: a.proof, Reset: len(a.resets) > 0}
	cur, err := h.pollStart(ctx, a)
	if err != nil {
		return PollResult{}, err
	}
	// Made present under the client id bound: presence is keyed by it,
	// which must be the caller's.
	present := time.Now()
	unpresent, err := h.enterPresence(ctx, req, a.rooms)
	if err != nil {
		return PollResult{}, err
	}
	if req.Cursor == "" {
		res.Cursor = h.codec.Encode(cur)
		return res, nil
	}
	if !held {
		if _, err := h.collect(ctx, &cur, a.channels, req.Client, &res); err != nil {
			unpresent()
			return PollResult{}, err
		}
		res.Cursor = h.codec.Encode(cur)
		return res, nil
	}

	// A long-poller: its connection joins before history is read, so that
	// nothing published in between is missed, and stays for its next poll.
	conn := h.newConnection(req.Client, false)
	for _, ch := range a.channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			h.Disconnect(conn)
			unpresent()
			return PollResult{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		h.join(conn, c)
	}
	ps := &pollSession{conn: conn, client: req.Client, owner: clientOwner(req.Identity, proofSecret(res.Proof)),
		proof: res.Proof, caller: req.Caller, channels: a.channels, cur: cur, keep: req.KeepSession,
		presentAt: present, boundAt: present}
	res, err = h.pollFrom(ctx, ps, req.Timeout, res)
	if err != nil {
		unpresent()
	}
	return res, err
}

// pollParked answers a long-poll from the session its previous poll
// parked (admission.parked).
func (h *Hub) pollParked(ctx context.Context, req PollRequest, a *admission) (PollResult, error) {
	ps := a.parked
	// The lease and the client id's binding are renewed once a quarter
	// of them has passed, not at every poll (with Redis, a round trip
	// each).
	now := time.Now()
	if now.Sub(ps.boundAt) >= h.opts.ClientTTL/4 {
		if err := h.renewClient(ctx, req.Identity, bindCaller(req), ps.proof); err != nil {
			h.Disconnect(ps.conn)
			return PollResult{}, err
		}
		ps.boundAt = now
	}
	if now.Sub(ps.presentAt) >= req.Timeout/2 {
		if _, err := h.enterPresence(ctx, req, a.rooms); err == nil {
			ps.presentAt = now
		}
	}
	return h.pollFrom(ctx, ps, req.Timeout, PollResult{Client: ps.client, Proof: ps.proof})
}

// pollStart returns the cursor a poll starts from: the given one's
// positions of the polled channels, and for the others their heads (or
// the beginning, after a reset).
func (h *Hub) pollStart(ctx context.Context, a *admission) (Cursor, error) {
	cur := Cursor{Epoch: a.epoch}
	if a.from != nil {
		for _, ch := range a.channels {
			if p, ok := a.from.Get(ch); ok {
				cur.Set(ch, p)
				cur.setFrom(ch, a.from.From(ch))
			}
		}
	}
	multi := false
	for i, ch := range a.channels {
		multi = multi || IsRoomChannel(ch) && slices.ContainsFunc(a.channels[i+1:], IsRoomChannel)
	}
	for _, ch := range a.channels {
		if _, ok := cur.Get(ch); ok {
			continue
		}
		if len(a.resets) > 0 {
			cur.Set(ch, 0)
			continue
		}
		head, err := h.bb.Head(ctx, ch)
		if err != nil {
			return Cursor{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		cur.Set(ch, head)
		if multi {
			// The cursor says where the room was started, for
			// every poll after this one (see collect).
			cur.setFrom(ch, head)
		}
	}
	return cur, nil
}

// bindCaller is who a poll's client-id binding counts against.
func bindCaller(req PollRequest) string { return cmp.Or(req.Caller, "\x00"+req.Client) }

// enterPresence makes a long-poller present in rooms while its lease,
// twice its hold, lasts; the leases count against the caller's quota, and
// a poll past it is refused before any is recorded. unpresent takes back
// the entries this call added (not those it only renewed), for a poll that
// fails after entering.
func (h *Hub) enterPresence(ctx context.Context, req PollRequest, rooms []string) (unpresent func(), err error) {
	unpresent = func() {}
	if req.Timeout <= 0 {
		return unpresent, nil
	}
	member := "poll:" + req.Client
	var on []string
	for _, ch := range rooms {
		if yes, _ := h.presenceRules(ch); yes {
			on = append(on, ch)
		}
	}
	if len(on) == 0 {
		return unpresent, nil
	}
	ids := make([]string, len(on))
	for i, ch := range on {
		ids[i] = ch + "\x00" + member
	}
	lease := time.Now().Add(2 * req.Timeout)
	caller := req.Caller
	if caller == "" {
		caller = "\x00" + member // its own: bounded only in all
	}
	// Two polls of one client may enter at once: the taking tells which
	// entries this one added, and a failed poll takes back only those no
	// other poll renewed since (that one holds the entry now).
	taking, ok := h.pollPresence.Hold(caller, lease, ids...)
	if !ok {
		return unpresent, fmt.Errorf("%w: at most %d presence leases of long-polls per caller", ErrLimitExceeded, h.opts.MaxPollPresencePerCaller)
	}
	for _, ch := range on {
		_, announce := h.presenceRules(ch)
		_ = h.presence.Enter(ctx, ch, Member{Conn: member, Client: req.Client,
			User: req.Identity.User, Name: req.Identity.Name, Expires: lease}, announce)
	}
	return func() {
		undone := h.pollPresence.Undo(taking)
		for i, ch := range on {
			if slices.Contains(undone, ids[i]) {
				h.exit(member, ch)
			}
		}
	}, nil
}

// pollFrom answers a long-poll from its session's connection: history up to
// the point where the connection joined, then what the connection queued,
// or else the first event to arrive within hold. The session is parked for
// the client's next poll.
func (h *Hub) pollFrom(ctx context.Context, ps *pollSession, hold time.Duration, res PollResult) (PollResult, error) {
	if !ps.caughtUp {
		// The queue holds what came since the join; history, read after
		// the join, holds everything before. Until an answer has reached
		// the join point (it may not, when history is longer than one
		// answer), history goes first.
		limited, err := h.collect(ctx, &ps.cur, ps.channels, ps.client, &res)
		if err != nil {
			h.Disconnect(ps.conn)
			return PollResult{}, err
		}
		ps.caughtUp = !limited
	}
	if ps.caughtUp {
		ps.takeQueued(&res)
	}
	if len(res.Events) == 0 && !res.Reset {
		timer := time.NewTimer(hold)
		defer timer.Stop()
	wait:
		for len(res.Events) == 0 && !res.Reset {
			select {
			case <-ps.conn.Ready():
				ps.takeQueued(&res)
			case <-ps.conn.Done():
				break wait
			case <-h.drained:
				break wait
			case <-timer.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	res.Cursor = h.codec.Encode(ps.cur)
	select {
	case <-ps.conn.Done():
		h.Disconnect(ps.conn) // too slow, or shutting down
	case <-ctx.Done():
		h.Disconnect(ps.conn) // the poller is gone
	default:
		if !ps.keep {
			h.Disconnect(ps.conn)
			break
		}
		ps.cursor = res.Cursor
		h.parkPollSession(ps)
	}
	return res, nil
}

// collect adds to res the retained events after cur on channels, in Seq
// order, and advances each channel's position in cur past its copies. A
// multi-channel event is answered once, through the first of its channels
// whose copy reaches the poller: a channel of the cursor whose copy is
// after the point the channel was started at (Position.From; 0 for a
// channel held from the start, whose copies up to the cursor were
// answered before). limited reports that the
// answer's bound left events out.
func (h *Hub) collect(ctx context.Context, cur *Cursor, channels []string, client string, res *PollResult) (limited bool, err error) {
	var all []Delivery
	bound := ^uint64(0)
	for _, ch := range channels {
		pos, _ := cur.Get(ch)
		hist, err := h.bb.Since(ctx, ch, pos, h.opts.PollLimit)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		if hist.Truncated {
			res.Reset = true
		}
		if hist.More {
			bound = min(bound, hist.Events[len(hist.Events)-1].Seq)
			limited = true
		}
		for _, ev := range hist.Events {
			all = append(all, Delivery{Kind: KindEvent, Event: ev, Index: ev.ChannelIndex(ch)})
		}
	}
	slices.SortStableFunc(all, func(a, b Delivery) int { return cmp.Compare(a.Event.Seq, b.Event.Seq) })
	for _, d := range all {
		ev := d.Event
		if ev.Seq > bound {
			break
		}
		ch, p := ev.Channels[d.Index], ev.Position(d.Index)
		if q, ok := cur.Get(ch); ok && q < p {
			cur.Set(ch, p)
		}
		if len(ev.Channels) > 1 && pollDelivering(ev, cur) != d.Index {
			continue
		}
		if !ev.Excludes(client) {
			res.Events = append(res.Events, d)
		}
	}
	return limited, nil
}

// pollDelivering returns the index of the channel through which a poll
// answers the multi-channel event ev (see collect), -1 for none.
func pollDelivering(ev *Event, cur *Cursor) int {
	for j, ch := range ev.Channels {
		if _, polled := cur.Get(ch); polled && ev.Position(j) > cur.From(ch) {
			return j
		}
	}
	return -1
}
