// Package sign is where every MAC of the relay is made: one key per purpose,
// derived from the deployment's shared secret with HKDF-SHA256 (RFC 5869),
// and one pooled HMAC-SHA256 to sign and verify with it.
//
// A key per purpose means a value signed for one purpose never verifies for
// another, whatever its bytes: a cursor is no ticket, even when one's layout
// happens to parse as the other's. Keys are derived rather than configured
// so that one secret (ROOMCAST_CURSOR_KEY, or the one the backbone shares)
// is all an operator keeps, and a purpose added later needs no new setting.
//
// The package sits under rooms, which imports nothing of the project, so
// that rooms and relay can both use it.
package sign

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"slices"
	"sync"
)

// Purpose is what a MAC is for. Each has its own key and tag length.
type Purpose int

// Purposes. To add one, add a constant here and its line to purposes; a
// purpose's info string must never change (every value signed under it
// would stop verifying) and must never be reused.
const (
	// Cursor signs subscribers' cursors (rooms.CursorCodec).
	Cursor Purpose = iota + 1
	// Ticket signs single-use stream tickets (relay/auth).
	Ticket
	// DevTokenMark marks development tokens this relay minted (relay),
	// keyed from the development-token key rather than the cursor
	// secret.
	DevTokenMark
)

// purposes holds, for each Purpose, the HKDF info its key is derived with
// and how many bytes of the HMAC its tags keep. The lengths are those the
// formats had before this package, so no value changed its size.
var purposes = [...]struct {
	info string
	size int
}{
	Cursor:       {"roomcast/cursor", 16},
	Ticket:       {"roomcast/ticket", sha256.Size},
	DevTokenMark: {"roomcast/dev-token-mark", sha256.Size},
}

// MinSecret is the shortest secret accepted: 128 bits.
const MinSecret = 16

// keySize is the size of a derived key: SHA-256's block is 64 bytes, and
// HMAC gains nothing from a key longer than its output.
const keySize = sha256.Size

func (p Purpose) valid() bool { return p > 0 && int(p) < len(purposes) && purposes[p].info != "" }

// String is the purpose's name, as HKDF's info.
func (p Purpose) String() string {
	if !p.valid() {
		return fmt.Sprintf("sign.Purpose(%d)", int(p))
	}
	return purposes[p].info
}

// Size is how many bytes a tag of p has.
func (p Purpose) Size() int {
	if !p.valid() {
		return 0
	}
	return purposes[p].size
}

// Key derives p's key from secret: HKDF-SHA256 with no salt (the secret is
// random, or the operator's; a salt would have to be shared as well) and
// p's name as info.
func Key(secret []byte, p Purpose) ([]byte, error) {
	if !p.valid() {
		return nil, fmt.Errorf("sign: unknown purpose %d", int(p))
	}
	if len(secret) < MinSecret {
		return nil, fmt.Errorf("sign: the secret must be at least %d bytes, got %d", MinSecret, len(secret))
	}
	k, err := hkdf.Key(sha256.New, secret, nil, purposes[p].info, keySize)
	if err != nil {
		return nil, fmt.Errorf("sign: deriving the %s key: %w", p, err)
	}
	return k, nil
}

// Signer signs and verifies values of one purpose. It is safe for
// concurrent use.
type Signer struct {
	purpose Purpose
	size    int
	cur     *keyed
	// legacy verifies values signed before keys were derived here; nil
	// when the purpose had no earlier derivation (see WithLegacy).
	legacy *keyed
}

// New returns the signer of purpose p, keyed from secret.
func New(secret []byte, p Purpose) (*Signer, error) {
	k, err := Key(secret, p)
	if err != nil {
		return nil, err
	}
	return &Signer{purpose: p, size: purposes[p].size, cur: newKeyed(k, nil)}, nil
}

// Legacy is how a purpose's MAC was keyed before this package: HMAC-SHA256
// under Key of Prefix followed by the value. Only verification uses it.
type Legacy struct {
	Key    []byte
	Prefix []byte
}

// WithLegacy returns a signer that signs as s does and also accepts values
// signed under old, so that a deploy does not invalidate what clients hold.
// Callers mark where they use it with the release after which to remove
// it.
func (s *Signer) WithLegacy(old Legacy) *Signer {
	c := *s
	c.legacy = newKeyed(slices.Clone(old.Key), slices.Clone(old.Prefix))
	return &c
}

// Purpose is what s signs for.
func (s *Signer) Purpose() Purpose { return s.purpose }

// Size is the length of s's tags.
func (s *Signer) Size() int { return s.size }

// Append appends msg's tag to dst. msg may be a part of dst.
func (s *Signer) Append(dst, msg []byte) []byte {
	st := s.cur.get(msg)
	dst = append(dst, st.sum[:s.size]...)
	s.cur.put(st)
	return dst
}

// Verify reports whether tag is msg's tag, under the current key or, for
// values signed by the previous release, the legacy one. The comparison
// takes the same time wherever the tags differ.
func (s *Signer) Verify(msg, tag []byte) bool {
	if len(tag) != s.size {
		return false
	}
	if s.cur.check(msg, tag) {
		return true
	}
	return s.legacy != nil && s.legacy.check(msg, tag)
}

// Equal reports whether a and b are equal in a time that does not depend on
// where they differ: for comparing secrets that are not MACs (a client
// proof's secret against the stored one).
func Equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// keyed is one HMAC key with a pool of states.
type keyed struct {
	pool   sync.Pool
	prefix []byte
}

// state is a keyed HMAC with buffers of its own: bytes handed to a
// hash.Hash escape, so a caller's stack buffers would be moved to the heap
// at every call.
type state struct {
	h   hash.Hash
	in  []byte
	sum []byte
}

func newKeyed(key, prefix []byte) *keyed {
	k := &keyed{prefix: prefix}
	k.pool.New = func() any { return &state{h: hmac.New(sha256.New, key)} }
	return k
}

// get returns a state holding msg's full HMAC in sum; put it back after.
func (k *keyed) get(msg []byte) *state {
	st := k.pool.Get().(*state)
	st.h.Reset()
	st.in = append(append(st.in[:0], k.prefix...), msg...)
	st.h.Write(st.in)
	st.sum = st.h.Sum(st.sum[:0])
	return st
}

func (k *keyed) put(st *state) {
	if cap(st.in) > 4<<10 {
		// A rare large value (a ticket of a long identity) must not
		// keep its buffer in the pool.
		st.in = nil
	}
	k.pool.Put(st)
}

func (k *keyed) check(msg, tag []byte) bool {
	st := k.get(msg)
	ok := hmac.Equal(st.sum[:len(tag)], tag)
	k.put(st)
	return ok
}
