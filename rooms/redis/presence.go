package redis

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.PresenceStore = (*Backbone)(nil)

// Presence in Redis, shared by every instance:
//
//	p:{room}   hash  connection -> member JSON (with its expiry)
//	pu:{room}  hash  user -> live connections
//	pn:{room}  hash  user -> userInfo JSON: the users listed (announced, and
//	                 not announced as gone since)
//	pexp       zset  "room\x00conn" scored by member expiry (ms)
//	pgrace     zset  "room\x00user" scored by the end of the user's grace period (ms)
//
// Every member expires unless its owner refreshes it, so an instance that
// dies takes its members with it within MemberTTL; whichever instance's
// sweep removes a user's last member announces the leave, exactly once,
// because the removal is one atomic script. Each script that lists or
// unlists a user publishes the join or leave itself: no crash can separate
// the event from the change.

// presenceMember is a member as stored.
type presenceMember struct {
	User    string `json:"u,omitempty"`
	Name    string `json:"n,omitempty"`
	Client  string `json:"c,omitempty"`
	Expires int64  `json:"e"`
}

// presenceLua holds the functions the presence scripts share; pfx is the
// key prefix.
//
// announce publishes body (a volatile message's live body, "" for none)
// live on room, as the publish script does with a volatile message.
//
// leave removes one member (room, conn) and starts the user's grace period
// when it was their last connection; the user stays listed meanwhile.
const presenceLua = `
local function announce(pfx, room, body, epochCandidate)
  if body == nil or body == '' then return end
  local epoch = redis.call('GET', pfx .. 'epoch')
  if not epoch then
    epoch = epochCandidate
    redis.call('SET', pfx .. 'epoch', epoch)
  end
  local t = redis.call('TIME')
  local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('PUBLISH', pfx .. 'l:' .. room, '1|' .. epoch .. '|0|' .. ts .. '|0|0|' .. body)
end

local function leave(pfx, room, conn, graceEnd)
  local p = pfx .. 'p:' .. room
  local raw = redis.call('HGET', p, conn)
  redis.call('ZREM', pfx .. 'pexp', room .. '\0' .. conn)
  if not raw then return end
  redis.call('HDEL', p, conn)
  local m = cjson.decode(raw)
  if m.u and m.u ~= '' then
    local pu = pfx .. 'pu:' .. room
    local n = redis.call('HINCRBY', pu, m.u, -1)
    if n <= 0 then
      redis.call('HDEL', pu, m.u)
      redis.call('ZADD', pfx .. 'pgrace', graceEnd, room .. '\0' .. m.u)
    end
  end
end
`

// enterScript records a member. A user not listed is listed, and their
// join published, in the same step; a listed one within the grace period
// is kept, with neither leave nor join. It returns 1 when the user was
// listed by this call.
//
// ARGV: prefix, room, conn, member JSON, user, expiry ms, user info JSON,
// grace end ms, epoch candidate, join body ("" when not announced).
var enterScript = goredis.NewScript(presenceLua + `
local pfx, room, conn, user = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local p = pfx .. 'p:' .. room
local old = redis.call('HGET', p, conn)
if old then
  local om = cjson.decode(old)
  if (om.u or '') ~= user then
    -- The connection now speaks for someone else: the previous user's
    -- count drops with it.
    leave(pfx, room, conn, tonumber(ARGV[8]))
    old = nil
  end
end
redis.call('HSET', p, conn, ARGV[4])
redis.call('ZADD', pfx .. 'pexp', ARGV[6], room .. '\0' .. conn)
if old or user == '' then return 0 end
redis.call('HINCRBY', pfx .. 'pu:' .. room, user, 1)
local pn = pfx .. 'pn:' .. room
if redis.call('HEXISTS', pn, user) == 1 then
  redis.call('ZREM', pfx .. 'pgrace', room .. '\0' .. user)
  return 0
end
redis.call('HSET', pn, user, ARGV[7])
announce(pfx, room, ARGV[10], ARGV[9])
return 1
`)

// leaveScript removes a member. ARGV: prefix, room, conn, grace end ms.
var leaveScript = goredis.NewScript(presenceLua + `
leave(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 0
`)

// sweepScript removes members whose lease ran out and ends grace periods:
// a user with no connection left is unlisted and their leave published in
// the same step. It returns how many users left.
// ARGV: prefix, now ms, grace ms, limit, epoch candidate.
var sweepScript = goredis.NewScript(presenceLua + `
local pfx, now, grace, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, item in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'pexp', '-inf', now, 'LIMIT', 0, limit)) do
  local sep = string.find(item, '\0', 1, true)
  leave(pfx, string.sub(item, 1, sep - 1), string.sub(item, sep + 1), now + grace)
end
local gone = 0
for _, item in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'pgrace', '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', pfx .. 'pgrace', item)
  local sep = string.find(item, '\0', 1, true)
  local room, user = string.sub(item, 1, sep - 1), string.sub(item, sep + 1)
  local info = redis.call('HGET', pfx .. 'pn:' .. room, user)
  if info and not redis.call('HGET', pfx .. 'pu:' .. room, user) then
    redis.call('HDEL', pfx .. 'pn:' .. room, user)
    gone = gone + 1
    announce(pfx, room, cjson.decode(info).leave, ARGV[5])
  end
end
return gone
`)

