package rooms

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// admitKind is what a transport opens: it says how admit reads the
// request's rooms, cursor and session.
type admitKind int

const (
	// admitStream is a stream of the rooms it names; its cursor is a
	// single-room stream's (no session).
	admitStream admitKind = iota
	// admitSession is a multi-room stream: it may start with no room, a
	// cursor names its session, and only rooms are kept in a session (the
	// user and namespace channels follow from the identity and the rooms).
	admitSession
	// admitPoll is a poll: it names at least one room, and a cursor it
	// cannot resume from refuses it (there is no stream to carry a reset).
	admitPoll
)

// admitRequest is what a transport asks to open.
type admitRequest struct {
	kind admitKind
	// rooms are the canonical channels requested.
	rooms []string
	// client, proof, caller, identity: as in ConnectRequest and PollRequest.
	client, proof, caller string
	identity              Identity
	// cursor is the resume cursor, "" for none.
	cursor string
	// user adds the identity's user channel, when it has a user.
	user bool
	// parked lets a long-poll continue from the session its previous
	// poll parked (pollsession.go); park says that it would park one.
	parked, park bool
}

// admission is what admit settled: everything that could refuse the
// request was checked, and the client id is bound to the caller.
type admission struct {
	epoch string
	// rooms are the rooms the request holds, channels those with their
	// namespace channels and the user's channel; both sorted.
	rooms, channels []string
	// client is the client id, proof its proof, bindCaller who the
	// binding counts against.
	client, proof, bindCaller string
	// from is the cursor resumed from: valid, of this epoch and of the
	// request's kind; nil when there is none.
	from *Cursor
	// resets say why a cursor given is not resumed from, or not all of it.
	resets []Delivery
	// session is a multi-room stream's session id (restored, or fresh),
	// counted against sessionCaller; joinedAt and left are what the
	// restored session recorded of its rooms.
	session, sessionCaller string
	restored               bool
	joinedAt               map[string]uint64
	left                   []leftRoom
	// parked is the session a long-poll continues from; when set, admit
	// stopped there and only rooms and channels are set besides: the
	// session holds the rest.
	parked *pollSession

	unclaim, unsession func()
}

// undo takes back what admit bound and counted, for a request refused
// after it, so that a refusal leaves nothing behind.
func (a *admission) undo() {
	a.unsession()
	a.unclaim()
}

// admit runs the admission steps every transport shares, in one order:
// the rooms the identity may hold, bans, the parked poll session, the
// client id, the backbone's epoch, the cursor, a multi-room session,
// quotas, and last, once nothing else can refuse, the client id's binding
// and the session's count. It creates nothing a refused request would
// leave behind (see admission.undo for what the caller takes back).
func (h *Hub) admit(ctx context.Context, r admitRequest) (_ *admission, err error) {
	a := &admission{unclaim: func() {}, unsession: func() {}}
	// A multi-room stream resuming a session holds the session's rooms,
	// known only once the session is read: its rooms are checked then.
	restoring := r.kind == admitSession && r.cursor != ""
	if !restoring {
		if err := h.admitRooms(a, r, r.rooms, false); err != nil {
			return nil, err
		}
	}
	if err := h.checkBan(ctx, r.identity); err != nil {
		return nil, err
	}
	if r.parked {
		if a.parked = h.takePollSession(r.client, r.proof, r.cursor, r.identity, a.channels); a.parked != nil {
			return a, nil
		}
	}
	// The client id (not yet bound: that comes last) is the one given,
	// the one the proof names, or a fresh one.
	a.client = claimedClient(r.client, r.proof)
	if a.epoch, err = h.bb.Epoch(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBackboneDown, err)
	}
	if err := h.admitCursor(a, r); err != nil {
		return nil, err
	}
	if r.kind == admitSession {
		if err := h.admitSession(ctx, a); err != nil {
			return nil, err
		}
	}
	if restoring {
		rooms := r.rooms
		if a.restored {
			rooms = a.rooms
		}
		// A restored session keeps only what the token still allows.
		if err := h.admitRooms(a, r, rooms, a.from != nil); err != nil {
			return nil, err
		}
		h.admitLeft(a, r.identity)
	}
	if r.park {
		if err := h.checkPollSession(a.client, r.caller); err != nil {
			return nil, err
		}
	}
	// Bound once the request is known to be valid, so that a refused
	// request leaves no binding behind.
	a.bindCaller = cmp.Or(r.caller, "\x00"+a.client)
	if _, a.proof, a.unclaim, err = h.claimClient(ctx, r.identity, a.bindCaller, a.client, r.proof); err != nil {
		return nil, err
	}
	if r.kind == admitSession {
		if err := h.countSession(a, r.caller); err != nil {
			a.unclaim()
			return nil, err
		}
	}
	return a, nil
}

