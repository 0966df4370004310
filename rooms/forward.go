package rooms

import (
	"context"
	"fmt"
	"time"
)

// runCommand runs a command forwarded by another instance.
func (h *Hub) runCommand(ctx context.Context, cmd Command) error {
	caller := Identity{User: cmd.User, Server: cmd.Server}
	switch cmd.Op {
	case "join":
		return h.Join(ctx, caller, cmd.Connection, cmd.Channel)
	case "leave":
		return h.Leave(ctx, caller, cmd.Connection, cmd.Channel)
	case "refresh":
		if cmd.Identity == nil {
			return fmt.Errorf("refresh without an identity")
		}
		return h.Refresh(ctx, *cmd.Identity, cmd.Connection)
	}
	return fmt.Errorf("unknown command %q", cmd.Op)
}

// forward sends a join or leave for a connection this instance does not
// hold to the instance that does.
func (h *Hub) forward(ctx context.Context, caller Identity, op, id, channel string) error {
	if h.dir == nil {
		return ErrUnknownConnection
	}
	info, ok, err := h.dir.LookupConnection(ctx, id)
	if err != nil {
		return err
	}
	if !ok || info.Owner == h.dir.Instance() {
		return ErrUnknownConnection
	}
	return h.dir.Forward(ctx, info.Owner, Command{Op: op, Connection: id, Channel: channel,
		User: caller.User, Server: caller.Server})
}

func (h *Hub) forwardRefresh(ctx context.Context, next Identity, id string) error {
	if h.dir == nil {
		return ErrUnknownConnection
	}
	info, ok, err := h.dir.LookupConnection(ctx, id)
	if err != nil {
		return err
	}
	if !ok || info.Owner == h.dir.Instance() {
		return ErrUnknownConnection
	}
	return h.dir.Forward(ctx, info.Owner, Command{Op: "refresh", Connection: id, Identity: &next})
}

func (h *Hub) register(ctx context.Context, conn *Connection) error {
	if h.dir == nil {
		return nil
	}
	return h.dir.RegisterConnection(ctx, ConnectionInfo{ID: conn.ID, Owner: h.dir.Instance(), Client: conn.Client,
		Holder: connectionHolder(conn.Identity())}, registrationTTL)
}

// registrationTTL is how long a connection stays registered in a shared
// directory without a refresh; Touch refreshes it at every heartbeat.
const registrationTTL = time.Minute
