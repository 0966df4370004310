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
//	pn:{room}  hash  user -> {"name","announce"} while the user is present or leaving
//	pexp       zset  "room\x00conn" scored by member expiry (ms)
//	pgrace     zset  "room\x00user" scored by the end of the user's grace period (ms)
//
// Every member expires unless its owner refreshes it, so an instance that
// dies takes its members with it within MemberTTL; whichever instance's
// sweep removes a user's last member announces the leave, exactly once,
// because the removal is one atomic script.

// presenceMember is a member as stored.
type presenceMember struct {
	User    string `json:"u,omitempty"`
	Name    string `json:"n,omitempty"`
	Client  string `json:"c,omitempty"`
	Expires int64  `json:"e"`
}

// enterScript records a member. It returns 1 when the user was not present
// (nor within the grace period): the join is to be announced.
//
// KEYS: p, pu, pn, pexp, pgrace. ARGV: conn, member JSON, user, expiry ms,
// "room\x00conn", "room\x00user", user info JSON.
var enterScript = goredis.NewScript(`
local renew = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
if renew or ARGV[3] == '' then return 0 end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[7])
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
if n ~= 1 then return 0 end
if redis.call('ZREM', KEYS[5], ARGV[6]) == 1 then return 0 end
return 1
`)

// leaveLua removes one member (room, conn) and starts the user's grace
// period when it was their last connection. It is shared by the leave and
// sweep scripts; pfx is the key prefix.
const leaveLua = `
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

// leaveScript removes a member. ARGV: prefix, room, conn, grace end ms.
var leaveScript = goredis.NewScript(leaveLua + `
leave(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 0
`)

// sweepScript removes members whose lease ran out and ends grace periods.
// It returns room, user, user info triples of users who left.
// ARGV: prefix, now ms, grace ms, limit.
var sweepScript = goredis.NewScript(leaveLua + `
local pfx, now, grace, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, item in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'pexp', '-inf', now, 'LIMIT', 0, limit)) do
  local sep = string.find(item, '\0', 1, true)
  leave(pfx, string.sub(item, 1, sep - 1), string.sub(item, sep + 1), now + grace)
end
local out = {}
for _, item in ipairs(redis.call('ZRANGEBYSCORE', pfx .. 'pgrace', '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', pfx .. 'pgrace', item)
  local sep = string.find(item, '\0', 1, true)
  local room, user = string.sub(item, 1, sep - 1), string.sub(item, sep + 1)
  if not redis.call('HGET', pfx .. 'pu:' .. room, user) then
    local info = redis.call('HGET', pfx .. 'pn:' .. room, user) or '{}'
    redis.call('HDEL', pfx .. 'pn:' .. room, user)
    table.insert(out, room)
    table.insert(out, user)
    table.insert(out, info)
  end
end
return out
`)

type userInfo struct {
	Name     string `json:"name"`
	Announce bool   `json:"announce"`
}

func (b *Backbone) memberTTL() time.Duration { return b.opts.MemberTTL }

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
	info, _ := json.Marshal(userInfo{Name: m.Name, Announce: announce})
	first, err := enterScript.Run(ctx, b.rdb,
		[]string{b.key("p:", room), b.key("pu:", room), b.key("pn:", room), b.key("", "pexp"), b.key("", "pgrace")},
		m.Conn, raw, m.User, exp.UnixMilli(), room+"\x00"+m.Conn, room+"\x00"+m.User, info).Int()
	if err != nil {
		return down("presence", err)
	}
	if first == 1 && announce {
		_, err := b.Publish(ctx, rooms.PresenceMessage(rooms.EventJoin, room, m.User, m.Name, m.Client), "")
		return err
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

// List implements rooms.PresenceStore.
func (b *Backbone) List(ctx context.Context, room string) (rooms.PresenceList, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	all, err := b.rdb.HGetAll(ctx, b.key("p:", room)).Result()
	if err != nil {
		return rooms.PresenceList{}, down("presence", err)
	}
	out := rooms.PresenceList{Room: rooms.DisplayName(room), Members: []rooms.PresentUser{}}
	now := time.Now().UnixMilli()
	byUser := map[string]*rooms.PresentUser{}
	for _, raw := range all {
		var m presenceMember
		if json.Unmarshal([]byte(raw), &m) != nil || m.Expires < now {
			continue
		}
		out.Connections++
		if m.User == "" {
			out.Anonymous++
			continue
		}
		u := byUser[m.User]
		if u == nil {
			u = &rooms.PresentUser{User: m.User, Name: m.Name}
			byUser[m.User] = u
		}
		u.Connections++
	}
	for _, u := range byUser {
		out.Members = append(out.Members, *u)
	}
	slices.SortFunc(out.Members, func(a, b rooms.PresentUser) int { return strings.Compare(a.User, b.User) })
	out.Users = len(out.Members)
	return out, nil
}

// sweepPresence expires members and ends grace periods, announcing users
// who left. Every instance sweeps; each departure is seen by one sweep.
func (b *Backbone) sweepPresence(ctx context.Context) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	res, err := sweepScript.Run(ctx, b.rdb, nil, b.opts.Prefix, time.Now().UnixMilli(),
		b.opts.PresenceGrace.Milliseconds(), 500).StringSlice()
	if err != nil {
		return
	}
	for i := 0; i+2 < len(res); i += 3 {
		var info userInfo
		_ = json.Unmarshal([]byte(res[i+2]), &info)
		if info.Announce {
			_, _ = b.Publish(ctx, rooms.PresenceMessage(rooms.EventLeave, res[i], res[i+1], info.Name, ""), "")
		}
	}
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
