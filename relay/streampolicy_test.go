package relay

import (
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// identity is a connection's identity as the policy reads it.
type identity struct {
	gen uint64
	id  rooms.Identity
}

func (i *identity) IdentityGeneration() uint64 { return i.gen }
func (i *identity) Identity() rooms.Identity   { return i.id }

// refresh replaces the token, as Hub.Refresh does.
func (i *identity) refresh(expires time.Time) { i.id.Expires = expires; i.gen++ }

var t0 = time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)

func policyAt(conn identitySource, heartbeat, lifetime time.Duration) *streamPolicy {
	p := &streamPolicy{heartbeat: heartbeat, retry: func() time.Duration { return 2 * time.Second }, lastWrite: t0,
		gen: conn.IdentityGeneration(), expires: conn.Identity().Expires}
	if lifetime > 0 {
		p.lifeEnd = t0.Add(lifetime)
	}
	return p
}

// step is one decision: at t0+at, writing or not, the policy says want
// and then asks to be woken at t0+next.
type step struct {
	at      time.Duration
	writing bool
	want    streamDue
	next    time.Duration
	// then runs after the decision: a write, a refresh.
	then func(p *streamPolicy, now time.Time)
}

func wrote(p *streamPolicy, now time.Time) { p.wrote(now) }

func runSteps(t *testing.T, p *streamPolicy, conn identitySource, steps []step) {
	t.Helper()
	for i, s := range steps {
		now := t0.Add(s.at)
		got := p.due(now, conn, s.writing)
		if got != s.want {
			t.Fatalf("step %d at %v: due %+v, want %+v", i, s.at, got, s.want)
		}
		if s.then != nil {
			s.then(p, now)
		}
		if got.closing {
			continue
		}
		if next := p.next(now); !next.Equal(t0.Add(s.next)) {
			t.Fatalf("step %d at %v: next at %v, want %v", i, s.at, next.Sub(t0), s.next)
		}
	}
}

func TestStreamPolicyHeartbeat(t *testing.T) {
	conn := &identity{}
	p := policyAt(conn, 10*time.Second, 0)
	runSteps(t, p, conn, []step{
		{at: 5 * time.Second, next: 10 * time.Second},
		// Quiet for a heartbeat: a ping, and what the stream holds is renewed.
		{at: 10 * time.Second, want: streamDue{ping: true, touch: true}, then: wrote, next: 20 * time.Second},
		// A write moves the next heartbeat; a stream writing needs none.
		{at: 12 * time.Second, writing: true, want: streamDue{touch: true}, then: wrote, next: 22 * time.Second},
		// Renewals come once per touchEvery at most, however often it writes.
		{at: 12*time.Second + touchEvery/2, writing: true, then: wrote, next: 22*time.Second + touchEvery/2},
		{at: 13 * time.Second, writing: true, want: streamDue{touch: true}, then: wrote, next: 23 * time.Second},
		// Bytes waiting for a full socket: no ping however long the
		// quiet, and a wake one heartbeat on, never in the past.
		{at: 40 * time.Second, writing: true, want: streamDue{touch: true}, next: 50 * time.Second},
	})
}

func TestStreamPolicyTokenExpiry(t *testing.T) {
	conn := &identity{id: rooms.Identity{User: "ann", Expires: t0.Add(time.Minute)}}
	p := policyAt(conn, time.Hour, 0)
	expired := rooms.CloseReason{Code: rooms.CloseTokenExpired,
		Message: "the token expired; reconnect with a fresh one to resume", ReconnectMS: 2000}
	runSteps(t, p, conn, []step{
		{at: 0, next: time.Minute - tokenWarning},
		// tokenWarning before expiry: one warning, written with a keep-alive.
		{at: time.Minute - tokenWarning, want: streamDue{warn: true, touch: true}, then: wrote, next: time.Minute},
		{at: time.Minute - tokenWarning + time.Second, next: time.Minute},
		// A refresh: the new expiry is followed and warned of again.
		{at: 45 * time.Second, then: func(*streamPolicy, time.Time) { conn.refresh(t0.Add(2 * time.Minute)) }, next: time.Minute},
		{at: 50 * time.Second, next: 2*time.Minute - tokenWarning},
		// A refresh with a token already inside the warning: warned at once.
		{at: 60 * time.Second, then: func(*streamPolicy, time.Time) { conn.refresh(t0.Add(80 * time.Second)) }, next: 2*time.Minute - tokenWarning},
		{at: 61 * time.Second, want: streamDue{warn: true, touch: true}, then: wrote, next: 80 * time.Second},
		// At expiry the stream closes.
		{at: 80 * time.Second, want: streamDue{closing: true, close: expired}},
	})
}

func TestStreamPolicyLifetime(t *testing.T) {
	lifetime := rooms.CloseReason{Code: rooms.CloseMaxLifetime,
		Message: "the stream reached its maximum lifetime; resume from the last cursor", ReconnectMS: 2000}
	expired := rooms.CloseReason{Code: rooms.CloseTokenExpired,
		Message: "the token expired; reconnect with a fresh one to resume", ReconnectMS: 2000}
	conn := &identity{id: rooms.Identity{User: "ann", Expires: t0.Add(time.Hour)}}
	p := policyAt(conn, 10*time.Minute, 45*time.Second)
	runSteps(t, p, conn, []step{
		{at: 0, next: 45 * time.Second},
		{at: 45 * time.Second, want: streamDue{closing: true, close: lifetime}},
	})
	// Both deadlines passed when the writer looks: the first one wins.
	conn = &identity{id: rooms.Identity{User: "ann", Expires: t0.Add(40 * time.Second)}}
	p = policyAt(conn, 10*time.Minute, 45*time.Second)
	runSteps(t, p, conn, []step{
		{at: time.Minute, want: streamDue{closing: true, close: expired}},
	})
}