// admitRooms sets a's rooms and channels from rooms, refusing any the
// identity may not subscribe to; lenient drops those instead.
func (h *Hub) admitRooms(a *admission, r admitRequest, rooms []string, lenient bool) error {
	rooms = slices.Clone(rooms)
	if r.kind == admitSession {
		rooms = slices.DeleteFunc(rooms, func(ch string) bool { return !IsRoomChannel(ch) })
	}
	slices.Sort(rooms)
	rooms = slices.Compact(rooms)
	per := "connection"
	if r.kind == admitPoll {
		per = "poll"
	}
	if len(rooms) > h.opts.MaxRooms {
		return fmt.Errorf("%w: at most %d rooms per %s", ErrTooManyRooms, h.opts.MaxRooms, per)
	}
	if len(rooms) == 0 && r.kind != admitSession {
		return fmt.Errorf("%w: no room", ErrInvalidRoom)
	}
	allowed := rooms[:0:0]
	for _, ch := range rooms {
		if err := h.authorize(r.identity, ch); err != nil {
			if !lenient {
				return err
			}
			continue
		}
		allowed = append(allowed, ch)
	}
	a.rooms = allowed
	channels := make([]string, 0, 2*len(allowed)+1)
	channels = append(channels, allowed...)
	channels = append(channels, implicitChannels(allowed)...)
	if r.user && r.identity.User != "" {
		channels = append(channels, UserChannel(r.identity.User))
	}
	slices.Sort(channels)
	a.channels = slices.Compact(channels)
	return nil
}

// admitCursor decodes the request's cursor into a.from, or says in
// a.resets why it cannot be resumed from.
func (h *Hub) admitCursor(a *admission, r admitRequest) error {
	if r.cursor == "" {
		return nil
	}
	cur, err := h.codec.Decode(r.cursor)
	switch {
	case err != nil && r.kind == admitPoll:
		return err
	case err != nil:
		a.resets = append(a.resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
	case cur.Epoch != a.epoch:
		a.resets = append(a.resets, Delivery{Kind: KindReset, Reason: ResetHistoryLost})
	case r.kind != admitPoll && (r.kind == admitSession) != (cur.Session != ""):
		a.resets = append(a.resets, Delivery{Kind: KindReset, Reason: ResetCursorInvalid})
	default:
		a.from = &cur
	}
	return nil
}

// admitSession restores the session a multi-room stream's cursor names,
// or gives the stream a fresh one.
func (h *Hub) admitSession(ctx context.Context, a *admission) error {
	a.session = randomID(12)
	if a.from == nil {
		return nil
	}
	saved, ok, err := h.bb.LoadSession(ctx, a.from.Session)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrBackboneDown, err)
	case ok:
		a.session, a.restored = a.from.Session, true
		a.rooms, a.joinedAt, a.left = parseSessionEntries(saved, a.epoch)
	default:
		a.resets = append(a.resets, Delivery{Kind: KindReset, Reason: ResetSessionExpired})
	}
	return nil
}

// admitLeft keeps of a restored session's left rooms those a resume
// replays: a left room only while the token still allows it, a namespace
// channel only with such a room of its namespace.
func (h *Hub) admitLeft(a *admission, id Identity) {
	left := slices.DeleteFunc(a.left, func(l leftRoom) bool { return h.authorize(id, l.name) != nil })
	a.left = slices.DeleteFunc(left, func(l leftRoom) bool {
		if IsRoomChannel(l.name) {
			return false
		}
		inNS := func(ch string) bool { return IsRoomChannel(ch) && NamespaceChannel(channelNamespace(ch)) == l.name }
		return !slices.ContainsFunc(a.rooms, inNS) && !slices.ContainsFunc(left, func(o leftRoom) bool { return inNS(o.name) })
	})
}

// countSession counts a multi-room stream's session against its caller.
// The session outlives the stream by SessionTTL: it counts until then
// (Disconnect starts the clock).
func (h *Hub) countSession(a *admission, caller string) error {
	caller = cmp.Or(caller, "\x00"+a.session)
	if !h.sessions.Take(caller, time.Time{}, a.session) {
		return fmt.Errorf("%w: at most %d multi-room sessions of one caller are kept (for %s after their stream)",
			ErrTooManySessions, h.opts.MaxSessionsPerCaller, h.opts.SessionTTL)
	}
	a.sessionCaller = caller
	if !a.restored {
		// A restored session was saved: it counts on, for SessionTTL.
		a.unsession = func() { h.sessions.Release(caller, a.session) }
	}
	return nil
}
