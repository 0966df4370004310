package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNoSenderConnection refuses a publish that asks to leave out its
// sender's connection without naming it.
var ErrNoSenderConnection = errors.New("exclude_self needs the sender's connection")

// RateSpender spends the rate allowances a publish decision names. The
// edge keeps the buckets (in the backbone when it keeps limits, else in
// the process); the Publisher decides what is spent and when, so that no
// publish path can leave it out.
type RateSpender interface {
	// SpendAll spends one request of every allowance in charges for
	// caller, all or none; a refusal is an error the edge can answer (it
	// says when to retry).
	SpendAll(ctx context.Context, caller string, charges []RateLimit) error
}

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// Policy holds the publish rules; its Bans default to the hub.
	Policy PublishPolicy
	// Spender spends the allowances Policy names (nil: nothing is spent).
	Spender RateSpender
	// IdempotencyTTL is how long the backbone remembers an idempotency
	// key: a key counts against its caller's bound that long.
	IdempotencyTTL time.Duration
	// MaxKeysPerCaller and MaxKeys bound the idempotency keys remembered
	// per caller and in all (Quota's bounds).
	MaxKeysPerCaller, MaxKeys int
}

// Publisher is the publish operation every publish path goes through: a
// room, several rooms, a user's private channel, a namespace broadcast, a
// batch, whatever the transport. It decides (PublishPolicy), holds the
// idempotency key, spends the rate allowances, sets the retention and
// stores the message, in that order.
type Publisher struct {
	bb     Backbone
	policy PublishPolicy
	spend  RateSpender
	keyTTL time.Duration
	// maxKeys is the per-caller bound of keys, for the refusal's text.
	maxKeys int

	// keys counts the idempotency keys remembered, by caller.
	keys *Quota
	// mu guards inFlight, the publishes holding each key now.
	mu       sync.Mutex
	inFlight map[string]*keyInFlight
}

// NewPublisher returns the publish operation of h's backbone.
func NewPublisher(h *Hub, o PublisherOptions) *Publisher {
	if o.Policy.Bans == nil {
		o.Policy.Bans = h
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 5 * time.Minute
	}
	return &Publisher{bb: h.bb, policy: o.Policy, spend: o.Spender, keyTTL: o.IdempotencyTTL, maxKeys: o.MaxKeysPerCaller,
		keys: NewQuota(o.MaxKeysPerCaller, o.MaxKeys), inFlight: make(map[string]*keyInFlight)}
}

// PublishRequest is one publish: who sends it, where and what.
type PublishRequest struct {
	Identity Identity
	// Address is the caller's address (as limits count it): the scope of
	// an anonymous caller's idempotency keys.
	Address string
	// Caller is who the rate allowances and the idempotency keys are
	// counted against: the user, or the address (the edge groups
	// development users and IPv6 /64s under it).
	Caller string
	// Channels are the targets: canonical names, without duplicates.
	Channels []string
	// Size is the body's size, checked against the payload limits.
	Size int64

	Event    string
	Data     json.RawMessage // compact JSON
	Base64   bool
	Volatile bool
	// Client is the sender's proven client id ("": none); ExcludeSelf
	// leaves it out of the delivery.
	Client      string
	ExcludeSelf bool
	// From and Exclude are the server's alone: it publishes on users'
	// behalf and addresses exactly.
	From    *Sender
	Exclude []string
	// IdempotencyKey is the caller's key, or a publish token the relay
	// handed out with an unknown outcome; "" for none.
	IdempotencyKey string
}

// Authorize refuses, before a body is read, a caller who may not publish
// to channels (see PublishPolicy.Authorize).
func (p *Publisher) Authorize(id Identity, channels []string) error {
	return p.policy.Authorize(id, channels)
}

// PayloadLimit is the largest body id may send to channels (see
// PublishPolicy.PayloadLimit).
func (p *Publisher) PayloadLimit(id Identity, channels []string) int64 {
	return p.policy.PayloadLimit(id, channels)
}

// IdempotencyKeys is how many callers' idempotency keys are counted as
// remembered.
func (p *Publisher) IdempotencyKeys() int { return p.keys.Held() }

// Publish decides on req and stores it. Errors are those of the policy,
// the limits and the backbone; an *OutcomeUnknownError names the token to
// resend with.
func (p *Publisher) Publish(ctx context.Context, req PublishRequest) (Published, error) {
	pr, err := p.prepare(ctx, req)
	if err != nil {
		return Published{}, err
	}
	res, err := p.bb.Publish(ctx, pr.msg, pr.key)
	pr.done(err == nil || errors.As(err, new(*OutcomeUnknownError)))
	return res, err
}

// prepared is a publish that passed every check and spent its allowance:
// what remains is to store it and then call done.
type prepared struct {
	msg  Message
	key  string
	done func(stored bool)
}

