package rooms

import (
	"context"
	"errors"
	"fmt"
)

// MaxBatchEvents bounds the events of one batch publish.
const MaxBatchEvents = 1000

// BatchPublisher is implemented by backbones that store several publishes
// with fewer round trips than one each (the embedded backbone under one
// lock, Redis in one pipeline).
type BatchPublisher interface {
	// PublishMany publishes ms[i] with idempotency key keys[i] as Publish
	// would, in order: messages to one channel are stored in slice order.
	// It answers each message: errs[i] nil and res[i] its result, or
	// errs[i] its refusal. A message the backbone cannot tell was stored
	// gets an *OutcomeUnknownError naming its token; PublishMany never
	// sends a message twice.
	PublishMany(ctx context.Context, ms []Message, keys []string) (res []Published, errs []error)
}

// BatchResult answers one publish of a batch: Err, or Published.
type BatchResult struct {
	Published
	Err error
}

// PublishBatch applies the rules of Publish to each request in order —
// authorisation, bans, the payload limit, idempotency keys, one rate
// spending per request — and stores the allowed ones together, with as few
// round trips as the backbone allows. It answers each request in order; a
// request refused does not stop the others.
func (p *Publisher) PublishBatch(ctx context.Context, reqs []PublishRequest) []BatchResult {
	out := make([]BatchResult, len(reqs))
	ready := make([]prepared, 0, len(reqs))
	at := make([]int, 0, len(reqs)) // ready[j] answers reqs[at[j]]
	// down is the backbone's failure to answer an earlier request's checks
	// (bans, rate allowances): the later ones are answered with it rather
	// than each waiting out the call timeout again, which would hold a
	// batch of 1,000 events for 1,000 timeouts. Nothing of theirs was
	// spent or stored: the caller may simply send them again.
	var down error
	for i, req := range reqs {
		if down != nil {
			out[i].Err = down
			continue
		}
		pr, err := p.prepare(ctx, req)
		if err != nil {
			out[i].Err = err
			if errors.Is(err, ErrBackboneDown) || ctx.Err() != nil {
				down = fmt.Errorf("%w (%w: the backbone failed an earlier request of this batch): %w", ErrNotTried, ErrBackboneDown, err)
			}
			continue
		}
		ready = append(ready, pr)
		at = append(at, i)
	}
	if len(ready) == 0 {
		return out
	}
	ms := make([]Message, len(ready))
	keys := make([]string, len(ready))
	for j, pr := range ready {
		ms[j], keys[j] = pr.msg, pr.key
	}
	res, errs := p.storeMany(ctx, ms, keys)
	for j, pr := range ready {
		pr.done(errs[j] == nil || errors.As(errs[j], new(*OutcomeUnknownError)))
		out[at[j]] = BatchResult{Published: res[j], Err: errs[j]}
	}
	return out
}

// storeMany stores ms in order: in one call when the backbone can, else
// one publish after the other.
func (p *Publisher) storeMany(ctx context.Context, ms []Message, keys []string) ([]Published, []error) {
	if bp, ok := BackboneAs[BatchPublisher](p.bb); ok {
		return bp.PublishMany(ctx, ms, keys)
	}
	res := make([]Published, len(ms))
	errs := make([]error, len(ms))
	for i, m := range ms {
		res[i], errs[i] = p.bb.Publish(ctx, m, keys[i])
	}
	return res, errs
}
