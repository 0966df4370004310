package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

// PublishMany implements rooms.BatchPublisher: the publish script once per
// message, in order, in one pipeline (one write, one read). Redis runs a
// connection's commands in order, so messages to one channel are stored
// in slice order.
//
// Unlike Publish it never runs a script again after it may have run: when
// the connection fails mid-pipeline, the messages whose replies came back
// are answered as stored (or refused), and every later one, which may or
// may not have run, is an *rooms.OutcomeUnknownError naming its token, for
// the caller to resend. The one repeat is a pipeline refused whole with
// NOSCRIPT (Redis's script cache was emptied): nothing of it ran.
func (b *Backbone) PublishMany(ctx context.Context, ms []rooms.Message, keys []string) ([]rooms.Published, []error) {
	res := make([]rooms.Published, len(ms))
	errs := make([]error, len(ms))
	tokens := make([]rooms.PublishToken, len(ms))
	calls := make([][]any, len(ms))
	for i, m := range ms {
		if !m.Token.IsZero() {
			if err := m.Token.Check(time.Now()); err != nil {
				errs[i] = err
				continue
			}
		}
		token, fresh := m.Token, m.Token.IsZero()
		if fresh {
			token = rooms.NewPublishToken(time.Now())
		}
		tokens[i] = token
		k, args, err := b.publishArgs(m, keys[i], token, fresh)
		if err != nil {
			errs[i] = err
			continue
		}
		call := make([]any, 0, 3+len(k)+len(args))
		call = append(call, "evalsha", publishScript.Hash(), len(k))
		for _, key := range k {
			call = append(call, key)
		}
		calls[i] = append(call, args...)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		// Nothing was sent: go-redis would fail the pipeline with ctx's
		// error, which reads as a connection that may have run it.
		for i := range calls {
			if calls[i] != nil {
				errs[i] = down("publish", err)
			}
		}
		return res, errs
	}
	cmds, execErr := b.pipelinePublishes(ctx, calls)
	if execErr != nil && allNoScript(cmds) {
		// Loading is harmless to repeat: go-redis may retry it.
		if err := publishScript.Load(ctx, b.rdb).Err(); err == nil {
			cmds, execErr = b.pipelinePublishes(ctx, calls)
		}
	}
	for i, cmd := range cmds {
		if cmd != nil {
			res[i], errs[i] = batchReply(cmd, execErr, tokens[i])
			if epoch, seq, err := rooms.ParseEventID(res[i].ID); errs[i] == nil && err == nil {
				b.seen.note(epoch, seq) // for the failover check (failover.go)
			}
		}
	}
	return res, errs
}

// pipelinePublishes sends calls (nil ones skipped) in one pipeline; cmds[i]
// answers calls[i].
func (b *Backbone) pipelinePublishes(ctx context.Context, calls [][]any) (cmds []*goredis.Cmd, execErr error) {
	cmds = make([]*goredis.Cmd, len(calls))
	pipe := b.rdb.Pipeline()
	for i, call := range calls {
		if call == nil {
			continue
		}
		cmds[i] = goredis.NewCmd(ctx, call...)
		// onceCmd: go-redis does not resend a pipeline holding one.
		_ = pipe.Process(ctx, onceCmd{cmds[i]})
	}
	if pipe.Len() == 0 {
		return cmds, nil
	}
	_, execErr = pipe.Exec(ctx)
	return cmds, execErr
}

// allNoScript reports whether Redis refused every command with NOSCRIPT.
func allNoScript(cmds []*goredis.Cmd) bool {
	some := false
	for _, cmd := range cmds {
		if cmd == nil {
			continue
		}
		if !goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			return false
		}
		some = true
	}
	return some
}

// batchReply reads one publish of a pipeline whose Exec returned execErr.
func batchReply(cmd *goredis.Cmd, execErr error, token rooms.PublishToken) (rooms.Published, error) {
	err := cmd.Err()
	// A pipeline that failed stamps its error on every command, those
	// answered before the failure too; a command whose reply was read
	// holds its value.
	var reply goredis.Error
	val := cmd.Val()
	if err != nil && !errors.As(err, &reply) && val != nil {
		err = nil
	}
	if err != nil {
		switch {
		case errors.As(err, &reply):
			// Redis answered: the script refused, or never ran.
			return rooms.Published{}, down("publish", err)
		case execErr != nil && sentUnanswered(err):
			return rooms.Published{}, &rooms.OutcomeUnknownError{Token: token, Err: down("publish", err)}
		}
		return rooms.Published{}, down("publish", err)
	}
	// The reply as StringSlice reads it, without the stamped error.
	items, _ := val.([]any)
	res := make([]string, 0, len(items))
	for _, it := range items {
		str, ok := it.(string)
		if !ok {
			return rooms.Published{}, down("publish", fmt.Errorf("unexpected reply %v", val))
		}
		res = append(res, str)
	}
	if len(res) == 2 && res[0] == "reused" {
		return rooms.Published{}, fmt.Errorf("%w: it named a publish with other rooms, event or body", rooms.ErrPublishTokenReused)
	}
	if len(res) != 2 {
		return rooms.Published{}, down("publish", fmt.Errorf("unexpected reply %q", res))
	}
	p, err := parseResult(res[1])
	if err != nil {
		return rooms.Published{}, down("publish", err)
	}
	p.Duplicate = res[0] == "dup"
	return p, nil
}
