package rooms

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors of identity and policy.
var (
	ErrUnauthenticated  = errors.New("authentication required")
	ErrForbidden        = errors.New("forbidden")
	ErrUnknownNamespace = errors.New("unknown namespace")
	ErrBanned           = errors.New("banned")
	ErrInvalidUser      = errors.New("invalid user id")
)

// Identity is who a request acts for, as established by the edge. The zero
// Identity is an anonymous caller.
type Identity struct {
	// User is the token's subject; "" for anonymous callers.
	User string
	// Name is the display name; it is only ever shown, never trusted.
	Name string
	// Server marks a caller holding the server API key.
	Server bool
	// Subscribe and Publish, when not nil, limit the rooms this identity
	// may use to those matching one of the patterns ('*' matches any run
	// of characters).
	Subscribe []string
	Publish   []string
	// Expires is when the identity's token expires; zero for never.
	Expires time.Time
}

// Anonymous reports whether the identity is neither a user nor the server.
func (id Identity) Anonymous() bool { return id.User == "" && !id.Server }

// Sender returns the identity as an event's sender, nil when anonymous.
func (id Identity) Sender() *Sender {
	if id.User == "" {
		return nil
	}
	return &Sender{User: id.User, Name: id.Name}
}

// ValidateUserID checks a user id taken from a URL: 1 to 256 bytes of
// UTF-8, no control characters. Other bytes would reach JSON (a token's
// sub, an event's from) as U+FFFD: another user's id.
func ValidateUserID(user string) error {
	if len(user) == 0 || len(user) > 256 {
		return fmt.Errorf("%w: must be 1 to 256 bytes", ErrInvalidUser)
	}
	if !utf8.ValidString(user) {
		return fmt.Errorf("%w: must be UTF-8 text", ErrInvalidUser)
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control characters are not allowed", ErrInvalidUser)
		}
	}
	return nil
}

// matchAny reports whether s matches one of the glob patterns.
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches s against p, where '*' stands for any run of
// characters and everything else for itself.
func globMatch(p, s string) bool {
	star := strings.IndexByte(p, '*')
	if star < 0 {
		return p == s
	}
	if !strings.HasPrefix(s, p[:star]) {
		return false
	}
	s = s[star:]
	p = p[star+1:]
	for {
		if globMatch(p, s) {
			return true
		}
		if s == "" {
			return false
		}
		s = s[1:]
	}
}
