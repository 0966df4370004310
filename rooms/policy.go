package rooms

import (
	"context"
	"fmt"
	"strings"
)

// PublishLimits are the deployment-wide publish limits. A namespace may
// override MaxPayload, Rate and Burst for its rooms and broadcasts.
type PublishLimits struct {
	// MaxPayload bounds a publish body, in bytes.
	MaxPayload int64
	// Rate and Burst bound one caller's publishes per namespace, and
	// their private messages (all recipients together).
	Rate  float64
	Burst int
	// CallerRate and CallerBurst bound one caller's publishes in total,
	// whatever they go to: without it, a caller spreading publishes over
	// many namespaces would get a fresh allowance in each.
	CallerRate  float64
	CallerBurst int
}

// RateLimit is an allowance of Rate requests per second with Burst, kept
// under Key.
type RateLimit struct {
	Key   string
	Rate  float64
	Burst int
}

// Rate limit keys a publish decision charges, before the edge appends the
// caller (user, else address).
const (
	// publishScope prefixes the key of a namespace's allowance.
	publishScope = "publish:"
	// PrivateMessagesScope is the key of the allowance of private
	// messages; '#' cannot start a namespace name.
	PrivateMessagesScope = "publish:#user"
	// CallerTotalScope is the key of a caller's allowance for every
	// publish together; '*' cannot be in a namespace name.
	CallerTotalScope = "publish:*"
)

// PublishDecision is what an allowed publish must still pass.
type PublishDecision struct {
	// Charges are the caller's allowances the publish spends one request
	// of, all together or none: the namespace of each target (or the
	// private messages' one) and the caller's total. Empty for the server.
	Charges []RateLimit
}

// BanList tells whether an identity is banned; the Hub is one.
type BanList interface {
	// CheckBan returns an error wrapping ErrBanned for a banned identity.
	CheckBan(ctx context.Context, id Identity) error
}

// PublishPolicy holds every rule a publish must pass. It is the one place
// those rules are decided: every publish path (a room, several rooms, a
// user's private channel, a namespace broadcast) asks Check.
type PublishPolicy struct {
	// Namespaces are the namespaces' rules (nil: anyone may publish
	// anywhere, under the global limits).
	Namespaces *Namespaces
	Limits     PublishLimits
	// Bans refuses banned users (nil: nobody is banned).
	Bans BanList
}

// Check decides whether id may publish a body of size bytes to channels:
// room channels, a user's channel (a private message) or a namespace's
// channel (a broadcast). In order it applies the namespaces' rules (strict
// namespaces, who may publish, the token's publish patterns; anonymous
// callers send no private messages), bans and the payload limit of every
// target; an allowed publish gets the rate allowances it must spend.
func (p *PublishPolicy) Check(ctx context.Context, id Identity, channels []string, size int64) (PublishDecision, error) {
	if len(channels) == 0 {
		return PublishDecision{}, fmt.Errorf("%w: a publish needs a target", ErrInvalidRoom)
	}
	if err := p.Authorize(id, channels); err != nil {
		return PublishDecision{}, err
	}
	if p.Bans != nil {
		if err := p.Bans.CheckBan(ctx, id); err != nil {
			return PublishDecision{}, err
		}
	}
	if limit, ns := p.payloadLimit(channels); size > limit {
		where := "this relay's"
		if ns != "" {
			where = fmt.Sprintf("namespace %q's", ns)
		}
		return PublishDecision{}, fmt.Errorf("%w: the body is larger than %s limit of %d bytes", ErrPayloadTooLarge, where, limit)
	}
	if id.Server {
		return PublishDecision{}, nil
	}
	var d PublishDecision
	add := func(key string, rate float64, burst int) {
		for _, c := range d.Charges {
			if c.Key == key {
				return
			}
		}
		d.Charges = append(d.Charges, RateLimit{Key: key, Rate: rate, Burst: burst})
	}
	for _, ch := range channels {
		ns, ok := targetNamespace(ch)
		if !ok {
			add(PrivateMessagesScope, p.Limits.Rate, p.Limits.Burst)
			continue
		}
		o := p.options(ns)
		add(publishScope+ns, cmpPositive(o.PublishRate, p.Limits.Rate), cmpPositive(o.PublishBurst, p.Limits.Burst))
	}
	add(CallerTotalScope, p.Limits.CallerRate, p.Limits.CallerBurst)
	return d, nil
}

