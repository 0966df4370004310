package rooms

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// PublishTokenWindow is how long after its minting a publish token is
// recognised: a resend within it is answered with the stored event, never
// published twice; a resend after it is refused (ErrPublishTokenExpired),
// because whether its publish was stored can no longer be told. It bounds
// what a backbone keeps per publish to minutes, whatever the history age.
const PublishTokenWindow = 2 * time.Minute

// PublishTokenSkew is how far the clocks of the instances minting and
// recognising tokens may disagree: backbones keep a token's record this much
// longer than the window.
const PublishTokenSkew = 30 * time.Second

// publishTokenPrefix starts every token; Idempotency-Key values starting
// with it are tokens, never a caller's own key.
const publishTokenPrefix = "rt_"

// PublishToken names one publish request, so that the backbone stores it at
// most once however often it is sent: by a library retrying after a lost
// reply, or by a client resending after an unknown outcome. Its text is
// "rt_" and the unpadded base64url of the minting time (Unix seconds, 4
// bytes big-endian) and 16 random bytes. The random part alone identifies
// the publish; the time tells how long the token is recognised, and where a
// backbone files it, without a lookup.
type PublishToken struct {
	Minted time.Time // whole seconds
	Random [16]byte
}

// NewPublishToken mints a token at now.
func NewPublishToken(now time.Time) PublishToken {
	t := PublishToken{Minted: time.Unix(now.Unix(), 0)}
	_, _ = rand.Read(t.Random[:])
	return t
}

// IsZero reports whether t is the zero token, which names no publish.
func (t PublishToken) IsZero() bool { return t.Minted.IsZero() }

// IsPublishToken reports whether an Idempotency-Key value is meant as a
// publish token (well formed or not) rather than a caller's own key.
func IsPublishToken(s string) bool { return strings.HasPrefix(s, publishTokenPrefix) }

// ParsePublishToken reads a token's text. Anything but exactly what String
// makes is an ErrInvalidIdempotency.
func ParsePublishToken(s string) (PublishToken, error) {
	raw, ok := strings.CutPrefix(s, publishTokenPrefix)
	if !ok || len(raw) != publishTokenLen {
		return PublishToken{}, fmt.Errorf("%w: a publish token is %s and %d base64url characters", ErrInvalidIdempotency, publishTokenPrefix, publishTokenLen)
	}
	var b [20]byte
	n, err := base64.RawURLEncoding.Strict().Decode(b[:], []byte(raw))
	if err != nil || n != len(b) {
		return PublishToken{}, fmt.Errorf("%w: a publish token is %s and %d base64url characters", ErrInvalidIdempotency, publishTokenPrefix, publishTokenLen)
	}
	t := PublishToken{Minted: time.Unix(int64(binary.BigEndian.Uint32(b[:4])), 0)}
	copy(t.Random[:], b[4:])
	return t, nil
}

// publishTokenLen is the length of a token's text after its prefix.
var publishTokenLen = base64.RawURLEncoding.EncodedLen(20)

// String is the token's text, as sent in Idempotency-Key headers.
func (t PublishToken) String() string {
	var b [20]byte
	binary.BigEndian.PutUint32(b[:4], uint32(t.Minted.Unix()))
	copy(b[4:], t.Random[:])
	return publishTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// Check refuses a token minted more than PublishTokenWindow away from now,
// in either direction: its record may be gone, so a publish with it could
// store the event twice.
func (t PublishToken) Check(now time.Time) error {
	if d := now.Sub(t.Minted); d > PublishTokenWindow || d < -PublishTokenWindow {
		return fmt.Errorf("%w: the token was minted at %s, more than %s from now", ErrPublishTokenExpired,
			t.Minted.UTC().Format(time.RFC3339), PublishTokenWindow)
	}
	return nil
}

// RecordExpiry is when a record of t written at now may go: t is accepted
// until PublishTokenWindow after its minting, which may be ahead of now,
// on clocks up to PublishTokenSkew behind this one.
func (t PublishToken) RecordExpiry(now time.Time) time.Time {
	from := now
	if t.Minted.After(now) {
		from = t.Minted
	}
	return from.Add(PublishTokenWindow + PublishTokenSkew)
}

// TokenRecord is how a backbone files the publish m.Token (or the token it
// minted for m) names. name derives from the token's random part and
// m.Caller: a token travels in headers, and another caller sending its text
// must neither learn the event it named nor, by sending it first, make the
// owner's resend answer for an event of hers; its publish is its own.
// digest derives from what m says (rooms, event, body, volatility, the
// sender's user; not the sending connection, which a client resending after
// a reconnect no longer has): a resend with the same name and another
// digest is not a resend of that publish and is refused with
// ErrPublishTokenReused.
func (m Message) TokenRecord(t PublishToken) (name [16]byte, digest string) {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(m.Caller)
	h.Write(t.Random[:])
	copy(name[:], h.Sum(nil))
	h.Reset()
	field(m.Event)
	field(string(m.Data))
	field(fmt.Sprint(m.Base64, m.Volatile, len(m.Channels), m.From != nil))
	for _, ch := range m.Channels {
		field(ch)
	}
	if m.From != nil {
		field(m.From.User)
	}
	sum := h.Sum(nil)
	return name, hex.EncodeToString(sum[:8])
}
