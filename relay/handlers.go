package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz fails only while starting and draining. The backbone's state is
// reported, not acted on: if it is down it is down for every instance, and
// taking them all out of routing would only turn a degraded service into
// an outage.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	status, code := "ready", http.StatusOK
	switch {
	case s.draining.Load():
		status, code = "draining", http.StatusServiceUnavailable
	case !s.ready.Load():
		status, code = "starting", http.StatusServiceUnavailable
	}
	backbone := "up"
	if _, err := s.hub.Backbone().Epoch(r.Context()); err != nil {
		backbone = "down"
	}
	writeJSON(w, code, map[string]any{"status": status, "backbone": backbone, "connections": s.hub.Connections()})
}

// publishAnswer is the 202 body of a publish.
type publishAnswer struct {
	ID    *string  `json:"id"`
	Room  string   `json:"room,omitempty"`
	Rooms []string `json:"rooms,omitempty"`
	Event string   `json:"event"`
}

func (s *Server) publishRoom(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.publish(w, r, publishTarget{channels: []string{room.String()}})
}

func (s *Server) publishMulti(w http.ResponseWriter, r *http.Request) {
	s.publish(w, r, publishTarget{multi: true})
}

func (s *Server) publishUser(w http.ResponseWriter, r *http.Request) {
	user := roomParam(r, "user")
	if err := rooms.ValidateUserID(user); err != nil {
		writeError(w, err)
		return
	}
	s.publish(w, r, publishTarget{channels: []string{rooms.UserChannel(user)}})
}

func (s *Server) publishNamespace(w http.ResponseWriter, r *http.Request) {
	ns := roomParam(r, "ns")
	if _, err := rooms.ParseRoom(ns + ":x"); err != nil {
		writeError(w, errorf(codeInvalidRoom, "namespace %q must match [a-z0-9_-]{1,32}", ns))
		return
	}
	s.publish(w, r, publishTarget{channels: []string{rooms.NamespaceChannel(ns)}})
}

// publishTarget is where a publish request goes: rooms, a user's channel
// (a private message) or a namespace's channel (a broadcast).
type publishTarget struct {
	channels []string // nil when the body names the rooms
	multi    bool     // POST /v1/events: rooms from the body
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, t publishTarget) {
	if m := s.opts.Metrics; m != nil {
		defer func(start time.Time) { m.PublishTime.Observe(time.Since(start).Seconds()) }(time.Now())
	}
	msg, key, keyDone, err := s.readPublish(w, r, &t)
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := s.hub.Backbone().Publish(r.Context(), msg, key)
	var unknown *rooms.OutcomeUnknownError
	keyDone(err == nil || errors.As(err, &unknown))
	if err != nil {
		if errors.As(err, &unknown) {
			// The caller resends with this key: its own when it sent one
			// (the same script recorded both), else the publish's token.
			resend := r.Header.Get("Idempotency-Key")
			if resend == "" {
				resend = unknown.Token.String()
			}
			w.Header().Set("Idempotency-Key", resend)
		}
		writeError(w, err)
		return
	}
	ans := publishAnswer{Event: res.Event}
	if res.ID != "" {
		ans.ID = &res.ID
	}
	if t.multi {
		ans.Rooms = make([]string, len(res.Channels))
		for i, ch := range res.Channels {
			ans.Rooms[i] = rooms.DisplayName(ch)
		}
	} else {
		ans.Room = rooms.DisplayName(res.Channels[0])
	}
	if res.Duplicate {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, ans)
}