// Authorize applies the namespace rules and the token's limits to every
// target: the part of Check that needs neither the body nor the backbone,
// so that a caller who may not publish there is refused before its body
// is read.
func (p *PublishPolicy) Authorize(id Identity, channels []string) error {
	for _, ch := range channels {
		if err := p.authorize(id, ch); err != nil {
			return err
		}
	}
	return nil
}

// PayloadLimit is the largest body id may send to channels; for no
// channels (the targets are in the body, not read yet), the largest limit
// of the namespaces whose publish rule lets id in: a namespace that takes
// large bodies from the server or from users does not make the relay read
// that much from anyone else.
func (p *PublishPolicy) PayloadLimit(id Identity, channels []string) int64 {
	if len(channels) > 0 {
		limit, _ := p.payloadLimit(channels)
		return limit
	}
	if p.Namespaces == nil {
		return p.Limits.MaxPayload
	}
	limit := int64(0)
	consider := func(o NamespaceOptions) {
		if mayPublishIn(id, o) {
			limit = max(limit, cmpPositive(o.MaxPayload, p.Limits.MaxPayload))
		}
	}
	consider(p.Namespaces.Default)
	for _, o := range p.Namespaces.Named {
		consider(o)
	}
	if limit == 0 {
		// Published nowhere: the body is read (at the global limit) only
		// to name the rooms in the refusal.
		limit = p.Limits.MaxPayload
	}
	return limit
}

// mayPublishIn reports whether a namespace's publish rule admits id; the
// token's patterns, which need the room, are left to Check.
func mayPublishIn(id Identity, o NamespaceOptions) bool {
	switch {
	case id.Server:
		return true
	case o.Publish == PublishServer:
		return false
	case o.Publish == PublishAuthenticated:
		return !id.Anonymous()
	}
	return true
}

// payloadLimit is the smallest limit of channels' namespaces and the
// namespace setting it ("" for the global limit).
func (p *PublishPolicy) payloadLimit(channels []string) (int64, string) {
	limit, from := int64(-1), ""
	for _, ch := range channels {
		l, ns := p.Limits.MaxPayload, ""
		if name, ok := targetNamespace(ch); ok {
			if o := p.options(name); o.MaxPayload > 0 {
				l, ns = o.MaxPayload, name
			}
		}
		if limit < 0 || l < limit {
			limit, from = l, ns
		}
	}
	return limit, from
}

// options are namespace ns's rules; an unknown namespace (refused before
// any limit is asked for) has the global ones.
func (p *PublishPolicy) options(ns string) NamespaceOptions {
	if p.Namespaces == nil {
		return NamespaceOptions{}
	}
	o, _ := p.Namespaces.Lookup(ns)
	return o
}

// authorize applies the namespace rules and the token's limits to one
// target channel.
func (p *PublishPolicy) authorize(id Identity, ch string) error {
	if strings.HasPrefix(ch, userChannelPrefix) {
		if id.Anonymous() {
			return fmt.Errorf("%w: anonymous callers cannot send private messages", ErrUnauthenticated)
		}
		// A token's publish patterns limit everything it publishes: a
		// private message needs one matching "#user:<recipient>" ("*",
		// "#user:*"), as a broadcast needs one matching "ns:*".
		if !id.Server && id.Publish != nil && !matchAny(id.Publish, ch) {
			return fmt.Errorf("%w: the token does not allow private messages to %q", ErrForbidden, strings.TrimPrefix(ch, userChannelPrefix))
		}
		return nil
	}
	if p.Namespaces == nil {
		return nil
	}
	if ns, ok := strings.CutPrefix(ch, namespaceChannelPrefix); ok {
		return p.Namespaces.CanBroadcast(id, ns)
	}
	room, err := ParseRoom(ch)
	if err != nil {
		return err
	}
	return p.Namespaces.CanPublish(id, room)
}

// targetNamespace is the namespace a room or broadcast channel belongs to;
// ok is false for a user's channel.
func targetNamespace(ch string) (ns string, ok bool) {
	if strings.HasPrefix(ch, userChannelPrefix) {
		return "", false
	}
	if ns, ok := strings.CutPrefix(ch, namespaceChannelPrefix); ok {
		return ns, true
	}
	return channelNamespace(ch), true
}

// cmpPositive is v when it is set (above zero), else fallback.
func cmpPositive[T int | int64 | float64](v, fallback T) T {
	if v > 0 {
		return v
	}
	return fallback
}