// userInfo is a listed user: their name and, when joins and leaves are
// announced, the live body of their leave, published by the sweep that
// unlists them.
type userInfo struct {
	Name  string `json:"name"`
	Leave string `json:"leave,omitempty"`
}

func (b *Backbone) memberTTL() time.Duration { return b.opts.MemberTTL }

// liveBody is what a volatile message's live publication carries after
// its "1|epoch|seq|ts|i|n|" head, as publishScript sends it.
func liveBody(m rooms.Message) string {
	raw, _ := json.Marshal(body{Channels: m.Channels, Event: m.Event, Data: m.Data, Base64: m.Base64,
		From: m.From, Client: m.Client, Exclude: m.Exclude, Volatile: m.Volatile})
	return string(raw)
}

// Enter implements rooms.PresenceStore. Streams are stored with a lease of
// MemberTTL that the owner renews by entering again (the hub does on every
// heartbeat); pollers bring their own lease.
func (b *Backbone) Enter(ctx context.Context, room string, m rooms.Member, announce bool) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	exp := m.Expires
	if exp.IsZero() {
		exp = time.Now().Add(b.memberTTL())
	}
	raw, _ := json.Marshal(presenceMember{User: m.User, Name: m.Name, Client: m.Client, Expires: exp.UnixMilli()})
	info := userInfo{Name: m.Name}
	join := ""
	if announce && m.User != "" {
		info.Leave = liveBody(rooms.PresenceMessage(rooms.EventLeave, room, m.User, m.Name, ""))
		join = liveBody(rooms.PresenceMessage(rooms.EventJoin, room, m.User, m.Name, m.Client))
	}
	infoRaw, _ := json.Marshal(info)
	graceEnd := time.Now().Add(b.opts.PresenceGrace).UnixMilli()
	// Through the bookkeeping pipe: the renewals of every stream's
	// heartbeat at one tick share round trips.
	_, err := b.keepScript(ctx, enterScript, nil, b.opts.Prefix, room, m.Conn, raw, m.User, exp.UnixMilli(),
		infoRaw, graceEnd, newEpoch(), join)
	if err != nil {
		return down("presence", err)
	}
	return nil
}

// Leave implements rooms.PresenceStore.
func (b *Backbone) Leave(ctx context.Context, room, conn string) error {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	graceEnd := time.Now().Add(b.opts.PresenceGrace).UnixMilli()
	if err := leaveScript.Run(ctx, b.rdb, nil, b.opts.Prefix, room, conn, graceEnd).Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return down("presence", err)
	}
	return nil
}

// List implements rooms.PresenceStore: the listed users, each with their
// live connections (0 during a grace period).
func (b *Backbone) List(ctx context.Context, room string) (rooms.PresenceList, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	var members, users *goredis.MapStringStringCmd
	_, err := b.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		members = p.HGetAll(ctx, b.key("p:", room))
		users = p.HGetAll(ctx, b.key("pn:", room))
		return nil
	})
	if err != nil {
		return rooms.PresenceList{}, down("presence", err)
	}
	out := rooms.PresenceList{Room: rooms.DisplayName(room), Members: []rooms.PresentUser{}}
	now := time.Now().UnixMilli()
	byUser := map[string]int{}
	for _, raw := range members.Val() {
		var m presenceMember
		if json.Unmarshal([]byte(raw), &m) != nil || m.Expires < now {
			continue
		}
		out.Connections++
		if m.User == "" {
			out.Anonymous++
			continue
		}
		byUser[m.User]++
	}
	for user, raw := range users.Val() {
		var info userInfo
		_ = json.Unmarshal([]byte(raw), &info)
		out.Members = append(out.Members, rooms.PresentUser{User: user, Name: info.Name, Connections: byUser[user]})
	}
	slices.SortFunc(out.Members, func(a, b rooms.PresentUser) int { return strings.Compare(a.User, b.User) })
	out.Users = len(out.Members)
	return out, nil
}

// sweepPresence expires members and ends grace periods; the script
// announces the users who left. Every instance sweeps; each departure is
// seen by one sweep.
func (b *Backbone) sweepPresence(ctx context.Context) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	_ = sweepScript.Run(ctx, b.rdb, nil, b.opts.Prefix, time.Now().UnixMilli(),
		b.opts.PresenceGrace.Milliseconds(), 500, newEpoch()).Err()
}

// sweepLoop runs sweepPresence until the backbone closes.
func (b *Backbone) sweepLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweepPresence(context.Background())
		}
	}
}
