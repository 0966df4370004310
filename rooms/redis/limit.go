package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.Limiter = (*Backbone)(nil)

// gcraScript is the generic cell rate algorithm: the key holds the
// theoretical arrival time of the next request, in Redis's clock.
//
// KEYS: the limit key. ARGV: emission interval (µs), burst.
// Returns {allowed, retry after µs}.
var gcraScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local dvt = emission * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + emission
local allowAt = next - dvt
if allowAt > now then return {0, allowAt - now} end
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1)
return {1, 0}
`)

// Take implements rooms.Limiter.
func (b *Backbone) Take(ctx context.Context, key string, rate float64, burst int) (bool, time.Duration, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	emission := emissionMicros(rate)
	v, err := gcraScript.Run(ctx, b.rdb, []string{b.key("rl:", key)}, emission, burst).Int64Slice()
	if err != nil || len(v) != 2 {
		return false, 0, down("rate limit", err)
	}
	return v[0] == 1, time.Duration(v[1]) * time.Microsecond, nil
}

// gcraAllScript is gcraScript over several limits at once: it takes one
// request of every limit, or of none when any has none left.
//
// KEYS: the limit keys. ARGV: emission interval (µs) and burst of each key,
// in turn. Returns {allowed, retry after µs (the longest wait)}.
var gcraAllScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local nexts = {}
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local dvt = emission * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  nexts[i] = tat + emission
  local allowAt = nexts[i] - dvt
  if allowAt - now > wait then wait = allowAt - now end
end
if wait > 0 then return {0, wait} end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, nexts[i], 'PX', math.ceil((nexts[i] - now) / 1000) + 1)
end
return {1, 0}
`)

// TakeAll implements rooms.Limiter.
func (b *Backbone) TakeAll(ctx context.Context, limits []rooms.RateLimit) (bool, time.Duration, error) {
	if len(limits) == 0 {
		return true, 0, nil
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	keys := make([]string, len(limits))
	args := make([]any, 0, 2*len(limits))
	for i, l := range limits {
		keys[i] = b.key("rl:", l.Key)
		args = append(args, emissionMicros(l.Rate), l.Burst)
	}
	v, err := gcraAllScript.Run(ctx, b.rdb, keys, args...).Int64Slice()
	if err != nil || len(v) != 2 {
		return false, 0, down("rate limit", err)
	}
	return v[0] == 1, time.Duration(v[1]) * time.Microsecond, nil
}

// maxEmission bounds the time between two requests, in microseconds (11.6
// days): a slower rate would overflow the conversion to int64, and the
// theoretical arrival times must stay exact in Lua's doubles.
const maxEmission = 1e12

// emissionMicros is the time between two requests at rate per second, in
// whole microseconds, from 1 to maxEmission. A rate that is not a number
// above 0 gets no allowance, rather than no limit.
func emissionMicros(rate float64) int64 {
	if !(rate > 0) {
		return maxEmission
	}
	return int64(min(max(1, 1e6/rate), maxEmission))
}

var _ rooms.SlotCounter = (*Backbone)(nil)

// slotScript takes or renews a slot. KEYS: the counter. ARGV: slot id,
// limit, ttl ms. Returns 1 when the slot is held.
var slotScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`)

// AcquireSlot implements rooms.SlotCounter.
func (b *Backbone) AcquireSlot(ctx context.Context, key, id string, limit int, ttl time.Duration) (bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	cmd, err := b.keepScript(ctx, slotScript, []string{b.key("slots:", key)}, id, limit, ttl.Milliseconds())
	if err != nil {
		return false, down("connection limit", err)
	}
	ok, err := cmd.Int()
	if err != nil {
		return false, down("connection limit", err)
	}
	return ok == 1, nil
}

// ReleaseSlot implements rooms.SlotCounter.
func (b *Backbone) ReleaseSlot(ctx context.Context, key, id string) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.rdb.ZRem(ctx, b.key("slots:", key), id).Err(); err != nil {
		return down("connection limit", err)
	}
	return nil
}
