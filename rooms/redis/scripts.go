package redis

import goredis "github.com/redis/go-redis/v9"

// replicaMarkerLua tells a promoted replica from a primary restarted from
// its own persistence, which Redis's replication ids cannot: a primary
// restarted from an RDB saved while replicas were attached gets
// master_replid2 = its old replid, exactly as a promoted replica does
// (checked on Redis 7.0). The marker key (the epoch key + ":replicated")
// is written to the replicas only (redis.set_repl): the primary's own
// data, and so its RDB and AOF, never holds it, while a replica holds it
// from the first publish replicated to it after its last full sync. A
// primary holding it was therefore a replica; what it lacks of the old
// primary's acknowledged writes is unknown, so the caller starts a new
// epoch, and the primary drops the marker from its data and its AOF (not
// from its replicas, which stay replicas).
//
// A replica promoted before any publish reached it since its last full
// sync holds no marker; it then lacks no publish either, unless the old
// primary published after that sync and none of it was replicated (the
// position check of failoverCheckScript is the backstop).
const replicaMarkerLua = `
local function promoted(epochKey)
  if redis.call('GET', epochKey .. ':replicated') ~= 'r' then return false end
  redis.set_repl(redis.REPL_AOF)
  redis.call('DEL', epochKey .. ':replicated')
  redis.set_repl(redis.REPL_ALL)
  return true
end
local function markReplicas(epochKey)
  redis.set_repl(redis.REPL_REPLICA)
  redis.call('SET', epochKey .. ':replicated', 'r')
  redis.set_repl(redis.REPL_NONE)
  redis.call('DEL', epochKey .. ':replicated')
  redis.set_repl(redis.REPL_ALL)
end
`

