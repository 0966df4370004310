package redis

import (
	"context"
	"errors"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.ClientRegistry = (*Backbone)(nil)

// Client-id bindings, shared by every instance:
//
//	cb     hash  client -> "secret\nowner"
//	cbexp  zset  client scored by the binding's expiry (ms, Redis's clock)
//
// The index both expires bindings (each script first frees a few that ran
// out) and counts them, so that the store stays bounded.

// bindLua: sweep frees up to 100 expired bindings and returns the time in
// ms; live returns client's binding unless it expired.
const bindLua = `
local function sweep(hash, index)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, 100)) do
    redis.call('HDEL', hash, c)
    redis.call('ZREM', index, c)
  end
  return now
end

local function live(hash, index, client, now)
  local exp = redis.call('ZSCORE', index, client)
  if not exp or tonumber(exp) <= now then return false end
  return redis.call('HGET', hash, client)
end
`

// bindScript binds a client id or renews its owner's binding. It returns
// {3, secret} when it bound a free id, {1, secret} when it renewed the
// owner's binding, {0, ""} when another owner holds it, {2, ""} when the
// store is full.
//
// KEYS: cb, cbexp. ARGV: client, owner, secret, ttl ms, bound.
var bindScript = goredis.NewScript(bindLua + `
local now = sweep(KEYS[1], KEYS[2])
local client, owner = ARGV[1], ARGV[2]
local expires = now + tonumber(ARGV[4])
local v = live(KEYS[1], KEYS[2], client, now)
if v then
  local sep = string.find(v, '\n', 1, true)
  if string.sub(v, sep + 1) ~= owner then return {0, ''} end
  redis.call('ZADD', KEYS[2], expires, client)
  return {1, string.sub(v, 1, sep - 1)}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {2, ''} end
redis.call('HSET', KEYS[1], client, ARGV[3] .. '\n' .. owner)
redis.call('ZADD', KEYS[2], expires, client)
return {3, ARGV[3]}
`)

// unbindScript frees a client's binding when it is still owner's with
// secret. KEYS: cb, cbexp. ARGV: client, "secret\nowner".
var unbindScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
`)

// bindingScript returns a client's live binding, or false.
// KEYS: cb, cbexp. ARGV: client.
var bindingScript = goredis.NewScript(bindLua + `
local now = sweep(KEYS[1], KEYS[2])
return live(KEYS[1], KEYS[2], ARGV[1], now)
`)

// bindingsScript counts the live bindings. KEYS: cb, cbexp.
var bindingsScript = goredis.NewScript(bindLua + `
local now = sweep(KEYS[1], KEYS[2])
return redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
`)

func (b *Backbone) bindingKeys() []string { return []string{b.key("", "cb"), b.key("", "cbexp")} }

// BindClient implements rooms.ClientRegistry.
func (b *Backbone) BindClient(ctx context.Context, client, owner, secret string, ttl time.Duration) (string, bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	cmd, err := b.keepScript(ctx, bindScript, b.bindingKeys(), client, owner, secret, ttl.Milliseconds(),
		b.opts.MaxClientBindings)
	var res []any
	if err == nil {
		res, err = cmd.Slice()
	}
	if err != nil {
		return "", false, down("bind client", err)
	}
	if len(res) != 2 {
		return "", false, down("bind client", errors.New("unexpected reply"))
	}
	code, _ := res[0].(int64)
	bound, _ := res[1].(string)
	switch code {
	case 1, 3:
		return bound, code == 3, nil
	case 0:
		return "", false, rooms.ErrClientInUse
	}
	return "", false, rooms.ErrClientsFull
}

// UnbindClient implements rooms.ClientRegistry.
func (b *Backbone) UnbindClient(ctx context.Context, client, owner, secret string) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := unbindScript.Run(ctx, b.rdb, b.bindingKeys(), client, secret+"\n"+owner).Err(); err != nil {
		return down("unbind client", err)
	}
	return nil
}

// ClientBinding implements rooms.ClientRegistry. A binding past its expiry
// is freed by the script before it is read.
func (b *Backbone) ClientBinding(ctx context.Context, client string) (string, string, bool, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := bindingScript.Run(ctx, b.rdb, b.bindingKeys(), client).Text()
	if errors.Is(err, goredis.Nil) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, down("client binding", err)
	}
	secret, owner, ok := strings.Cut(v, "\n")
	if !ok {
		return "", "", false, nil
	}
	return owner, secret, true, nil
}

// ClientBindings implements rooms.ClientRegistry.
func (b *Backbone) ClientBindings(ctx context.Context) (int, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := bindingsScript.Run(ctx, b.rdb, b.bindingKeys()).Int()
	if err != nil {
		return 0, down("client bindings", err)
	}
	return n, nil
}
