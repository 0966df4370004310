package relay

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/roomcast/roomcast/relay/internal/sse"
	"github.com/roomcast/roomcast/rooms"
)

// streamPolicy is what a stream owes its client and the cluster besides
// its deliveries, decided here once for both writers (pump for net/http,
// the streamer for hijacked connections), which only write the bytes:
//
//   - a heartbeat (": ping") once the stream was quiet for Heartbeat, so
//     that proxies and clients keep an idle stream open;
//   - roomcast:token-expiring tokenWarning before the token expires (at
//     once for a token closer to its end), again after each refresh;
//   - the close at the token's expiry (token_expired) or at the end of the
//     stream's jittered maximum lifetime (max_lifetime), whichever comes
//     first, written as the frame closeFrame makes;
//   - a keep-alive (Hub.Touch: registration, session, presence, client id
//     binding; and the connection slots) whenever the stream writes, at
//     most once per touchEvery: a busy stream never sees an idle
//     heartbeat, yet what it holds must stay alive.
//
// It is a value owned by the stream's writer, one goroutine at a time: due
// says, given the time and the connection, what is due now; next when the
// writer must look again if nothing else wakes it.
type streamPolicy struct {
	heartbeat time.Duration
	retry     func() time.Duration // the reconnect delay a close announces
	// lifeEnd is when the stream reached its maximum lifetime; zero: never.
	lifeEnd time.Time
	// expires is the expiry of the token followed, read in identity
	// generation gen; zero: the token does not expire.
	expires time.Time
	gen     uint64
	warned  bool // roomcast:token-expiring was written for this token
	// lastWrite is when bytes last went out; touchedAt when the last
	// keep-alive was due.
	lastWrite time.Time
	touchedAt time.Time
}

// identitySource is what the policy reads of a connection.
type identitySource interface {
	IdentityGeneration() uint64
	Identity() rooms.Identity
}

// touchEvery bounds how often a writing stream renews what it holds: the
// renewals are due every few seconds at most, and checking costs a context
// and the hub's locks, so not per write.
const touchEvery = time.Second

// tokenWarning is how long before its token expires a stream is told to
// refresh it.
const tokenWarning = 30 * time.Second

// newStreamPolicy starts the policy of a stream opened at now.
func (s *Server) newStreamPolicy(conn identitySource, now time.Time) *streamPolicy {
	p := &streamPolicy{heartbeat: s.opts.Heartbeat, retry: s.retryDelay, lastWrite: now}
	// The generation is read first: a refresh in between is seen at the
	// next decision, never missed.
	p.gen = conn.IdentityGeneration()
	p.expires = conn.Identity().Expires
	if d := s.opts.MaxStreamLifetime; d > 0 {
		// Jittered, so that streams opened together (after a deploy) do
		// not all come back together.
		p.lifeEnd = now.Add(d - rand.N(d/10+1))
	}
	return p
}

// streamDue is what is due at one decision.
type streamDue struct {
	// closing is set when the stream must end now, for close.
	closing bool
	close   rooms.CloseReason
	warn    bool // write roomcast:token-expiring
	ping    bool // write a heartbeat
	touch   bool // renew what the stream holds
}

// due says what is due at now. writing tells whether the writer has bytes
// to send anyway (deliveries, or bytes a full socket did not take yet): a
// stream that writes needs no heartbeat.
func (p *streamPolicy) due(now time.Time, conn identitySource, writing bool) streamDue {
	if g := conn.IdentityGeneration(); g != p.gen {
		// A refreshed token: its expiry is followed from now on, and
		// warned of again.
		p.gen, p.expires, p.warned = g, conn.Identity().Expires, false
	}
	var d streamDue
	if d.close, d.closing = p.closing(now); d.closing {
		return d
	}
	if !p.expires.IsZero() && !p.warned && !now.Before(p.expires.Add(-tokenWarning)) {
		d.warn, p.warned = true, true
		writing = true
	}
	d.ping = !writing && now.Sub(p.lastWrite) >= p.heartbeat
	if (writing || d.ping) && now.Sub(p.touchedAt) >= touchEvery {
		d.touch, p.touchedAt = true, now
	}
	return d
}

