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
	// users are the users listed: announced (or, with announcements off,
	// who would have been) and not announced as gone since.
	users map[string]*presentUser
}

type presentUser struct {
	name     string
	conns    int
	announce bool
	// leaving is set while the user's last connection is gone but the
	// grace period has not ended; the user is still listed.
	leaving *time.Timer
}

// Enter implements rooms.PresenceStore. The join is published under pmu,
// with the change that lists the user: no one sees the one without the
// other.
func (b *Backbone) Enter(ctx context.Context, room string, m rooms.Member, announce bool) error {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	if old, ok := b.presence[room].member(m.Conn); ok && old.User != m.User {
		// The connection now speaks for someone else: the previous
		// user's count must drop with it.
		b.leaveLocked(room, m.Conn)
	}
	pr := b.presence[room]
	if pr == nil {
		pr = &presenceRoom{members: map[string]rooms.Member{}, users: map[string]*presentUser{}}
		b.presence[room] = pr
	}
	_, renew := pr.members[m.Conn]
	pr.members[m.Conn] = m
	if renew || m.User == "" {
		return nil
	}
	u := pr.users[m.User]
	if u != nil {
		if u.leaving != nil {
			u.leaving.Stop() // back within the grace period: still listed, no join
			u.leaving = nil
		}
		u.conns++
		u.name = m.Name
		return nil
	}
	if announce && !b.presenceClosed {
		if _, err := b.Publish(ctx, rooms.PresenceMessage(rooms.EventJoin, room, m.User, m.Name, m.Client), ""); err != nil {
			delete(pr.members, m.Conn)
			if len(pr.members) == 0 && len(pr.users) == 0 {
				delete(b.presence, room)
			}
			return err
		}
	}
	pr.users[m.User] = &presentUser{name: m.Name, announce: announce, conns: 1}
	return nil
}

// member returns the member of connection conn.
func (pr *presenceRoom) member(conn string) (rooms.Member, bool) {
	if pr == nil {
		return rooms.Member{}, false
	}
	m, ok := pr.members[conn]
	return m, ok
}

// Leave implements rooms.PresenceStore.
func (b *Backbone) Leave(_ context.Context, room, conn string) error {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	b.leaveLocked(room, conn)
	return nil
}

// leaveLocked removes a member; b.pmu must be held. A user whose last
// connection left stays listed until the grace period passes.
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

// depart ends a grace period: the user is gone unless they came back. The
// leave is published under pmu, with the change that unlists the user.
func (b *Backbone) depart(room, user string, u *presentUser) {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	pr := b.presence[room]
	if pr == nil || pr.users[user] != u || u.conns != 0 {
		return
	}
	delete(pr.users, user)
	if len(pr.members) == 0 && len(pr.users) == 0 {
		delete(b.presence, room)
	}
	if u.announce && !b.presenceClosed {
		// A volatile publish in memory fails only on its context.
		_, _ = b.Publish(context.Background(), rooms.PresenceMessage(rooms.EventLeave, room, user, u.name, ""), "")
	}
}

// List implements rooms.PresenceStore: the listed users, each with their
// live connections (0 during a grace period).
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
	for user, u := range pr.users {
		out.Members = append(out.Members, rooms.PresentUser{User: user, Name: u.name, Connections: byUser[user]})
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
