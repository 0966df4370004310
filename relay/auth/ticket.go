package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// A ticket is base64url(payload) "." base64url(HMAC-SHA256(payload)), the
// MAC keyed with the sign.Ticket key derived from Config.TicketKey. The
// payload is
//
//	version     1 byte (ticketVersion)
//	expiry      8 bytes, big-endian Unix nanoseconds: when the ticket expires
//	nonce       16 random bytes: what makes the ticket single-use
//	expires     1 byte 0 (identity never expires) or 1 followed by
//	            varint Unix seconds and uvarint nanoseconds
//	user, name  uvarint length + bytes each
//	subscribe,  1 byte 0 (nil: no restriction) or 1 followed by a uvarint
//	publish     count and that many uvarint length + bytes strings
//
// A ticket carries the identity, never the token it came from.
const (
	ticketVersion = 1
	nonceLen      = 16
	macLen        = sha256.Size // sign.Ticket's tag size
	// maxTicketLen bounds the work an unauthenticated caller can cause; an
	// identity taken from a token of at most maxTokenLen always fits.
	maxTicketLen = 16 << 10
)

// IssueTicket returns a single-use ticket standing for id and its lifetime:
// the configured TicketTTL (at most 60 s), shortened so that the ticket
// never outlives id.Expires. Tickets are for users: an anonymous id fails
// with rooms.ErrUnauthenticated, and the API key cannot be exchanged for a
// ticket (rooms.ErrForbidden) so that server rights never reach a URL. An
// id that has already expired fails with ErrInvalidToken.
func (a *Authenticator) IssueTicket(id rooms.Identity) (ticket string, ttl time.Duration, err error) {
	switch {
	case id.Server:
		return "", 0, fmt.Errorf("%w: the API key cannot be exchanged for a ticket", rooms.ErrForbidden)
	case id.User == "":
		return "", 0, fmt.Errorf("%w: tickets are issued to authenticated users only", rooms.ErrUnauthenticated)
	}
	now := a.now()
	expiry := now.Add(a.ticketTTL)
	if !id.Expires.IsZero() && id.Expires.Before(expiry) {
		expiry = id.Expires
	}
	ttl = expiry.Sub(now)
	if ttl <= 0 {
		return "", 0, invalid("token expired")
	}
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", 0, fmt.Errorf("auth: ticket nonce: %w", err)
	}
	payload := encodeTicket(nil, ticketPayload{expiry: expiry.UnixNano(), nonce: nonce, id: id})
	enc := base64.RawURLEncoding
	if enc.EncodedLen(len(payload))+1+enc.EncodedLen(macLen) > maxTicketLen {
		return "", 0, errors.New("auth: identity too large for a ticket")
	}
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(a.ticketMAC.Append(nil, payload)), ttl, nil
}

// TicketHeld is how long a ticket issued for ttl may hold state: until it
// expires, and its key, once spent, is forgotten.
func (a *Authenticator) TicketHeld(ttl time.Duration) time.Duration { return ttl + a.spentKept }

