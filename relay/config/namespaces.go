package config

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/roomcast/roomcast/rooms"
)

// namespaceFile is the TOML form of the namespace configuration.
type namespaceFile struct {
	StrictNamespaces bool                     `toml:"strict_namespaces"`
	Namespaces       map[string]namespaceBody `toml:"namespaces"`
}

// namespaceBody holds the options a namespace sets; nil fields keep the
// value it inherits.
type namespaceBody struct {
	Anonymous       *bool    `toml:"anonymous"`
	Publish         *string  `toml:"publish"`
	Presence        *bool    `toml:"presence"`
	JoinLeaveEvents *bool    `toml:"join_leave_events"`
	HistorySize     *int     `toml:"history_size"`
	HistoryAge      *string  `toml:"history_age"`
	MaxPayload      *int64   `toml:"max_payload"`
	PublishRate     *float64 `toml:"publish_rate"`
	PublishBurst    *int     `toml:"publish_burst"`
}

var namespaceName = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// LoadNamespaces reads the namespace file at path (TOML; "" for none).
// Every namespace starts from base, the options the global flags give the
// default namespace; [namespaces.default] changes the default namespace and
// what unlisted namespaces inherit.
func LoadNamespaces(path string, base rooms.NamespaceOptions) (rooms.Namespaces, error) {
	if path == "" {
		return rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{}}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return rooms.Namespaces{}, fmt.Errorf("namespace config: %w", err)
	}
	return ParseNamespaces(data, path, base)
}

// ParseNamespaces is LoadNamespaces for the contents of the file named
// path (used in errors only).
func ParseNamespaces(data []byte, path string, base rooms.NamespaceOptions) (rooms.Namespaces, error) {
	ns := rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{}}
	var f namespaceFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return ns, fmt.Errorf("namespace config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return ns, fmt.Errorf("namespace config %s: unknown settings %s", path, strings.Join(keys, ", "))
	}
	ns.Strict = f.StrictNamespaces
	if d, ok := f.Namespaces[rooms.DefaultNamespace]; ok {
		if ns.Default, err = d.apply(base); err != nil {
			return ns, fmt.Errorf("namespace config %s: [namespaces.default]: %w", path, err)
		}
	}
	for name, body := range f.Namespaces {
		if name == rooms.DefaultNamespace {
			continue
		}
		if !namespaceName.MatchString(name) {
			return ns, fmt.Errorf("namespace config %s: %q is not a namespace name ([a-z0-9_-]{1,32})", path, name)
		}
		o, err := body.apply(ns.Default)
		if err != nil {
			return ns, fmt.Errorf("namespace config %s: [namespaces.%s]: %w", path, name, err)
		}
		ns.Named[name] = o
	}
	return ns, nil
}

func (b namespaceBody) apply(o rooms.NamespaceOptions) (rooms.NamespaceOptions, error) {
	if b.Anonymous != nil {
		o.Anonymous = *b.Anonymous
	}
	if b.Publish != nil {
		switch p := rooms.PublishRule(*b.Publish); p {
		case rooms.PublishAnyone, rooms.PublishAuthenticated, rooms.PublishServer:
			o.Publish = p
		default:
			return o, fmt.Errorf("publish = %q: must be anyone, authenticated or server", *b.Publish)
		}
	}
	if b.Presence != nil {
		o.Presence = *b.Presence
	}
	if b.JoinLeaveEvents != nil {
		o.JoinLeaveEvents = *b.JoinLeaveEvents
	}
	if !o.Presence {
		// roomcast:join and roomcast:leave come from the presence list:
		// asking for them without it would silently send nothing, while
		// an inherited true simply follows presence off.
		if b.JoinLeaveEvents != nil && *b.JoinLeaveEvents {
			return o, fmt.Errorf("join_leave_events = true needs presence = true (join and leave events come from the presence list)")
		}
		o.JoinLeaveEvents = false
	}
	// The bounds are those of the global settings (-history-size,
	// -max-payload, -publish-burst): a namespace cannot go past what the
	// relay allows anywhere.
	if b.HistorySize != nil {
		if *b.HistorySize < 1 || *b.HistorySize > 1_000_000 {
			return o, fmt.Errorf("history_size = %d: must be a whole number from 1 to 1000000", *b.HistorySize)
		}
		o.HistorySize = *b.HistorySize
	}
	if b.HistoryAge != nil {
		d, err := time.ParseDuration(*b.HistoryAge)
		if err != nil || d < time.Second {
			return o, fmt.Errorf("history_age = %q: must be a duration of at least 1s", *b.HistoryAge)
		}
		o.HistoryAge = d
	}
	if b.MaxPayload != nil {
		if *b.MaxPayload < 1 || *b.MaxPayload > maxPayloadLimit {
			return o, fmt.Errorf("max_payload = %d: must be a whole number from 1 to %d", *b.MaxPayload, maxPayloadLimit)
		}
		o.MaxPayload = *b.MaxPayload
	}
	if b.PublishRate != nil {
		// NaN compares false with everything: "<= 0" alone lets it
		// (and infinity) through, and a NaN rate means no limit.
		if r := *b.PublishRate; !(r > 0) || math.IsInf(r, 0) {
			return o, fmt.Errorf("publish_rate = %v: must be a finite number above 0", r)
		}
		o.PublishRate = *b.PublishRate
	}
	if b.PublishBurst != nil {
		if *b.PublishBurst < 1 || *b.PublishBurst > 1_000_000 {
			return o, fmt.Errorf("publish_burst = %d: must be a whole number from 1 to 1000000", *b.PublishBurst)
		}
		o.PublishBurst = *b.PublishBurst
	}
	return o, nil
}
