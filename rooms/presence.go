package rooms

import (
	"context"
	"encoding/json"
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
