package rooms

import (
	"fmt"
	"strings"
)

// DefaultNamespace is the namespace of a room named without a prefix.
const DefaultNamespace = "default"

// ReservedPrefix starts the names of system events; clients cannot publish them.
const ReservedPrefix = "roomcast:"

// Room is a validated room name. The zero Room is not valid.
type Room struct {
	ns   string
	name string
}

// ParseRoom validates s as `[ns:]name`: name matches [A-Za-z0-9_.~@-]{1,128}
// and is not all dots, ns matches [a-z0-9_-]{1,32}. A missing namespace means
// DefaultNamespace, and "default:x" is the same room as "x".
func ParseRoom(s string) (Room, error) {
	ns, name := DefaultNamespace, s
	if i := strings.IndexByte(s, ':'); i >= 0 {
		ns, name = s[:i], s[i+1:]
		if !validNamespace(ns) {
			return Room{}, fmt.Errorf("%w: namespace %q must match [a-z0-9_-]{1,32}", ErrInvalidRoom, truncate(ns))
		}
	}
	if !validRoomName(name) {
		return Room{}, fmt.Errorf("%w: %q must match [A-Za-z0-9_.~@-]{1,128} and not be all dots", ErrInvalidRoom, truncate(name))
	}
	return Room{ns: ns, name: name}, nil
}

// MustRoom is ParseRoom for names known to be valid; it panics otherwise.
func MustRoom(s string) Room {
	r, err := ParseRoom(s)
	if err != nil {
		panic(err)
	}
	return r
}

// Namespace returns the room's namespace ("default" when none was given).
func (r Room) Namespace() string { return r.ns }

// Name returns the room's name without its namespace.
func (r Room) Name() string { return r.name }

// String returns the canonical form: "name" in the default namespace, "ns:name" elsewhere.
func (r Room) String() string {
	if r.ns == DefaultNamespace {
		return r.name
	}
	return r.ns + ":" + r.name
}

// IsZero reports whether r is the zero Room.
func (r Room) IsZero() bool { return r.name == "" }

// ValidateEventName checks an event name a client wants to publish:
// [A-Za-z0-9_.:-]{1,64}, not starting with "roomcast:".
func ValidateEventName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return fmt.Errorf("%w: %q must be 1 to 64 characters", ErrInvalidEvent, truncate(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isAlnum(c) || c == '_' || c == '.' || c == ':' || c == '-') {
			return fmt.Errorf("%w: %q must match [A-Za-z0-9_.:-]{1,64}", ErrInvalidEvent, truncate(name))
		}
	}
	if strings.HasPrefix(name, ReservedPrefix) {
		return fmt.Errorf("%w: names starting with %q are reserved for system events", ErrReservedEvent, ReservedPrefix)
	}
	return nil
}

func validNamespace(ns string) bool {
	if len(ns) == 0 || len(ns) > 32 {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validRoomName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	dots := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case isAlnum(c), c == '_', c == '~', c == '@', c == '-':
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return dots != len(name)
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// truncate keeps error messages short when the offending input is huge.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