// readPublish authenticates and parses a publish request, has the publish
// policy decide on it and spends the rate allowances it names; it returns
// the message to publish and its scoped idempotency key, counted against
// the caller's bound; keyDone must be called once the publish is over.
func (s *Server) readPublish(w http.ResponseWriter, r *http.Request, t *publishTarget) (msg rooms.Message, key string, keyDone func(stored bool), err error) {
	id, err := s.identify(r, auth.StateChanging)
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	if err := s.checkOrigin(r); err != nil {
		return rooms.Message{}, "", nil, err
	}
	key = r.Header.Get("Idempotency-Key")
	if !validIdempotencyKey(key) {
		return rooms.Message{}, "", nil, errorf(codeInvalidParameter, "Idempotency-Key must be 1 to 255 printable ASCII characters")
	}
	// A key the relay handed out with an unknown outcome is the publish's
	// token, not a key of the caller's: the backbone keeps it minutes, in
	// the publish's own record, so it counts against no caller's keys.
	var token rooms.PublishToken
	if rooms.IsPublishToken(key) {
		if token, err = rooms.ParsePublishToken(key); err != nil {
			return rooms.Message{}, "", nil, err
		}
		key = ""
	}
	// Keys are the caller's own: another caller's key never answers for
	// this one. Backends holding the API key share theirs whatever
	// address they retry from. Tokens are their user's (or the
	// backends'); an anonymous caller's token is a bare capability, since
	// its resend may come from another address (a phone that changed
	// networks).
	// (Scopes are by exact sender, not by the rate limits' caller key,
	// which groups development users and IPv6 /64s.)
	scope, tokenScope := "ip:"+s.clientIP(r), ""
	switch {
	case id.Server:
		scope, tokenScope = "server", "server"
	case id.User != "":
		scope = "user:" + id.User
		tokenScope = scope
	}
	if key != "" {
		key = scope + "|" + key
	}
	client, err := s.senderClient(r.Context(), id, r.Header.Get("Roomcast-Connection"))
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	// A caller who may not publish to the targets named in the URL is
	// refused before its body is read; the body is read up to its
	// targets' limit (when they are in the body, the largest of the
	// namespaces the caller may publish in); the policy decides on its
	// size.
	if err := s.publishPolicy.Authorize(id, t.channels); err != nil {
		return rooms.Message{}, "", nil, err
	}
	body, err := readBody(w, r, s.publishPolicy.PayloadLimit(id, t.channels))
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	req, err := parsePublish(r.Header.Get("Content-Type"), body, r.URL.Query(), t.multi)
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	if t.multi {
		if len(req.Rooms) > rooms.MaxEventRooms {
			return rooms.Message{}, "", nil, errorf(codeTooManyRooms, "an event goes to at most %d rooms", rooms.MaxEventRooms)
		}
		seen := make(map[string]bool, len(req.Rooms))
		for _, name := range req.Rooms {
			room, err := rooms.ParseRoom(name)
			if err != nil {
				return rooms.Message{}, "", nil, err
			}
			if !seen[room.String()] {
				seen[room.String()] = true
				t.channels = append(t.channels, room.String())
			}
		}
	}
	decision, err := s.publishPolicy.Check(r.Context(), id, t.channels, int64(len(body)))
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	if req.ExcludeSelf && client == "" {
		return rooms.Message{}, "", nil, errorf(codeInvalidParameter, "exclude_self needs a Roomcast-Connection header naming the sender's connection")
	}
	if !id.Server && len(req.Exclude) > 0 {
		return rooms.Message{}, "", nil, errorf(codeForbidden, `only the server may use "exclude"; clients use exclude_self`)
	}
	if id.Server && req.From != nil {
		if err := rooms.ValidateUserID(req.From.User); err != nil {
			return rooms.Message{}, "", nil, err
		}
	}
	// The key and the rate are spent last, so that a publish refused for
	// what it is holds no key and uses up none of the caller's allowance.
	keyDone, err = s.holdIdempotencyKey(s.rateKey(r, id), key)
	if err != nil {
		return rooms.Message{}, "", nil, err
	}
	if err := s.chargePublish(r, id, decision.Charges); err != nil {
		keyDone(false)
		return rooms.Message{}, "", nil, err
	}
	msg = rooms.Message{
		Channels: t.channels,
		Event:    req.Event,
		Data:     req.Data,
		Base64:   req.Base64,
		From:     id.Sender(),
		Client:   client,
		Volatile: req.Volatile,
		Token:    token,
		Caller:   tokenScope,
	}
	msg.Retention = s.retention(msg.Channels)
	if id.Server {
		// Backends publish on users' behalf and address exactly.
		if req.From != nil {
			msg.From = req.From
		}
		msg.Exclude = append(msg.Exclude, req.Exclude...)
	}
	if req.ExcludeSelf {
		msg.Exclude = append(msg.Exclude, client)
	}
	return msg, key, keyDone, nil
}

// holdIdempotencyKey counts a scoped idempotency key (scope|key) against
// caller's bound (its rateKey: the limits' caller, an IPv6 /64 or a
// development user's address, not the key's exact scope) for as long as
// the backbone remembers it. The publish calls done once, saying whether
// the key may have been stored: a key counted by this call alone is taken
// back when it was not. Keys of the API key ("server") count only
// globally.
func (s *Server) holdIdempotencyKey(caller, key string) (done func(stored bool), err error) {
	release := func(bool) {}
	if key == "" {
		return release, nil
	}
	if scope, _, _ := strings.Cut(key, "|"); scope == "server" {
		// Backends are trusted with any number of their own keys; the
		// global bound still holds for them.
		caller = "server\x00" + key
	}
	// Requests in flight with the same key: a failed one may take the
	// key back only if no other held it meanwhile — the other may have
	// stored it, and releasing it then would let a caller store keys past
	// its bound (two at once, one refused, one accepted).
	s.idemMu.Lock()
	defer s.idemMu.Unlock()
	fresh := len(s.idemKeys.Missing(caller, key)) > 0
	if !s.idemKeys.Take(caller, time.Now().Add(s.opts.IdempotencyTTL), key) {
		return release, fmt.Errorf("%w: too many idempotency keys remembered for this caller (at most %d within %s)",
			rooms.ErrLimitExceeded, s.opts.Limits.MaxIdempotencyKeysPerCaller, s.opts.IdempotencyTTL)
	}
	f := s.idemInFlight[key]
	if f == nil {
		f = &keyInFlight{}
		s.idemInFlight[key] = f
	}
	f.requests++
	f.shared = f.shared || f.requests > 1 || !fresh
	return func(stored bool) {
		s.idemMu.Lock()
		defer s.idemMu.Unlock()
		if !stored && !f.shared {
			s.idemKeys.Release(caller, key)
		}
		if f.requests--; f.requests == 0 {
			delete(s.idemInFlight, key)
		}
	}, nil
}

