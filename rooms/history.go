package rooms

import "context"

// HistoryRequest asks for a page of one channel's history.
type HistoryRequest struct {
	Identity Identity
	Channel  string
	// Before is the id of the oldest event already seen ("": the newest
	// page); an id of another epoch asks for a history that is gone.
	Before string
	// Limit is the most events the page holds (at least 1).
	Limit int
}

// HistoryPage is a page of history, oldest first.
type HistoryPage struct {
	Events []*Event
	// Before is the id to ask with for the page before this one; "" on the
	// oldest page.
	Before string
}

// History returns the newest events of a channel the caller may subscribe
// to, before req.Before: the same authorisation as a stream of it.
func (h *Hub) History(ctx context.Context, req HistoryRequest) (HistoryPage, error) {
	if err := h.authorize(req.Identity, req.Channel); err != nil {
		return HistoryPage{}, err
	}
	var before uint64
	if req.Before != "" {
		epoch, seq, err := ParseEventID(req.Before)
		if err != nil {
			return HistoryPage{}, err
		}
		current, err := h.bb.Epoch(ctx)
		if err != nil {
			return HistoryPage{}, err
		}
		if epoch != current {
			// Positions of another history mean nothing in this one.
			return HistoryPage{}, nil
		}
		before = seq
	}
	limit := max(req.Limit, 1)
	events, err := h.bb.Before(ctx, req.Channel, before, limit+1)
	if err != nil {
		return HistoryPage{}, err
	}
	page := HistoryPage{Events: events}
	if len(events) > limit {
		// One more than asked for: there is an older page, and it ends
		// before the oldest event of this one.
		page.Events = events[1:]
		page.Before = page.Events[0].ID()
	}
	return page, nil
}

// Epoch names the backbone's current history (see Backbone.Epoch): the
// readiness probe reads it to report the backbone's state.
func (h *Hub) Epoch(ctx context.Context) (string, error) { return h.bb.Epoch(ctx) }
