package memory

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

var _ rooms.PresenceStore = (*Backbone)(nil)

// presenceRoom is who is in one room.
type presenceRoom struct {
	members map[string]rooms.Member // by connection
	users   map[string]*presentUser
}

type presentUser struct {
	name     string
	conns    int
	announce bool
	// leaving is set while the user's last connection is gone but the
	// grace period has not ended.
	leaving *time.Timer
}

// Enter implements rooms.PresenceStore.
func (b *Backbone) Enter(ctx context.Context, room string, m rooms.Member, announce bool) error {
	b.pmu.Lock()
	pr := b.presence[room]
	if pr == nil {
		pr = &presenceRoom{members: map[string]rooms.Member{}, users: map[string]*presentUser{}}
		b.presence[room] = pr
	}
	_, renew := pr.members[m.Conn]
	pr.members[m.Conn] = m
	first := false
	if !renew && m.User != "" {
		u := pr.users[m.User]
		switch {
		case u == nil:
			u = &presentUser{name: m.Name, announce: announce}
			pr.users[m.User] = u
			first = true
		case u.conns == 0 && u.leaving != nil:
			u.leaving.Stop() // back within the grace period: no leave, no join
			u.leaving = nil
		}
		u.conns++
		u.name = m.Name
	}
	b.pmu.Unlock()
	if first && announce {
		_, err := b.Publish(ctx, rooms.PresenceMessage(rooms.EventJoin, room, m.User, m.Name, m.Client), "")
		return err
	}
	return nil
}

// Leave implements rooms.PresenceStore.
func (b *Backbone) Leave(_ context.Context, room, conn string) error {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	b.leaveLocked(room, conn)
	return nil
}

// leaveLocked removes a member; b.pmu must be held. A user whose last
// connection left is announced as gone once the grace period passes.
func (b *Backbone) leaveLocked(room, conn string) {
	pr := b.presence[room]
	if pr == nil {
		return
	}
	m, ok := pr.members[conn]
	if !ok {
		return
	}
	delete(pr.members, conn)
	if m.User != "" {
		if u := pr.users[m.User]; u != nil {
			if u.conns--; u.conns == 0 {
				user := m.User
				u.leaving = time.AfterFunc(b.opts.PresenceGrace, func() { b.depart(room, user, u) })
			}
		}
	}
	if len(pr.members) == 0 && len(pr.users) == 0 {
		delete(b.presence, room)
	}
}

// depart ends a grace period: the user is gone unless they came back.
func (b *Backbone) depart(room, user string, u *presentUser) {
	b.pmu.Lock()
	pr := b.presence[room]
	gone := pr != nil && pr.users[user] == u && u.conns == 0
	if gone {
		delete(pr.users, user)
		if len(pr.members) == 0 && len(pr.users) == 0 {
			delete(b.presence, room)
		}
	}
	closed := b.presenceClosed
	b.pmu.Unlock()
	if gone && u.announce && !closed {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = b.Publish(ctx, rooms.PresenceMessage(rooms.EventLeave, room, user, u.name, ""), "")
	}
}

// List implements rooms.PresenceStore.
func (b *Backbone) List(_ context.Context, room string) (rooms.PresenceList, error) {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	out := rooms.PresenceList{Room: rooms.DisplayName(room), Members: []rooms.PresentUser{}}
	pr := b.presence[room]
	if pr == nil {
		return out, nil
	}
	now := b.opts.Now()
	byUser := map[string]int{}
	for _, m := range pr.members {
		if !m.Expires.IsZero() && now.After(m.Expires) {
			continue
		}
		out.Connections++
		if m.User == "" {
			out.Anonymous++
			continue
		}
		byUser[m.User]++
	}
	for user, n := range byUser {
		out.Members = append(out.Members, rooms.PresentUser{User: user, Name: pr.users[user].name, Connections: n})
	}
	slices.SortFunc(out.Members, func(a, b rooms.PresentUser) int { return strings.Compare(a.User, b.User) })
	out.Users = len(out.Members)
	return out, nil
}

// expireLeases removes pollers whose lease ran out; b.pmu must be held.
func (b *Backbone) expireLeases(now time.Time) {
	for room, pr := range b.presence {
		for conn, m := range pr.members {
			if !m.Expires.IsZero() && now.After(m.Expires) {
				b.leaveLocked(room, conn)
			}
		}
	}
}