// prepare applies every rule to req, holds its key and spends its rate.
// The key and the rate are spent last, so that a publish refused for what
// it is holds no key and uses up none of the caller's allowance.
func (p *Publisher) prepare(ctx context.Context, req PublishRequest) (prepared, error) {
	id := req.Identity
	key, token, err := p.scopeKey(req)
	if err != nil {
		return prepared{}, err
	}
	decision, err := p.policy.Check(ctx, id, req.Channels, req.Size)
	if err != nil {
		return prepared{}, err
	}
	if req.ExcludeSelf && req.Client == "" {
		return prepared{}, fmt.Errorf("%w (name it in the Roomcast-Connection header)", ErrNoSenderConnection)
	}
	if !id.Server && len(req.Exclude) > 0 {
		return prepared{}, fmt.Errorf(`%w: only the server may use "exclude"; clients use exclude_self`, ErrForbidden)
	}
	if id.Server && req.From != nil {
		if err := ValidateUserID(req.From.User); err != nil {
			return prepared{}, err
		}
	}
	done, err := p.holdKey(req.Caller, key)
	if err != nil {
		return prepared{}, err
	}
	if p.spend != nil && len(decision.Charges) > 0 {
		if err := p.spend.SpendAll(ctx, req.Caller, decision.Charges); err != nil {
			done(false)
			return prepared{}, err
		}
	}
	msg := Message{
		Channels:  req.Channels,
		Event:     req.Event,
		Data:      req.Data,
		Base64:    req.Base64,
		From:      id.Sender(),
		Client:    req.Client,
		Volatile:  req.Volatile,
		Token:     token,
		Caller:    tokenScope(id),
		Retention: p.retention(req.Channels),
	}
	if id.Server {
		if req.From != nil {
			msg.From = req.From
		}
		msg.Exclude = append(msg.Exclude, req.Exclude...)
	}
	if req.ExcludeSelf {
		msg.Exclude = append(msg.Exclude, req.Client)
	}
	return prepared{msg: msg, key: key, done: done}, nil
}

// scopeKey reads req's idempotency key: a publish token the relay handed
// out with an unknown outcome, or the caller's own key scoped to its
// sender. A token is not a key of the caller's: the backbone keeps it
// minutes, in the publish's own record, so it counts against no caller's
// keys.
func (p *Publisher) scopeKey(req PublishRequest) (key string, token PublishToken, err error) {
	key = req.IdempotencyKey
	if IsPublishToken(key) {
		token, err = ParsePublishToken(key)
		return "", token, err
	}
	if key == "" {
		return "", token, nil
	}
	// Keys are the caller's own: another caller's key never answers for
	// this one. Backends holding the API key share theirs whatever
	// address they retry from. (Scopes are by exact sender, not by the
	// rate limits' caller, which groups development users and IPv6 /64s.)
	scope := "ip:" + req.Address
	switch {
	case req.Identity.Server:
		scope = "server"
	case req.Identity.User != "":
		scope = "user:" + scopeUser(req.Identity.User)
	}
	return scope + "|" + key, token, nil
}

// scopeUser is user as a key's scope: as it is, unless it holds the '|'
// that ends the scope (Auth0's ids do, "auth0|5f7c…") or starts with the
// quote that marks it, when it is quoted. Otherwise user "a" with key
// "b|k" and user "a|b" with key "k" would share "user:a|b|k", and one would
// be answered with what the other stored. Users without either keep the
// scope they always had, so keys remembered across a deploy still answer.
func scopeUser(user string) string {
	if strings.ContainsRune(user, '|') || strings.HasPrefix(user, `"`) {
		return strconv.Quote(user)
	}
	return user
}

// tokenScope names whose a publish token is: its user's (or the
// backends'); an anonymous caller's token is a bare capability, since its
// resend may come from another address (a phone that changed networks).
func tokenScope(id Identity) string {
	switch {
	case id.Server:
		return "server"
	case id.User != "":
		return "user:" + id.User
	}
	return ""
}

// holdKey counts a scoped idempotency key (scope|key) against caller's
// bound for as long as the backbone remembers it. The publish calls done
// once, saying whether the key may have been stored: a key counted by
// this call alone is taken back when it was not. Keys of the API key
// ("server") count only globally.
func (p *Publisher) holdKey(caller, key string) (done func(stored bool), err error) {
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
	p.mu.Lock()
	defer p.mu.Unlock()
	fresh := len(p.keys.Missing(caller, key)) > 0
	if !p.keys.Take(caller, time.Now().Add(p.keyTTL), key) {
		return release, fmt.Errorf("%w: too many idempotency keys remembered for this caller (at most %d within %s)",
			ErrLimitExceeded, p.maxKeys, p.keyTTL)
	}
	f := p.inFlight[key]
	if f == nil {
		f = &keyInFlight{}
		p.inFlight[key] = f
	}
	f.requests++
	f.shared = f.shared || f.requests > 1 || !fresh
	return func(stored bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !stored && !f.shared {
			p.keys.Release(caller, key)
		}
		if f.requests--; f.requests == 0 {
			delete(p.inFlight, key)
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

// retention is what the namespaces of channels keep: the most any of them
// asks for, so that no room keeps less than its namespace promises.
func (p *Publisher) retention(channels []string) Retention {
	var r Retention
	if p.policy.Namespaces == nil {
		return r
	}
	for _, ch := range channels {
		room, err := ParseRoom(ch)
		if err != nil {
			continue // user and namespace channels keep the backbone's
		}
		o, err := p.policy.Namespaces.Lookup(room.Namespace())
		if err != nil {
			continue
		}
		r.Size = max(r.Size, o.HistorySize)
		r.Age = max(r.Age, o.HistoryAge)
	}
	return r
}
