package rooms

import (
	"cmp"
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
	epoch, err := h.bb.Epoch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if err := h.checkBan(ctx, req.Identity); err != nil {
		return nil, err
	}
	conn := h.newConnection(claimedClient(req.Client, req.Proof), req.Multi)
	conn.connecting = true
	conn.epoch = epoch
	conn.claimsEpoch = epoch
	conn.identity = req.Identity
	var resets []Delivery
	var from *Cursor
	if req.Resume != "" {
		cur, err := h.codec.Decode(req.Resume)
		switch {
		case err != nil:
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
		case cur.Epoch != epoch:
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetHistoryLost})
		case req.Multi != (cur.Session != ""):
			resets = append(resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
		default:
			from = &cur
		}
	}
	channels := slices.Clone(req.Channels)
	var joinedAt map[string]uint64 // by the restored session
	var left []leftRoom            // by the restored session
	if req.Multi {
		conn.Session = randomID(12)
		if from != nil {
			saved, ok, err := h.bb.LoadSession(ctx, from.Session)
			switch {
			case err != nil:
				return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
			case ok:
				conn.Session = from.Session
				channels, joinedAt, left = parseSessionEntries(saved, epoch)
			default:
				resets = append(resets, Delivery{Kind: KindReset, Reason: ResetSessionExpired})
			}
		}
	}
	if req.Multi {
		// Only rooms are kept in a session; the user and namespace
		// channels follow from the identity and the rooms.
		channels = slices.DeleteFunc(channels, func(ch string) bool { return !IsRoomChannel(ch) })
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)
	if len(channels) > h.opts.MaxRooms {
		return nil, fmt.Errorf("%w: at most %d rooms per connection", ErrTooManyRooms, h.opts.MaxRooms)
	}
	if len(channels) == 0 && !req.Multi {
		return nil, fmt.Errorf("%w: no room", ErrInvalidRoom)
	}
	allowed := channels[:0:0]
	for _, ch := range channels {
		if err := h.authorize(req.Identity, ch); err != nil {
			if from == nil || !req.Multi {
				return nil, err
			}
			continue // a restored session keeps only what the token still allows
		}
		allowed = append(allowed, ch)
	}
	channels = allowed
	// A left room is replayed only while the token still allows it, a
	// namespace channel only with such a room of its namespace.
	left = slices.DeleteFunc(left, func(l leftRoom) bool { return h.authorize(req.Identity, l.name) != nil })
	left = slices.DeleteFunc(left, func(l leftRoom) bool {
		if IsRoomChannel(l.name) {
			return false
		}
		inNS := func(ch string) bool { return IsRoomChannel(ch) && NamespaceChannel(channelNamespace(ch)) == l.name }
		return !slices.ContainsFunc(channels, inNS) && !slices.ContainsFunc(left, func(o leftRoom) bool { return inNS(o.name) })
	})
	// Bound once the request is known to be valid, so that a refused
	// stream leaves no binding behind.
	conn.bindCaller = cmp.Or(req.Caller, "\x00"+conn.Client)
	_, proof, unclaim, err := h.claimClient(ctx, req.Identity, conn.bindCaller, conn.Client, req.Proof)
	if err != nil {
		return nil, err
	}
	conn.Proof = proof
	defer func() {
		if err != nil {
			unclaim() // a refused stream binds no new id
		}
	}()
	conn.boundAt = time.Now()
	conn.rooms = make(map[string]bool, len(channels))
	for _, ch := range channels {
		conn.rooms[ch] = true
	}
	channels = append(channels, implicitChannels(channels)...)
	if req.Multi && req.Identity.User != "" {
		channels = append(channels, UserChannel(req.Identity.User))
	}
	slices.Sort(channels)
	channels = slices.Compact(channels)

	if req.Multi {
		// The session outlives the stream by SessionTTL: it counts
		// against its caller until then (Disconnect starts the clock).
		caller := cmp.Or(req.Caller, "\x00"+conn.Session)
		if !h.sessions.Take(caller, time.Time{}, conn.Session) {
			return nil, fmt.Errorf("%w: at most %d multi-room sessions of one caller are kept (for %s after their stream)",
				ErrTooManySessions, h.opts.MaxSessionsPerCaller, h.opts.SessionTTL)
		}
		conn.sessionCaller = caller
		restored := from != nil && from.Session == conn.Session
		defer func() {
			if err != nil && !restored {
				h.sessions.Release(caller, conn.Session) // never saved
			}
		}()
	}
	heads := make(map[string]uint64, len(channels))
	for _, ch := range channels {
		c, err := h.acquire(ctx, ch)
		if err != nil {
			h.Disconnect(conn)
			return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
		}
		atLeast := uint64(0)
		if _, known := joinedAt[ch]; from != nil && !known {
			if _, had := from.Get(ch); !had {
				// New to the resumed stream, which may have had events
				// whose copies through it are still in flight (see joinAt).
				if atLeast, err = h.bb.Head(ctx, ch); err != nil {
					h.release(c)
					h.Disconnect(conn)
					return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
				}
			}
		}
		heads[ch] = h.joinAt(conn, c, atLeast)
	}
	conn.mu.Lock()
	for ch, j := range joinedAt {
		if _, ok := conn.joinedAt[ch]; ok {
			conn.joinedAt[ch] = j // joined then, not now
		}
	}
	// Kept until a cursor past their roomcast:left is all a resume can
	// come from: a second resume from the same old cursor needs them too.
	conn.leftRooms = left
	conn.mu.Unlock()
	h.mu.Lock()
	if h.draining {
		// Drain may have taken its snapshot while this connection was joining.
		h.mu.Unlock()
		h.Disconnect(conn)
		return nil, ErrDraining
	}
	h.conns[conn.ID] = conn
	h.mu.Unlock()
	if err := h.register(ctx, conn); err != nil {
		h.Disconnect(conn)
		return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	conn.registeredAt = time.Now()

	conn.cursor = Cursor{Epoch: epoch, Session: conn.Session}
	replay, err := h.replay(ctx, conn, from, joinedAt, left, heads, &resets)
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
	if from != nil || len(resets) > 0 {
		outcome := "replayed"
		if len(resets) > 0 {
			outcome = "reset"
		}
		h.opts.Observer.Resumed(outcome)
	}
	pending := append(resets, replay...)
	for _, ch := range channels {
		pending = append(pending, Delivery{Kind: kindSettled, Channel: ch, seq: heads[ch]})
	}
	conn.mu.Lock()
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
	conn.mu.Unlock()
	return conn, nil
}