// RedeemTicket verifies ticket and spends it, returning the identity it
// stands for. claim must return true exactly once per key across all
// instances and remember the key for at least ttl; the key is derived from
// the ticket's nonce. Expired, tampered, malformed or already used tickets
// fail with ErrInvalidToken; an error from claim is returned wrapped as is
// (the store is down, not the caller wrong).
func (a *Authenticator) RedeemTicket(ctx context.Context, ticket string, claim func(ctx context.Context, key string, ttl time.Duration) (bool, error)) (rooms.Identity, error) {
	if claim == nil {
		return rooms.Identity{}, errors.New("auth: RedeemTicket needs a claim function")
	}
	if len(ticket) > maxTicketLen {
		return rooms.Identity{}, invalid("ticket too large")
	}
	p64, m64, ok := strings.Cut(ticket, ".")
	if !ok {
		return rooms.Identity{}, invalid("malformed ticket")
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(p64)
	if err != nil {
		return rooms.Identity{}, invalid("malformed ticket")
	}
	mac, err := enc.DecodeString(m64)
	if err != nil || len(mac) != macLen {
		return rooms.Identity{}, invalid("malformed ticket")
	}
	if !a.ticketMAC.Verify(payload, mac) {
		return rooms.Identity{}, invalid("bad ticket signature")
	}
	t, err := decodeTicket(payload)
	if err != nil {
		return rooms.Identity{}, invalid("malformed ticket")
	}
	now := a.now()
	remaining := time.Unix(0, t.expiry).Sub(now)
	if remaining <= 0 || (!t.id.Expires.IsZero() && !now.Before(t.id.Expires)) {
		return rooms.Identity{}, invalid("ticket expired")
	}
	first, err := claim(ctx, "ticket:"+hex.EncodeToString(t.nonce[:]), remaining+a.spentKept)
	if err != nil {
		return rooms.Identity{}, fmt.Errorf("auth: spending ticket: %w", err)
	}
	if !first {
		return rooms.Identity{}, invalid("ticket already used")
	}
	return t.id, nil
}

type ticketPayload struct {
	expiry int64 // Unix nanoseconds
	nonce  [nonceLen]byte
	id     rooms.Identity
}

func encodeTicket(b []byte, t ticketPayload) []byte {
	b = append(b, ticketVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(t.expiry))
	b = append(b, t.nonce[:]...)
	if t.id.Expires.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.AppendVarint(b, t.id.Expires.Unix())
		b = binary.AppendUvarint(b, uint64(t.id.Expires.Nanosecond()))
	}
	b = appendString(b, t.id.User)
	b = appendString(b, t.id.Name)
	b = appendList(b, t.id.Subscribe)
	b = appendList(b, t.id.Publish)
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendList(b []byte, l []string) []byte {
	if l == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(l)))
	for _, s := range l {
		b = appendString(b, s)
	}
	return b
}

var errTicketFormat = errors.New("bad ticket payload")

// ticketReader reads a payload; the first error sticks.
type ticketReader struct {
	b   []byte
	err error
}

func (r *ticketReader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errTicketFormat
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *ticketReader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *ticketReader) uvarint() uint64 { return readVarint(r, binary.Uvarint) }

func (r *ticketReader) varint() int64 { return readVarint(r, binary.Varint) }

// readVarint reads one value with decode, binary.Uvarint or binary.Varint.
func readVarint[T uint64 | int64](r *ticketReader, decode func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := decode(r.b)
	if n <= 0 {
		r.err = errTicketFormat
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *ticketReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errTicketFormat
		return ""
	}
	return string(r.bytes(int(n)))
}

func (r *ticketReader) list() []string {
	switch r.byte() {
	case 0:
		return nil
	case 1:
	default:
		r.err = errTicketFormat
		return nil
	}
	n := r.uvarint()
	// Every entry takes at least one byte: a count larger than what is
	// left is a lie, and must not size an allocation.
	if n > uint64(len(r.b)) {
		r.err = errTicketFormat
		return nil
	}
	l := make([]string, 0, n)
	for range n {
		l = append(l, r.string())
	}
	return l
}

func decodeTicket(b []byte) (ticketPayload, error) {
	r := &ticketReader{b: b}
	var t ticketPayload
	if r.byte() != ticketVersion {
		return t, errTicketFormat
	}
	if v := r.bytes(8); v != nil {
		t.expiry = int64(binary.BigEndian.Uint64(v))
	}
	copy(t.nonce[:], r.bytes(nonceLen))
	switch r.byte() {
	case 0:
	case 1:
		sec := r.varint()
		nsec := r.uvarint()
		if nsec >= uint64(time.Second) {
			return t, errTicketFormat
		}
		t.id.Expires = time.Unix(sec, int64(nsec))
	default:
		return t, errTicketFormat
	}
	t.id.User = r.string()
	t.id.Name = r.string()
	t.id.Subscribe = r.list()
	t.id.Publish = r.list()
	if r.err != nil {
		return ticketPayload{}, r.err
	}
	if len(r.b) != 0 || t.id.User == "" {
		return ticketPayload{}, errTicketFormat
	}
	return t, nil
}
