package rooms

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ConnectRequest describes a new stream.
type ConnectRequest struct {
	// Channels are the canonical channels named by the request.
	Channels []string
	// Client is the client id; "" makes the hub generate one (or take
	// the one Proof names).
	Client string
	// Proof is the client id's proof, which an anonymous caller must send
	// to use an id again (see clientid.go).
	Proof string
	// Multi makes a multi-room stream: it has a session, and rooms can be
	// joined and left while it is open.
	Multi bool
	// Resume is the cursor the client resumes from ("" for none).
	Resume string
	// Identity is who the stream belongs to; rooms it may not subscribe
	// to are refused, and a user's multi-room stream also carries the
	// user's private channel.
	Identity Identity
	// Caller is who a multi-room stream's session counts against: the
	// user, else the client's address. "" bounds it only in all.
	Caller string
}

// Connect opens a stream: it joins its channels, registers it under a new
// connection id, and queues what a resuming client missed (or a reset where
// that cannot be known) ahead of live events. When Connect returns, every
// event published afterwards on its channels reaches the connection.
func (h *Hub) Connect(ctx context.Context, req ConnectRequest) (_ *Connection, err error) {
	h.mu.RLock()
	draining := h.draining
	h.mu.RUnlock()
	if draining {
		return nil, ErrDraining
	}
	kind := admitStream
	if req.Multi {
		kind = admitSession
	}
	a, err := h.admit(ctx, admitRequest{kind: kind, rooms: req.Channels, client: req.Client, proof: req.Proof,
		caller: req.Caller, identity: req.Identity, cursor: req.Resume, user: req.Multi})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.undo() // a refused stream binds no new id and keeps no session
		}
	}()
	conn := h.newConnection(a.client, req.Multi)
	conn.connecting = true
	conn.epoch, conn.claimsEpoch = a.epoch, a.epoch
	conn.identity = req.Identity
	conn.bindCaller, conn.Proof, conn.boundAt = a.bindCaller, a.proof, time.Now()
	conn.Session, conn.sessionCaller = a.session, a.sessionCaller
	conn.rooms = make(map[string]bool, len(a.rooms))
	for _, ch := range a.rooms {
		conn.rooms[ch] = true
	}
	heads, err := h.joinAll(ctx, conn, a)
	if err != nil {
		h.Disconnect(conn)
		return nil, err
	}
	if err := h.hold(ctx, conn); err != nil {
		h.Disconnect(conn)
		return nil, err
	}
	conn.cursor = Cursor{Epoch: a.epoch, Session: conn.Session}
	resets := a.resets
	replay, err := h.replay(ctx, conn, a.from, a.joinedAt, a.left, heads, &resets)
	if err != nil {
		h.Disconnect(conn)
		return nil, err
	}
	// What outlives the connection or others see — its session, its
	// presence — is written only once nothing can fail the stream any
	// more, so that a refused stream leaves none of it behind. Nobody
	// resumes the session before the stream has given out a cursor.
	if req.Multi {
		if err := h.bb.SaveSession(ctx, conn.Session, conn.sessionEntries(), h.opts.SessionTTL); err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		conn.touchedAt = time.Now()
	}
	for _, ch := range conn.Rooms() {
		h.enter(ctx, conn, ch)
	}
	conn.presentAt = time.Now()
	if a.from != nil || len(resets) > 0 {
		outcome := "replayed"
		if len(resets) > 0 {
			outcome = "reset"
		}
		h.opts.Observer.Resumed(outcome)
	}
	h.queueStart(conn, append(resets, replay...), a.channels, heads)
	return conn, nil
}

// joinAll joins conn to the admitted channels and returns each one's join
// point. The caller disconnects conn when it fails.
func (h *Hub) joinAll(ctx context.Context, conn *Connection, a *admission) (map[string]uint64, error) {
	heads := make(map[string]uint64, len(a.channels))
	for _, ch := range a.channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		atLeast := uint64(0)
		if _, known := a.joinedAt[ch]; a.from != nil && !known {
			if _, had := a.from.Get(ch); !had {
				// New to the resumed stream, which may have had events
				// whose copies through it are still in flight (see joinAt).
				if atLeast, err = h.bb.Head(ctx, ch); err != nil {
					h.release(c)
					return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
				}
			}
		}
		heads[ch] = h.joinAt(conn, c, atLeast)
	}
	conn.mu.Lock()
	for ch, j := range a.joinedAt {
		if _, ok := conn.joinedAt[ch]; ok {
			conn.joinedAt[ch] = j // joined then, not now
		}
	}
	// Kept until a cursor past their roomcast:left is all a resume can
	// come from: a second resume from the same old cursor needs them too.
	conn.leftRooms = a.left
	conn.mu.Unlock()
	return heads, nil
}

// hold registers conn in the hub, where Lookup finds it, and in the shared
// directory, where other instances do. The caller disconnects conn when it
// fails.
func (h *Hub) hold(ctx context.Context, conn *Connection) error {
	h.mu.Lock()
	if h.draining {
		// Drain may have taken its snapshot while this connection was joining.
		h.mu.Unlock()
		return ErrDraining
	}
	h.conns[conn.ID] = conn
	h.mu.Unlock()
	if err := h.register(ctx, conn); err != nil {
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn.registeredAt = time.Now()
	return nil
}

// queueStart puts ahead of the live events conn queued while it joined
// what it starts with: pending (resets, then the replay), and where each
// of channels starts (heads).
func (h *Hub) queueStart(conn *Connection, pending []Delivery, channels []string, heads map[string]uint64) {
	for _, ch := range channels {
		pending = append(pending, Delivery{Kind: kindSettled, Channel: ch, seq: heads[ch]})
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	// The queue holds only live events so far; joins queued bookkeeping
	// that the replay's positions supersede. Now that every channel's
	// start is known, each multi-channel copy, replayed or live, is
	// decided: the replay's first, being earlier in every channel.
	conn.queue = slices.DeleteFunc(conn.queue, func(d Delivery) bool { return d.Kind == KindJoined || d.Kind == kindTrack })
	pending = conn.settleLocked(pending)
	conn.queue = conn.settleLocked(conn.queue)
	conn.connecting = false
	conn.replay = pending
	conn.signal()
}
