package memory

import (
	"context"
	"fmt"

	"github.com/roomcast/roomcast/rooms"
)

// PublishMany implements rooms.BatchPublisher: every message under one
// hold of the lock, in order, so a batch is never interleaved with other
// publishes.
func (b *Backbone) PublishMany(ctx context.Context, ms []rooms.Message, keys []string) ([]rooms.Published, []error) {
	res := make([]rooms.Published, len(ms))
	errs := make([]error, len(ms))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return res, errs
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	for i, m := range ms {
		if len(m.Channels) == 0 {
			errs[i] = fmt.Errorf("publish: no channels")
			continue
		}
		res[i], errs[i] = b.publishLocked(m, keys[i], now)
	}
	return res, errs
}
