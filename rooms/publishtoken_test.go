package rooms_test

import (
	"errors"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

func TestPublishTokenRoundTrip(t *testing.T) {
	now := time.Now()
	tok := rooms.NewPublishToken(now)
	s := tok.String()
	if !rooms.IsPublishToken(s) || len(s) != 30 {
		t.Fatalf("token text %q", s)
	}
	back, err := rooms.ParsePublishToken(s)
	if err != nil || back != tok {
		t.Fatalf("ParsePublishToken(%q) = %+v, %v; want %+v", s, back, err, tok)
	}
	if err := back.Check(now); err != nil {
		t.Fatalf("a fresh token is refused: %v", err)
	}
	if other := rooms.NewPublishToken(now); other.Random == tok.Random {
		t.Fatal("two tokens share their random part")
	}
	for _, bad := range []string{"", "rt_", "rt_" + s[3:29], s + "A", "rt_" + s[4:] + "=", "RT_" + s[3:], s[:29] + "+"} {
		if _, err := rooms.ParsePublishToken(bad); !errors.Is(err, rooms.ErrInvalidIdempotency) {
			t.Errorf("ParsePublishToken(%q) = %v; want ErrInvalidIdempotency", bad, err)
		}
	}
	if err := rooms.NewPublishToken(now.Add(-rooms.PublishTokenWindow - time.Second)).Check(now); !errors.Is(err, rooms.ErrPublishTokenExpired) {
		t.Fatalf("an old token's Check = %v; want ErrPublishTokenExpired", err)
	}
}

// FuzzParsePublishToken: Idempotency-Key headers are untrusted. A token
// either fails with ErrInvalidIdempotency or reads back to exactly its text.
func FuzzParsePublishToken(f *testing.F) {
	f.Add(rooms.NewPublishToken(time.Now()).String())
	f.Add("rt_")
	f.Add("rt_AAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("rt_////////////////////////////")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := rooms.ParsePublishToken(s)
		if err != nil {
			if !errors.Is(err, rooms.ErrInvalidIdempotency) {
				t.Fatalf("ParsePublishToken(%q): %v is not ErrInvalidIdempotency", s, err)
			}
			return
		}
		if tok.String() != s {
			t.Fatalf("ParsePublishToken(%q) reads back as %q", s, tok.String())
		}
		_ = tok.Check(time.Now())
	})
}