// keyInFlight counts the publishes holding one idempotency key at once.
type keyInFlight struct {
	requests int
	// shared: another request held the key while one did, or it was
	// held before: a failure must then leave it counted.
	shared bool
}

func validIdempotencyKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for _, c := range k {
		if c > unicode.MaxASCII || !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	s.changeRooms(w, r, s.hub.Join)
}

func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	s.changeRooms(w, r, s.hub.Leave)
}

func (s *Server) changeRooms(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, caller rooms.Identity, id, channel string) error) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := s.identify(r, auth.StateChanging)
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil && r.Method == http.MethodPut {
		err = s.limitRequest(r, id, "join")
	}
	if err == nil {
		err = change(r.Context(), id, roomParam(r, "connection"), room.String())
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// historyAnswer is the body of GET /v1/rooms/{room}/history.
type historyAnswer struct {
	Events []json.RawMessage `json:"events"`
	// Before pages further back: pass it as ?before=; null on the oldest page.
	Before *string `json:"before"`
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	room, err := rooms.ParseRoom(roomParam(r, "room"))
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := s.identify(r, auth.Subscribing)
	if err == nil {
		err = s.hub.Authorize(id, room.String())
	}
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, errorf(codeInvalidParameter, "limit must be 1 to 1000"))
			return
		}
		limit = n
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		epoch, seq, err := rooms.ParseEventID(v)
		if err != nil {
			writeError(w, errorf(codeInvalidParameter, "before must be an event id"))
			return
		}
		current, err := s.hub.Backbone().Epoch(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		if epoch != current {
			writeJSON(w, http.StatusOK, historyAnswer{Events: []json.RawMessage{}})
			return
		}
		before = seq
	}
	ch := room.String()
	events, err := s.hub.Backbone().Before(r.Context(), ch, before, limit+1)
	if err != nil {
		writeError(w, err)
		return
	}
	ans := historyAnswer{Events: []json.RawMessage{}}
	if len(events) > limit {
		events = events[1:]
		id := events[0].ID()
		ans.Before = &id
	}
	for _, ev := range events {
		ans.Events = append(ans.Events, ev.Envelope(ev.ChannelIndex(ch)))
	}
	writeJSON(w, http.StatusOK, ans)
}

// queryRooms parses every ?room= of a multi-room request.
func queryRooms(values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			room, err := rooms.ParseRoom(name)
			if err != nil {
				return nil, err
			}
			out = append(out, room.String())
		}
	}
	return out, nil
}

// refreshToken extends a stream with a fresh token of the same user.
func (s *Server) refreshToken(w http.ResponseWriter, r *http.Request) {
	id, err := s.identify(r, auth.StateChanging)
	switch {
	case err != nil:
	case id.Server:
		err = fmt.Errorf("%w: a connection is refreshed with its user's token, not the API key", rooms.ErrForbidden)
	case id.User == "":
		err = fmt.Errorf("%w: send the new token as Authorization: Bearer", rooms.ErrUnauthenticated)
	}
	if err == nil {
		err = s.checkOrigin(r)
	}
	if err == nil {
		err = s.limitRequest(r, id, "token")
	}
	if err == nil {
		err = s.hub.Refresh(r.Context(), id, roomParam(r, "connection"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// retention is what the namespaces of channels keep: the most any of them
// asks for, so that no room keeps less than its namespace promises.
func (s *Server) retention(channels []string) rooms.Retention {
	var r rooms.Retention
	if s.opts.Namespaces == nil {
		return r
	}
	for _, ch := range channels {
		room, err := rooms.ParseRoom(ch)
		if err != nil {
			continue // user and namespace channels keep the backbone's
		}
		o, err := s.opts.Namespaces.Lookup(room.Namespace())
		if err != nil {
			continue
		}
		r.Size = max(r.Size, o.HistorySize)
		r.Age = max(r.Age, o.HistoryAge)
	}
	return r
}
