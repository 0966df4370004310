package rooms

import (
	"context"
	"errors"
	"time"
)

// Directory is implemented by backbones shared by several instances. It
// records which instance owns each connection and carries commands to that
// owner, so a connection can be changed through any instance.
type Directory interface {
	// RegisterConnection records (or refreshes) info for ttl.
	RegisterConnection(ctx context.Context, info ConnectionInfo, ttl time.Duration) error
	// UnregisterConnection forgets a connection.
	UnregisterConnection(ctx context.Context, id string) error
	// LookupConnection returns a registered connection; ok is false when
	// no live connection has that id.
	LookupConnection(ctx context.Context, id string) (info ConnectionInfo, ok bool, err error)
	// Forward runs cmd on the instance that owns cmd.Connection and returns
	// its outcome. It returns ErrUnknownConnection when the owner is gone
	// and an error wrapping ErrBackboneDown when it does not answer in time.
	Forward(ctx context.Context, owner string, cmd Command) error
	// HandleCommands installs the function that runs commands forwarded to
	// this instance. It must be called once, before connections register.
	HandleCommands(run func(ctx context.Context, cmd Command) error)
	// Instance is this instance's id.
	Instance() string
}

// ConnectionInfo is what the directory knows of a connection.
type ConnectionInfo struct {
	ID     string `json:"id"`
	Owner  string `json:"owner"`
	Client string `json:"client"`
	// Holder is who may name the connection as an event's sender: "u:"
	// and its user, "s:" for the server, "a:" for anonymous connections.
	Holder string `json:"holder,omitempty"`
}

// Command is an operation on a connection, carried to its owner.
type Command struct {
	Op         string `json:"op"` // "join" or "leave"
	Connection string `json:"connection"`
	Channel    string `json:"channel"`
	// User and Server identify the caller, for the ownership check.
	User   string `json:"user,omitempty"`
	Server bool   `json:"server,omitempty"`
	// Identity is the new identity of a "refresh".
	Identity *Identity `json:"identity,omitempty"`
}

// commandErrors lists the errors a forwarded command can return by name.
var commandErrors = map[string]error{
	"unknown_connection": ErrUnknownConnection,
	"too_many_rooms":     ErrTooManyRooms,
	"single_room_stream": ErrSingleRoom,
	"draining":           ErrDraining,
	"forbidden":          ErrForbidden,
}

// CommandErrorCode names err for the wire; "" for nil.
func CommandErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for code, e := range commandErrors {
		if errors.Is(err, e) {
			return code
		}
	}
	return "backbone_unavailable"
}

// CommandError turns a code from CommandErrorCode back into an error.
func CommandError(code string) error {
	if code == "" {
		return nil
	}
	if e, ok := commandErrors[code]; ok {
		return e
	}
	return ErrBackboneDown
}
