package rooms

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestParseRoom(t *testing.T) {
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	tests := []struct {
		in        string
		canonical string // "" when the name must be rejected
		ns, name  string
	}{
		{in: "lobby", canonical: "lobby", ns: "default", name: "lobby"},
		{in: "default:lobby", canonical: "lobby", ns: "default", name: "lobby"},
		{in: "chat:lobby", canonical: "chat:lobby", ns: "chat", name: "lobby"},
		{in: "a_b-9:Room.1~x@y-z_", canonical: "a_b-9:Room.1~x@y-z_", ns: "a_b-9", name: "Room.1~x@y-z_"},
		{in: "x", canonical: "x", ns: "default", name: "x"},
		{in: ".a", canonical: ".a", ns: "default", name: ".a"},
		{in: "a..", canonical: "a..", ns: "default", name: "a.."},
		{in: "ns:.x.", canonical: "ns:.x.", ns: "ns", name: ".x."},
		{in: long('r', 128), canonical: long('r', 128), ns: "default", name: long('r', 128)},
		{in: long('n', 32) + ":r", canonical: long('n', 32) + ":r", ns: long('n', 32), name: "r"},
		{in: "default:" + long('r', 128), canonical: long('r', 128), ns: "default", name: long('r', 128)},

		// Rejected names.
		{in: ""},
		{in: "."},
		{in: ".."},
		{in: long('.', 128)},
		{in: "ns:..."},
		{in: "default:."},
		{in: long('r', 129)},
		{in: "room with space"},
		{in: "room/slash"},
		{in: "room%20"},
		{in: "room\n"},
		{in: "room\x00"},
		{in: "röom"},
		{in: "a:b:c"},
		{in: ":room"},
		{in: "ns:"},
		{in: ":"},
		{in: "Chat:room"},          // namespace is lower case only
		{in: "ch.at:room"},         // no dots in a namespace
		{in: "ch~at:room"},         // no ~ in a namespace
		{in: long('n', 33) + ":r"}, // namespace too long
		{in: "ns:" + long('r', 129)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRoom(tt.in)
			if tt.canonical == "" {
				if !errors.Is(err, ErrInvalidRoom) {
					t.Fatalf("ParseRoom(%q) = %v, %v; want ErrInvalidRoom", tt.in, r, err)
				}
				if !r.IsZero() {
					t.Fatalf("ParseRoom(%q) returned a non-zero room with its error", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoom(%q): %v", tt.in, err)
			}
			if r.String() != tt.canonical || r.Namespace() != tt.ns || r.Name() != tt.name {
				t.Fatalf("ParseRoom(%q) = %q (ns %q, name %q); want %q (ns %q, name %q)",
					tt.in, r.String(), r.Namespace(), r.Name(), tt.canonical, tt.ns, tt.name)
			}
			if r.IsZero() {
				t.Fatalf("ParseRoom(%q) is zero", tt.in)
			}
		})
	}
}

func TestParseRoomDefaultNamespaceIsSameRoom(t *testing.T) {
	a, b := MustRoom("x"), MustRoom("default:x")
	if a != b {
		t.Fatalf("x and default:x differ: %#v vs %#v", a, b)
	}
	if c := MustRoom("other:x"); c == a {
		t.Fatal("other:x is the same room as x")
	}
}

func TestParseRoomErrorIsShort(t *testing.T) {
	_, err := ParseRoom(strings.Repeat("!", 100_000))
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error for a huge name is missing or not truncated (%d bytes)", len(err.Error()))
	}
}

func TestMustRoomPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MustRoom of an invalid name did not panic")
		}
	}()
	MustRoom("..")
}

func TestZeroRoom(t *testing.T) {
	if !(Room{}).IsZero() {
		t.Fatal("zero Room is not IsZero")
	}
}

func TestValidateEventName(t *testing.T) {
	tests := []struct {
		name string
		want error // nil when valid
	}{
		{"message", nil},
		{"a", nil},
		{"chat.message:new_v-2", nil},
		{"A-Z_a-z.0-9:", nil},
		{strings.Repeat("e", 64), nil},
		{"roomcast", nil},
		{"Roomcast:connected", nil}, // the reserved prefix is case-sensitive
		{"x:roomcast:y", nil},

		{"", ErrInvalidEvent},
		{strings.Repeat("e", 65), ErrInvalidEvent},
		{"with space", ErrInvalidEvent},
		{"new\nline", ErrInvalidEvent},
		{"cr\r", ErrInvalidEvent},
		{"slash/", ErrInvalidEvent},
		{"tilde~", ErrInvalidEvent},
		{"at@", ErrInvalidEvent},
		{"é", ErrInvalidEvent},
		{"nul\x00", ErrInvalidEvent},

		{"roomcast:", ErrReservedEvent},
		{"roomcast:connected", ErrReservedEvent},
		{"roomcast:reset", ErrReservedEvent},
		{"roomcast:anything-else", ErrReservedEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateEventName(tt.name)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("ValidateEventName(%q) = %v; want nil", tt.name, err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("ValidateEventName(%q) = %v; want %v", tt.name, err, tt.want)
			}
		})
	}
}

// The grammar of issue 2, written independently of the hand-rolled parser.
var (
	roomGrammar  = regexp.MustCompile(`^(?:([a-z0-9_-]{1,32}):)?([A-Za-z0-9_.~@-]{1,128})$`)
	eventGrammar = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

func grammarAccepts(s string) bool {
	m := roomGrammar.FindStringSubmatch(s)
	return m != nil && strings.Trim(m[2], ".") != ""
}

func FuzzParseRoom(f *testing.F) {
	for _, s := range []string{"lobby", "default:x", "chat:lobby", "..", "a:b:c", ":", "ns:", "x.y", "Chat:x", "ö", strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoom(s)
		if ok := grammarAccepts(s); ok != (err == nil) {
			t.Fatalf("ParseRoom(%q) error %v, but the grammar says valid=%v", s, err, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidRoom) {
				t.Fatalf("ParseRoom(%q) = %v, not ErrInvalidRoom", s, err)
			}
			return
		}
		canon := r.String()
		r2, err := ParseRoom(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, s, err)
		}
		if r2 != r || r2.String() != canon {
			t.Fatalf("%q -> %q -> %q: canonical form is not stable", s, canon, r2.String())
		}
		if r.Namespace() == DefaultNamespace && strings.Contains(canon, ":") {
			t.Fatalf("canonical form %q of a default-namespace room has a prefix", canon)
		}

		err = ValidateEventName(s)
		switch valid := eventGrammar.MatchString(s); {
		case !valid && !errors.Is(err, ErrInvalidEvent):
			t.Fatalf("ValidateEventName(%q) = %v; want ErrInvalidEvent", s, err)
		case valid && strings.HasPrefix(s, ReservedPrefix) && !errors.Is(err, ErrReservedEvent):
			t.Fatalf("ValidateEventName(%q) = %v; want ErrReservedEvent", s, err)
		case valid && !strings.HasPrefix(s, ReservedPrefix) && err != nil:
			t.Fatalf("ValidateEventName(%q) = %v; want nil", s, err)
		}
	})
}
