package rooms

import (
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
	held  map[string]map[string]time.Time // caller → id → expiry (zero: until released)
	total int
	// swept is when every caller's expired holdings were last freed: a
	// full sweep costs a pass over everything held, so refusals at the
	// global bound make one at most every sweepEvery.
	swept time.Time
}

// sweepEvery bounds how often a refusal at the global bound sweeps.
const sweepEvery = time.Second

// NewQuota returns a quota of perCaller holdings per caller and global in
// all; zero or less leaves that bound off.
func NewQuota(perCaller, global int) *Quota {
	return &Quota{perCaller: perCaller, global: global, now: time.Now, held: make(map[string]map[string]time.Time)}
}

// Take holds each of ids for caller until until (zero: until released),
// all or none: it reports false, taking nothing, when the new ones would
// pass the caller's or the global bound. Ids already held are renewed.
func (q *Quota) Take(caller string, until time.Time, ids ...string) bool {
	if q == nil {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	mine := q.held[caller]
	fresh := q.fresh(mine, ids, now)
	if fresh == 0 {
		for _, id := range ids {
			mine[id] = until
		}
		return true
	}
	if q.perCaller > 0 && len(mine)+fresh > q.perCaller {
		q.expire(caller, now)
		mine = q.held[caller]
		fresh = q.fresh(mine, ids, now)
		if len(mine)+fresh > q.perCaller {
			return false
		}
	}
	if q.global > 0 && q.total+fresh > q.global && now.Sub(q.swept) >= sweepEvery {
		q.expireAll(now)
		mine = q.held[caller]
		fresh = q.fresh(mine, ids, now)
	}
	if q.global > 0 && q.total+fresh > q.global {
		return false
	}
	if mine == nil {
		mine = make(map[string]time.Time, len(ids))
		q.held[caller] = mine
	}
	for _, id := range ids {
		if _, ok := mine[id]; !ok {
			q.total++
		}
		mine[id] = until
	}
	return true
}

// fresh counts the ids that mine does not hold yet (live), duplicates once.
func (q *Quota) fresh(mine map[string]time.Time, ids []string, now time.Time) int {
	n := 0
	for i, id := range ids {
		if exp, ok := mine[id]; ok && (exp.IsZero() || now.Before(exp)) {
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
		if exp, ok := mine[id]; !ok || !exp.IsZero() && !now.Before(exp) {
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
	for id, exp := range mine {
		if !exp.IsZero() && !now.Before(exp) {
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