// publishScript appends a message to the history of each of its channels and
// publishes it live, in one atomic step, so live order equals history order.
//
// KEYS: epoch, seq, idempotency key, then per channel: stream, meta; last
// the publish token's bucket.
// ARGV: body, volatile, maxlen, age ms, epoch candidate, use idempotency,
// idempotency ttl ms, meta ttl ms, summary, the publish token's record name
// (Message.TokenRecord: the token as its caller's), whether the backbone
// minted the token for this call, the token bucket's ttl ms, the message's
// digest, then per channel: live channel.
//
// The token makes the script idempotent: a retry of the same call (the
// reply was lost, go-redis sent it again) answers as the first run did, and
// a resend with the token answers 'dup' with the stored seq. Tokens are
// fields of a hash per second of minting time (the bucket, named by the
// caller from the token alone), each holding the event's seq and the
// message's digest ("seq|digest"; a resend with another digest answers
// 'reused', and stores nothing): ~110 bytes per
// publish (a key per publish: ~130), freed with the bucket minutes later
// whatever the history's age (docs/operations.md has the measurement).
//
// Stream entries have id "<seq>-0" (seq is global across channels) and the
// fields b (body), ts, i (channel index), n (per-channel count), e (epoch).
// The meta hash holds head (last seq), n (count) and trimmed (highest seq
// dropped by retention). Live messages are "1|epoch|seq|ts|i|n|body"; n is
// 0 for volatile messages.
//
// Failover: every run writes the replication marker (replicaMarkerLua) to
// the replicas alone, and a primary that finds it in its own data was a
// replica promoted since its last publish: it may lack writes the old
// primary acknowledged, so its positions start a new epoch before this
// publish takes one. A resend answered from its token's record names the
// epoch its event was stored in (read from the first channel's entry).
var publishScript = goredis.NewScript(replicaMarkerLua + `
local epoch = redis.call('GET', KEYS[1])
if promoted(KEYS[1]) or not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[1], epoch)
end
local bucket = KEYS[#KEYS]
local tokenField, tokenFresh, tokenTTL = ARGV[10], ARGV[11] == '1', tonumber(ARGV[12])
local digest = ARGV[13]
local stored = redis.call('HGET', bucket, tokenField)
if stored then
  local storedSeq, storedDigest = string.match(stored, '^(%d+)|(.*)$')
  if storedDigest ~= digest then return {'reused', ''} end
  local storedEpoch = epoch
  local entry = redis.call('XRANGE', KEYS[4], storedSeq .. '-0', storedSeq .. '-0')[1]
  if entry and entry[2][9] == 'e' then storedEpoch = entry[2][10] end
  local answer = storedEpoch .. '|' .. storedSeq .. '|0|' .. ARGV[9]
  if tokenFresh then return {'ok', answer} end
  return {'dup', answer}
end
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {'dup', prev} end
end
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local volatile = ARGV[2] == '1'
local seq = 0
if not volatile then seq = redis.call('INCR', KEYS[2]) end
-- The token's record comes before any PUBLISH: out of memory, Redis refuses
-- a script's first write only, and PUBLISH is no write, so a volatile
-- publish recording its token after going out live would be answered with
-- a refusal it did not honour.
markReplicas(KEYS[1])
redis.call('HSET', bucket, tokenField, seq .. '|' .. digest)
redis.call('PEXPIRE', bucket, tokenTTL)
local maxlen = tonumber(ARGV[3])
local age = tonumber(ARGV[4])
local cutoff = ts - age
local nch = (#KEYS - 4) / 2
for i = 1, nch do
  local stream = KEYS[2 + 2 * i]
  local meta = KEYS[3 + 2 * i]
  local n = 0
  if not volatile then
    n = redis.call('HINCRBY', meta, 'n', 1)
    redis.call('XADD', stream, seq .. '-0', 'b', ARGV[1], 'ts', ts, 'i', i - 1, 'n', n, 'e', epoch)
    -- Retention: drop from the front while over size or too old. Entries
    -- are read one at a time because their bodies may be large.
    local len = redis.call('XLEN', stream)
    local last = nil
    while len > 0 do
      local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
      if len > maxlen or tonumber(first[2][4]) < cutoff then
        last = first[1]
        redis.call('XDEL', stream, last)
        len = len - 1
      else
        break
      end
    end
    if last then
      redis.call('HSET', meta, 'trimmed', tonumber(string.match(last, '^(%d+)')))
    end
    redis.call('HSET', meta, 'head', seq, 'age', age)
    redis.call('PEXPIRE', stream, age + 60000)
    redis.call('PEXPIRE', meta, tonumber(ARGV[8]))
  end
  redis.call('PUBLISH', ARGV[13 + i], '1|' .. epoch .. '|' .. seq .. '|' .. ts .. '|' .. (i - 1) .. '|' .. n .. '|' .. ARGV[1])
end
local result = epoch .. '|' .. seq .. '|' .. ts .. '|' .. ARGV[9]
if ARGV[6] == '1' then redis.call('SET', KEYS[3], result, 'PX', tonumber(ARGV[7])) end
return {'ok', result}
`)

// sinceScript reads a channel's retention watermark, its entries after a
// position, the server's clock and the channel's own age limit (0: the
// backbone's) in one consistent view.
//
// KEYS: stream, meta, seq. ARGV: exclusive start id, count.
var sinceScript = goredis.NewScript(`
local trimmed = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
if redis.call('EXISTS', KEYS[1]) == 0 then
  trimmed = tonumber(redis.call('HGET', KEYS[2], 'head') or '0')
end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local t = redis.call('TIME')
return {trimmed, entries, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
  tonumber(redis.call('HGET', KEYS[2], 'age') or '0')}
`)

// headScript returns a channel's head and count, and the epoch they belong
// to ("" before the first one is made); a channel without history starts at
// the current global seq.
//
// KEYS: meta, seq, epoch.
var headScript = goredis.NewScript(`
local e = redis.call('GET', KEYS[3]) or ''
local v = redis.call('HMGET', KEYS[1], 'head', 'n')
if not v[1] then
  return {tonumber(redis.call('GET', KEYS[2]) or '0'), 0, e}
end
return {tonumber(v[1]), tonumber(v[2] or '0'), e}
`)
