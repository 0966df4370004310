package rooms

import (
	"slices"
	"sync"
	"time"
)

// Quota bounds one kind of state that requests create on a caller's behalf
// (poll sessions, poll presence leases, idempotency keys, tickets, …): at
// most PerCaller holdings for each caller — the user, else the client's
// address — and Global in all. A holding has an id, so that taking an id
// the caller already holds renews it instead of counting it twice, and it
// may expire: an expired holding no longer counts, whether or not it was
// released. A nil *Quota holds nothing and refuses nothing.
//
// It is safe for concurrent use, and its own memory is bounded by Global.
type Quota struct {
	perCaller, global int
	now               func() time.Time

	mu    sync.Mutex
	held  map[string]map[string]holding // caller → id → holding
	total int
	// stamps numbers the takings, so that Undo takes back only what no
	// later taking renewed.
	stamps uint64
	// swept is when every caller's expired holdings were last freed: a
	// full sweep costs a pass over everything held, so refusals at the
	// global bound make one at most every sweepEvery.
	swept time.Time
}

// holding is one id held: until its expiry (zero: until released), by the
// taking stamped so, the last to take or renew it.
type holding struct {
	until time.Time
	stamp uint64
}

func (h holding) live(now time.Time) bool { return h.until.IsZero() || now.Before(h.until) }

// sweepEvery bounds how often a refusal at the global bound sweeps.
const sweepEvery = time.Second

// NewQuota returns a quota of perCaller holdings per caller and global in
// all; zero or less leaves that bound off.
func NewQuota(perCaller, global int) *Quota {
	return &Quota{perCaller: perCaller, global: global, now: time.Now, held: make(map[string]map[string]holding)}
}

// Take holds each of ids for caller until until (zero: until released),
// all or none: it reports false, taking nothing, when the new ones would
// pass the caller's or the global bound. Ids already held are renewed.
func (q *Quota) Take(caller string, until time.Time, ids ...string) bool {
	_, ok := q.Hold(caller, until, ids...)
	return ok
}

// Taking is one Hold's taking: the indexes of the ids it added (that
// caller did not hold), for Undo.
type Taking struct {
	caller string
	stamp  uint64
	ids    []string
}

// Hold is Take, and returns the taking, so that a request that fails after
// it can Undo what it added — and only that: two requests of one caller
// may hold the same id at once, and the one that fails must not take back
// the holding the other renewed.
func (q *Quota) Hold(caller string, until time.Time, ids ...string) (Taking, bool) {
	if q == nil || len(ids) == 0 {
		return Taking{}, true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	mine := q.held[caller]
	fresh := q.fresh(mine, ids, now)
	if fresh > 0 && q.perCaller > 0 && len(mine)+fresh > q.perCaller {
		q.expire(caller, now)
		mine = q.held[caller]
		fresh = q.fresh(mine, ids, now)
		if len(mine)+fresh > q.perCaller {
			return Taking{}, false
		}
	}
	if fresh > 0 && q.global > 0 && q.total+fresh > q.global && now.Sub(q.swept) >= sweepEvery {
		q.expireAll(now)
		mine = q.held[caller]
		fresh = q.fresh(mine, ids, now)
	}
	if fresh > 0 && q.global > 0 && q.total+fresh > q.global {
		return Taking{}, false
	}
	if mine == nil {
		mine = make(map[string]holding, len(ids))
		q.held[caller] = mine
	}
	q.stamps++
	t := Taking{caller: caller, stamp: q.stamps}
	for _, id := range ids {
		h, ok := mine[id]
		if !ok {
			q.total++
		}
		if (!ok || !h.live(now)) && !slices.Contains(t.ids, id) {
			t.ids = append(t.ids, id)
		}
		mine[id] = holding{until: until, stamp: t.stamp}
	}
	return t, true
}

// Added reports whether the taking added id.
func (t Taking) Added(id string) bool { return slices.Contains(t.ids, id) }

// Undo releases the ids t added that no later taking renewed since, and
// returns them.
func (q *Quota) Undo(t Taking) []string {
	if q == nil || len(t.ids) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	mine := q.held[t.caller]
	var undone []string
	for _, id := range t.ids {
		if h, ok := mine[id]; ok && h.stamp == t.stamp {
			delete(mine, id)
			q.total--
			undone = append(undone, id)
		}
	}
	if len(mine) == 0 {
		delete(q.held, t.caller)
	}
	return undone
}

// fresh counts the ids that mine does not hold yet (live), duplicates once.
func (q *Quota) fresh(mine map[string]holding, ids []string, now time.Time) int {
	n := 0
	for i, id := range ids {
		if h, ok := mine[id]; ok && h.live(now) {
			continue
		}
		dup := false
		for _, earlier := range ids[:i] {
			if earlier == id {
				dup = true
				break
			}
		}
		if !dup {
			n++
		}
	}
	return n
}

// Missing returns the indexes of the ids that caller does not hold (live).
func (q *Quota) Missing(caller string, ids ...string) []int {
	var out []int
	if q == nil {
		return out
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	mine := q.held[caller]
	for i, id := range ids {
		if h, ok := mine[id]; !ok || !h.live(now) {
			out = append(out, i)
		}
	}
	return out
}

// Release gives up caller's holdings of ids.
func (q *Quota) Release(caller string, ids ...string) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	mine := q.held[caller]
	for _, id := range ids {
		if _, ok := mine[id]; ok {
			delete(mine, id)
			q.total--
		}
	}
	if len(mine) == 0 {
		delete(q.held, caller)
	}
}

// Held returns how many holdings have not expired (and frees the others).
func (q *Quota) Held() int {
	if q == nil {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.expireAll(q.now())
	return q.total
}

// expire frees caller's expired holdings; q.mu must be held.
func (q *Quota) expire(caller string, now time.Time) {
	mine := q.held[caller]
	for id, h := range mine {
		if !h.live(now) {
			delete(mine, id)
			q.total--
		}
	}
	if len(mine) == 0 {
		delete(q.held, caller)
	}
}

func (q *Quota) expireAll(now time.Time) {
	q.swept = now
	for caller := range q.held {
		q.expire(caller, now)
	}
}
