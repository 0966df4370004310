package redis

import (
	"context"
	"errors"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.Moderator = (*Backbone)(nil)

// Ban implements rooms.Moderator.
func (b *Backbone) Ban(ctx context.Context, user string, until time.Time) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	key := b.key("ban:", user)
	var err error
	if until.IsZero() {
		err = b.rdb.Del(ctx, key).Err()
	} else {
		err = b.rdb.Set(ctx, key, until.UnixMilli(), time.Until(until)).Err()
	}
	if err != nil {
		return down("ban", err)
	}
	return nil
}

// BannedUntil implements rooms.Moderator.
func (b *Backbone) BannedUntil(ctx context.Context, user string) (time.Time, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := b.rdb.Get(ctx, b.key("ban:", user)).Result()
	if errors.Is(err, goredis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, down("ban", err)
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}

// DeleteEvent implements rooms.Moderator.
func (b *Backbone) DeleteEvent(ctx context.Context, channel string, seq uint64) (bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := b.rdb.XDel(ctx, b.streamKey(channel), strconv.FormatUint(seq, 10)+"-0").Result()
	if err != nil {
		return false, down("delete event", err)
	}
	return n > 0, nil
}
