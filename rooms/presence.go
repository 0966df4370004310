package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Member is one connection's presence in a room.
type Member struct {
	// Conn identifies the connection (a stream's id, or "poll:" and a
	// poller's client id).
	Conn string `json:"conn"`
	// Client is the connection's client id; the join announcement skips it.
	Client string `json:"client,omitempty"`
	// User and Name identify the user; User is "" for anonymous members.
	User string `json:"user,omitempty"`
	Name string `json:"name,omitempty"`
	// Expires ends a poller's lease; zero for streams, which leave
	// explicitly.
	Expires time.Time `json:"expires,omitzero"`
}

// PresenceList is who is in a room.
type PresenceList struct {
	Room        string        `json:"room"`
	Users       int           `json:"users"`
	Connections int           `json:"connections"`
	Members     []PresentUser `json:"members"`
	Anonymous   int           `json:"anonymous"`
}

// PresentUser is a user in a PresenceList.
type PresentUser struct {
	User        string `json:"user"`
	Name        string `json:"name"`
	Connections int    `json:"connections"`
}

// Presence event names.
const (
	EventJoin  = "roomcast:join"
	EventLeave = "roomcast:leave"
)

// PresenceStore keeps who is in each room, for every instance sharing it.
// A user's first connection entering a room, and their last leaving it
// (after a grace period in which a reconnect cancels the leave), are
// announced to the room as volatile roomcast:join and roomcast:leave events
// when announce is set, each exactly once.
//
// A user is listed iff their join was announced (or, without announce,
// would have been) and their leave was not since: through the grace
// period too. Each announcement is published in the same atomic step as
// the change of the list it announces, so no crash separates the two.
type PresenceStore interface {
	// Enter records m in room (or renews its lease). A connection entered
	// again for another user counts for that user from then on.
	Enter(ctx context.Context, room string, m Member, announce bool) error
	// Leave removes connection conn from room.
	Leave(ctx context.Context, room, conn string) error
	// List returns who is in room.
	List(ctx context.Context, room string) (PresenceList, error)
}

// presenceData is the data of roomcast:join and roomcast:leave.
type presenceData struct {
	User string `json:"user"`
	Name string `json:"name"`
}

// PresenceMessage is the volatile message announcing that user joined
// (event EventJoin) or left (EventLeave) room; exclude is skipped.
func PresenceMessage(event, room, user, name, exclude string) Message {
	data, _ := json.Marshal(presenceData{User: user, Name: name})
	m := Message{Channels: []string{room}, Event: event, Data: data, Volatile: true,
		From: &Sender{User: user, Name: name}}
	if exclude != "" {
		m.Exclude = []string{exclude}
	}
	return m
}

// ErrPresenceOff is returned for presence in a namespace that does not keep it.
var ErrPresenceOff = errors.New("presence is off")

// presenceRules says whether the room channel keeps presence and announces
// joins and leaves.
func (h *Hub) presenceRules(channel string) (on, announce bool) {
	if h.presence == nil || !IsRoomChannel(channel) {
		return false, false
	}
	if h.opts.Namespaces == nil {
		return true, true
	}
	o, err := h.opts.Namespaces.Lookup(channelNamespace(channel))
	if err != nil {
		return false, false
	}
	return o.Presence, o.Presence && o.JoinLeaveEvents
}

// enter records conn's presence in room channel. Presence is advisory: a
// failure to record it does not fail the stream.
func (h *Hub) enter(ctx context.Context, conn *Connection, channel string) {
	on, announce := h.presenceRules(channel)
	if !on {
		return
	}
	id := conn.Identity()
	conn.mu.Lock()
	conn.present = append(conn.present, channel)
	conn.mu.Unlock()
	_ = h.presence.Enter(ctx, channel, Member{Conn: conn.ID, Client: conn.Client, User: id.User, Name: id.Name}, announce)
}

// exit removes connection conn's presence from room channel.
func (h *Hub) exit(conn, channel string) {
	if on, _ := h.presenceRules(channel); !on {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.presence.Leave(ctx, channel, conn)
}

// Presence lists who is in room channel, for callers allowed to subscribe to it.
func (h *Hub) Presence(ctx context.Context, caller Identity, channel string) (PresenceList, error) {
	if err := h.authorize(caller, channel); err != nil {
		return PresenceList{}, err
	}
	if on, _ := h.presenceRules(channel); !on {
		return PresenceList{}, fmt.Errorf("%w for room %q", ErrPresenceOff, channel)
	}
	return h.presence.List(ctx, channel)
}
