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
	// Client is the polling client's id, for exclude_self.
	Client string
	// Timeout is how long to hold the poll when nothing is waiting.
	Timeout time.Duration
	// Identity is who polls; an authenticated poll of several rooms also
	// carries the user's private channel.
	Identity Identity
	// Multi marks a poll of /v1/poll, which carries the user's channel.
	Multi bool
}

// PollResult is the answer to a poll.
type PollResult struct {
	// Events are KindEvent deliveries in Seq order (volatile ones last).
	Events []Delivery
	// Cursor is where the next poll continues from.
	Cursor string
	// Reset is set when the cursor was older than retention or from a
	// lost history: Events then start at the oldest retained event.
	Reset bool
}

// Poll answers a long-poll statelessly from history: at once when events
// follow the cursor, otherwise once one arrives or Timeout passes. Any
// instance can answer any poll.
func (h *Hub) Poll(ctx context.Context, req PollRequest) (PollResult, error) {
	channels := slices.Clone(req.Channels)
	slices.Sort(channels)
	channels = slices.Compact(channels)
	if len(channels) == 0 {
		return PollResult{}, fmt.Errorf("%w: no room", ErrInvalidRoom)
	}
	if len(channels) > h.opts.MaxRooms {
		return PollResult{}, fmt.Errorf("%w: at most %d rooms per poll", ErrTooManyRooms, h.opts.MaxRooms)
	}
	for _, ch := range channels {
		if err := h.authorize(req.Identity, ch); err != nil {
			return PollResult{}, err
		}
	}
	if err := h.checkBan(ctx, req.Identity); err != nil {
		return PollResult{}, err
	}
	// A poller is present while its lease, twice its hold, lasts.
	lease := time.Now().Add(2 * req.Timeout)
	for _, ch := range channels {
		if on, announce := h.presenceRules(ch); on && req.Timeout > 0 {
			_ = h.presence.Enter(ctx, ch, Member{Conn: "poll:" + req.Client, Client: req.Client,
				User: req.Identity.User, Name: req.Identity.Name, Expires: lease}, announce)
		}
	}
	channels = append(channels, implicitChannels(channels)...)
	if req.Multi && req.Identity.User != "" {
		channels = append(channels, UserChannel(req.Identity.User))
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)
	epoch, err := h.bb.Epoch(ctx)
	if err != nil {
		return PollResult{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	cur := Cursor{Epoch: epoch}
	var res PollResult
	if req.Cursor != "" {
		given, err := h.codec.Decode(req.Cursor)
		if err != nil {
			return PollResult{}, err
		}
		if given.Epoch != epoch {
			res.Reset = true
		} else {
			for _, ch := range channels {
				if p, ok := given.Get(ch); ok {
					cur.Set(ch, p)
				}
			}
		}
	}
	for _, ch := range channels {
		if _, ok := cur.Get(ch); ok {
			continue
		}
		if res.Reset {
			cur.Set(ch, 0)
			continue
		}
		head, err := h.bb.Head(ctx, ch)
		if err != nil {
			return PollResult{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		cur.Set(ch, head)
	}
	if req.Cursor == "" {
		res.Cursor = h.codec.Encode(cur)
		return res, nil
	}

	if err := h.collect(ctx, &cur, channels, req.Client, &res); err != nil {
		return PollResult{}, err
	}
	h.mu.RLock()
	draining := h.draining
	h.mu.RUnlock()
	if len(res.Events) > 0 || res.Reset || draining || req.Timeout <= 0 {
		res.Cursor = h.codec.Encode(cur)
		return res, nil
	}

	// Nothing yet: wait for the next event as a short-lived connection.
	conn := h.newConnection(req.Client, false)
	defer h.Disconnect(conn)
	for _, ch := range channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			return PollResult{}, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		h.join(conn, c)
	}
	// Events accepted between the first look and the join are in history.
	if err := h.collect(ctx, &cur, channels, req.Client, &res); err != nil {
		return PollResult{}, err
	}
	if len(res.Events) == 0 && !res.Reset {
		timer := time.NewTimer(req.Timeout)
		defer timer.Stop()
		select {
		case <-conn.Ready():
			for _, d := range conn.Take(nil) {
				switch {
				case d.Kind == KindReset && d.epoch != "":
					// The backbone lost its history while the poll
					// was held: positions start over in the new epoch.
					res.Reset, cur.Epoch = true, d.epoch
					for i := range cur.Positions {
						cur.Positions[i].Seq = 0
					}
				case d.Kind != KindEvent:
				default:
					res.Events = append(res.Events, d)
					if d.Event.Volatile {
						continue
					}
					for _, ch := range d.Event.Channels {
						if p, ok := cur.Get(ch); ok && p < d.Event.Seq {
							cur.Set(ch, d.Event.Seq)
						}
					}
				}
			}
		case <-conn.Done():
		case <-h.drained:
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	res.Cursor = h.codec.Encode(cur)
	return res, nil
}

// collect adds to res the retained events after cur on channels, each once,
// in Seq order, and advances cur past them.
func (h *Hub) collect(ctx context.Context, cur *Cursor, channels []string, client string, res *PollResult) error {
	var all []Delivery
	bound := ^uint64(0)
	for _, ch := range channels {
		pos, _ := cur.Get(ch)
		hist, err := h.bb.Since(ctx, ch, pos, h.opts.PollLimit)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		if hist.Truncated {
			res.Reset = true
		}
		if hist.More {
			bound = min(bound, hist.Events[len(hist.Events)-1].Seq)
		}
		for _, ev := range hist.Events {
			all = append(all, Delivery{Kind: KindEvent, Event: ev, Index: ev.ChannelIndex(ch)})
		}
	}
	slices.SortStableFunc(all, func(a, b Delivery) int { return cmp.Compare(a.Event.Seq, b.Event.Seq) })
	var last uint64
	for _, d := range all {
		ev := d.Event
		if ev.Seq > bound {
			break
		}
		if ev.Seq == last {
			continue
		}
		last = ev.Seq
		for _, ch := range ev.Channels {
			if p, ok := cur.Get(ch); ok && p < ev.Seq {
				cur.Set(ch, ev.Seq)
			}
		}
		if !ev.Excludes(client) {
			res.Events = append(res.Events, d)
		}
	}
	return nil
}
