package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.Directory = (*Backbone)(nil)

// Instance implements rooms.Directory.
func (b *Backbone) Instance() string { return b.instance }

func (b *Backbone) controlKey(instance string) string { return b.key("ctl:", instance) }

// RegisterConnection implements rooms.Directory.
func (b *Backbone) RegisterConnection(ctx context.Context, info rooms.ConnectionInfo, ttl time.Duration) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	raw, _ := json.Marshal(info)
	cmd := goredis.NewStatusCmd(ctx, "set", b.key("c:", info.ID), raw, "px", max(ttl.Milliseconds(), 1))
	if err := b.keep.do(ctx, cmd, nil); err != nil {
		return down("register connection", err)
	}
	return nil
}

// UnregisterConnection implements rooms.Directory.
func (b *Backbone) UnregisterConnection(ctx context.Context, id string) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.rdb.Del(ctx, b.key("c:", id)).Err(); err != nil {
		return down("unregister connection", err)
	}
	return nil
}

// LookupConnection implements rooms.Directory.
func (b *Backbone) LookupConnection(ctx context.Context, id string) (rooms.ConnectionInfo, bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	raw, err := b.rdb.Get(ctx, b.key("c:", id)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return rooms.ConnectionInfo{}, false, nil
	}
	if err != nil {
		return rooms.ConnectionInfo{}, false, down("lookup connection", err)
	}
	var info rooms.ConnectionInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return rooms.ConnectionInfo{}, false, nil
	}
	// An entry outlives a killed instance by up to its TTL: a connection
	// is held only while its owner still listens on its control channel
	// (Redis drops a dead client's subscriptions as its socket closes).
	n, err := b.rdb.PubSubNumSub(ctx, b.controlKey(info.Owner)).Result()
	if err != nil {
		return rooms.ConnectionInfo{}, false, down("lookup connection", err)
	}
	if n[b.controlKey(info.Owner)] == 0 {
		return rooms.ConnectionInfo{}, false, nil
	}
	return info, true, nil
}

// HandleCommands implements rooms.Directory.
func (b *Backbone) HandleCommands(run func(context.Context, rooms.Command) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.run = run
}

// control is a message on an instance's control channel: a command from
// another instance, or the reply to one this instance sent.
type control struct {
	Corr  string         `json:"corr"`
	From  string         `json:"from,omitempty"`
	Cmd   *rooms.Command `json:"cmd,omitempty"`
	Error string         `json:"error,omitempty"`
}

// Forward implements rooms.Directory.
func (b *Backbone) Forward(ctx context.Context, owner string, cmd rooms.Command) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	corr := newEpoch() + newEpoch()
	reply := make(chan string, 1)
	b.mu.Lock()
	b.pending[corr] = reply
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, corr)
		b.mu.Unlock()
	}()
	raw, _ := json.Marshal(control{Corr: corr, From: b.instance, Cmd: &cmd})
	n, err := b.rdb.Publish(ctx, b.controlKey(owner), raw).Result()
	if err != nil {
		return down("forward", err)
	}
	if n == 0 {
		return rooms.ErrUnknownConnection // the owner is gone
	}
	select {
	case code := <-reply:
		return rooms.CommandError(code)
	case <-ctx.Done():
		return fmt.Errorf("%w: the instance holding the connection did not answer", rooms.ErrBackboneDown)
	}
}

// controlMessage handles traffic on this instance's control channel. Commands
// run on their own goroutine: a join subscribes, and subscribing waits for
// the dispatcher that called this.
func (b *Backbone) controlMessage(payload string) {
	var m control
	if json.Unmarshal([]byte(payload), &m) != nil {
		return
	}
	if m.Cmd == nil {
		b.mu.Lock()
		reply := b.pending[m.Corr]
		b.mu.Unlock()
		if reply != nil {
			select {
			case reply <- m.Error:
			default:
			}
		}
		return
	}
	b.mu.Lock()
	run := b.run
	b.mu.Unlock()
	select {
	case <-b.stop:
		return
	default:
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.OpTimeout)
		defer cancel()
		err := errors.New("no command handler")
		if run != nil {
			err = run(ctx, *m.Cmd)
		}
		raw, _ := json.Marshal(control{Corr: m.Corr, Error: rooms.CommandErrorCode(err)})
		_ = b.rdb.Publish(ctx, b.controlKey(m.From), raw).Err()
	}()
}