// closing says whether the stream must end at now, and why: the deadline
// passed first wins.
func (p *streamPolicy) closing(now time.Time) (rooms.CloseReason, bool) {
	expired := !p.expires.IsZero() && !now.Before(p.expires)
	aged := !p.lifeEnd.IsZero() && !now.Before(p.lifeEnd)
	switch {
	case expired && (!aged || p.expires.Before(p.lifeEnd)):
		return rooms.CloseReason{Code: rooms.CloseTokenExpired,
			Message:     "the token expired; reconnect with a fresh one to resume",
			ReconnectMS: int(p.retry().Milliseconds())}, true
	case aged:
		return rooms.CloseReason{Code: rooms.CloseMaxLifetime,
			Message:     "the stream reached its maximum lifetime; resume from the last cursor",
			ReconnectMS: int(p.retry().Milliseconds())}, true
	}
	return rooms.CloseReason{}, false
}

// wrote records that bytes went out at now.
func (p *streamPolicy) wrote(now time.Time) { p.lastWrite = now }

// next returns when something falls due if nothing is written before:
// never before now, so that a writer cannot spin on it. A heartbeat that
// is overdue while bytes wait for a full socket is looked at again one
// heartbeat later.
func (p *streamPolicy) next(now time.Time) time.Time {
	at := p.lastWrite.Add(p.heartbeat)
	if !at.After(now) {
		at = now.Add(p.heartbeat)
	}
	if !p.expires.IsZero() {
		e := p.expires
		if !p.warned {
			e = e.Add(-tokenWarning)
		}
		at = earliest(at, e)
	}
	if !p.lifeEnd.IsZero() {
		at = earliest(at, p.lifeEnd)
	}
	return latest(at, now)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// appendDue appends the frames due besides the deliveries.
func appendDue(buf []byte, conn *rooms.Connection, d streamDue) []byte {
	if d.warn {
		data, _ := json.Marshal(tokenExpiringData{ExpiresAt: conn.Identity().Expires.UnixMilli(), Connection: conn.ID})
		buf = sse.AppendEvent(buf, "", "roomcast:token-expiring", data)
	}
	if d.ping {
		buf = append(buf, pingFrame...)
	}
	return buf
}

// tokenExpiringData is the data of roomcast:token-expiring.
type tokenExpiringData struct {
	Connection string `json:"connection"`
	ExpiresAt  int64  `json:"expires_at"`
}

// pingFrame is the heartbeat comment; writers copy it, never change it.
var pingFrame = sse.AppendComment(nil, "ping")

// keepAlive renews what the stream holds: the connection's registration,
// session and presence (written to the backbone only when they are due)
// and its connection slots.
func (s *Server) keepAlive(ctx context.Context, conn *rooms.Connection, slots *connSlots) {
	if err := s.hub.Touch(ctx, conn); err != nil {
		s.log.Warn("session refresh failed", "connection", conn.ID, "err", err)
	}
	slots.renew(ctx)
}

// closeData is the data of roomcast:closing and roomcast:error.
type closeData struct {
	Reason      string `json:"reason,omitempty"`
	Code        string `json:"code,omitempty"`
	Message     string `json:"message"`
	ReconnectMS *int   `json:"reconnect_ms,omitempty"`
}

// closeFrame appends to buf the event that tells the client why the server
// ended its stream.
func (s *Server) closeFrame(conn *rooms.Connection, buf []byte) []byte {
	reason := conn.Reason()
	d := closeData{Message: reason.Message}
	name := "roomcast:closing"
	if reason.Error {
		name, d.Code = "roomcast:error", reason.Code
	} else {
		d.Reason = reason.Code
		ms := reason.ReconnectMS
		d.ReconnectMS = &ms
	}
	data, _ := json.Marshal(d)
	return sse.AppendEvent(buf, "", name, data)
}
