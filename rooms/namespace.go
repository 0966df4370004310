package rooms

import (
	"fmt"
	"time"
)

// PublishRule says who may publish in a namespace.
type PublishRule string

// Publish rules.
const (
	PublishAnyone        PublishRule = "anyone"
	PublishAuthenticated PublishRule = "authenticated"
	PublishServer        PublishRule = "server"
)

// NamespaceOptions are the rules of one namespace.
type NamespaceOptions struct {
	// Anonymous lets callers without a token subscribe.
	Anonymous bool
	// Publish says who may publish.
	Publish PublishRule
	// Presence enables the presence list and roomcast:join/leave.
	Presence bool
	// JoinLeaveEvents sends roomcast:join and roomcast:leave to the room.
	JoinLeaveEvents bool
	// HistorySize and HistoryAge override the global retention (0: global).
	HistorySize int
	HistoryAge  time.Duration
	// MaxPayload overrides the global publish body limit (0: global).
	MaxPayload int64
	// PublishRate and PublishBurst override the global publish rate limit (0: global).
	PublishRate  float64
	PublishBurst int
}

// Namespaces holds every namespace's rules.
type Namespaces struct {
	// Default applies to the default namespace and, unless Strict, to
	// every namespace not listed.
	Default NamespaceOptions
	// Named lists namespaces with their own rules.
	Named map[string]NamespaceOptions
	// Strict makes namespaces that are not listed unknown.
	Strict bool
}

// Lookup returns the rules of namespace ns.
func (n *Namespaces) Lookup(ns string) (NamespaceOptions, error) {
	if o, ok := n.Named[ns]; ok {
		return o, nil
	}
	if ns == DefaultNamespace || !n.Strict {
		return n.Default, nil
	}
	return NamespaceOptions{}, fmt.Errorf("%w: %q", ErrUnknownNamespace, ns)
}

// CanSubscribe decides whether id may subscribe to room.
func (n *Namespaces) CanSubscribe(id Identity, room Room) error {
	o, err := n.Lookup(room.Namespace())
	if err != nil {
		return err
	}
	if id.Server {
		return nil
	}
	if id.Anonymous() {
		if !o.Anonymous {
			return fmt.Errorf("%w: namespace %q needs a token to subscribe", ErrUnauthenticated, room.Namespace())
		}
		return nil
	}
	if id.Subscribe != nil && !matchAny(id.Subscribe, room.String()) {
		return fmt.Errorf("%w: the token does not allow subscribing to %q", ErrForbidden, room.String())
	}
	return nil
}

// CanBroadcast decides whether id may publish to every connection in
// namespace ns: the namespace's publish rule applies, and a token limited
// by publish patterns needs one covering the whole namespace ("ns:*" or "*").
func (n *Namespaces) CanBroadcast(id Identity, ns string) error {
	return n.canPublish(id, ns, ns+":*")
}

// CanPublish decides whether id may publish to room.
func (n *Namespaces) CanPublish(id Identity, room Room) error {
	return n.canPublish(id, room.Namespace(), room.String())
}

func (n *Namespaces) canPublish(id Identity, ns, target string) error {
	o, err := n.Lookup(ns)
	if err != nil {
		return err
	}
	if id.Server {
		return nil
	}
	switch o.Publish {
	case PublishServer:
		if id.Anonymous() {
			return fmt.Errorf("%w: only the server may publish in namespace %q", ErrUnauthenticated, ns)
		}
		return fmt.Errorf("%w: only the server may publish in namespace %q", ErrForbidden, ns)
	case PublishAuthenticated:
		if id.Anonymous() {
			return fmt.Errorf("%w: namespace %q needs a token to publish", ErrUnauthenticated, ns)
		}
	}
	if !id.Anonymous() && id.Publish != nil && !matchAny(id.Publish, target) {
		return fmt.Errorf("%w: the token does not allow publishing to %q", ErrForbidden, target)
	}
	return nil
}
