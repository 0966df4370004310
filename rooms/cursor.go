package rooms

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/roomcast/roomcast/rooms/sign"
)

// Cursor is a subscriber's position: for each channel, the Seq of the last
// event it has seen there. A cursor is opaque to clients and signed, so a
// forged one restores nothing.
type Cursor struct {
	// Epoch is the history the positions refer to.
	Epoch string
	// Session ties a multi-room stream's cursor to its server-side room set;
	// "" for single-room streams and polls.
	Session string
	// Positions is sorted by Key, one entry per channel.
	Positions []Position
}

// Position is a channel's entry in a Cursor. Channels are keyed by a 48-bit
// hash of their name so that 64 rooms fit in well under 1 KiB.
type Position struct {
	Key uint64
	Seq uint64
	// From, when not 0, is the channel's position when the subscriber
	// started it (joined it, or a poll added it) while it held other
	// channels: the copies of multi-channel events at or below it never
	// came through it, so they were delivered through a sibling channel,
	// if at all (see Connection.reaches). 0 for a channel held from
	// before anything the cursor's other channels may still replay.
	From uint64
}

// ChannelKey returns the key of a channel in a Cursor.
func ChannelKey(channel string) uint64 {
	// FNV-1a, written out: hash/fnv allocates, and this runs for every
	// delivery.
	h := uint64(14695981039346656037)
	for i := 0; i < len(channel); i++ {
		h ^= uint64(channel[i])
		h *= 1099511628211
	}
	return h & (1<<48 - 1)
}

// Get returns the position recorded for channel.
func (c *Cursor) Get(channel string) (uint64, bool) {
	k := ChannelKey(channel)
	i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) })
	if !ok {
		return 0, false
	}
	return c.Positions[i].Seq, true
}

// Set records seq as the position of channel.
func (c *Cursor) Set(channel string, seq uint64) {
	k := ChannelKey(channel)
	i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) })
	if ok {
		c.Positions[i].Seq = seq
		return
	}
	c.Positions = slices.Insert(c.Positions, i, Position{Key: k, Seq: seq})
}

// From returns the position channel was started at (see Position.From).
func (c *Cursor) From(channel string) uint64 {
	k := ChannelKey(channel)
	if i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) }); ok {
		return c.Positions[i].From
	}
	return 0
}

// setFrom records that channel, which must be in the cursor, was started
// at from.
func (c *Cursor) setFrom(channel string, from uint64) {
	k := ChannelKey(channel)
	if i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) }); ok {
		c.Positions[i].From = from
	}
}

// raise moves channel's position up to seq if channel is in the cursor and
// behind it.
func (c *Cursor) raise(channel string, seq uint64) {
	k := ChannelKey(channel)
	if i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) }); ok && c.Positions[i].Seq < seq {
		c.Positions[i].Seq = seq
	}
}

// Delete forgets channel.
func (c *Cursor) Delete(channel string) {
	k := ChannelKey(channel)
	if i, ok := slices.BinarySearchFunc(c.Positions, k, func(p Position, k uint64) int { return cmpU64(p.Key, k) }); ok {
		c.Positions = slices.Delete(c.Positions, i, i+1)
	}
}

// Clone returns a deep copy of c.
func (c Cursor) Clone() Cursor {
	c.Positions = slices.Clone(c.Positions)
	return c
}

// cmpSeqKey orders positions as the binary form lists them.
func cmpSeqKey(a, b Position) int {
	if c := cmpU64(a.Seq, b.Seq); c != 0 {
		return c
	}
	return cmpU64(a.Key, b.Key)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

const (
	cursorVersion = 1
	// cursorVersionFrom is the layout of a cursor with start positions.
	cursorVersionFrom = 2
	cursorMACSize     = 16 // sign.Cursor's tag size
	sessionIDSize     = 16 // randomID(12) in base64
	// MaxCursorLen bounds what Decode reads: a cursor for 64 rooms is far
	// below it, start positions (Position.From) included.
	MaxCursorLen = 3072
	maxPositions = 1024
)

// CursorCodec signs and verifies cursors with the sign.Cursor key. It is
// safe for concurrent use.
type CursorCodec struct {
	mac *sign.Signer
}

// NewCursorCodec returns a codec keyed from secret, the deployment's shared
// secret, which must be at least 16 bytes.
func NewCursorCodec(secret []byte) (*CursorCodec, error) {
	mac, err := sign.New(secret, sign.Cursor)
	if err != nil {
		return nil, fmt.Errorf("cursor key: %w", err)
	}
	// LEGACY(sign, 2026-12): before rooms/sign, cursors were signed with
	// the secret itself. They keep verifying for the one release that
	// brings rooms/sign, so its deploy resets no client's cursor; remove
	// this line in the release after it.
	mac = mac.WithLegacy(sign.Legacy{Key: secret})
	return &CursorCodec{mac: mac}, nil
}

// Encode returns the signed text form of c: URL-safe base64, no padding.
//
// Layout: version, epoch (length-prefixed), session flag and 16 bytes, the
// number of positions, then the positions in Seq order, each as its 6-byte
// key and the uvarint distance above the previous Seq, then a truncated
// HMAC-SHA256 of all of that. The distances add up to at most the highest
// Seq, so 64 positions stay within 1 KiB however far apart they are.
//
// A cursor with start positions (Position.From) that still matter has
// version 2 and, before the HMAC, their number and for each the index of
// its position in Seq order (as the distance above the previous index)
// and the uvarint distance of From below Seq. A start matters while some
// other channel of the cursor is behind it: only that channel can still
// replay a copy of an event at or below it. Others are left out, so most
// cursors keep the first layout.
func (cc *CursorCodec) Encode(c Cursor) string {
	var stack [256]byte
	b := cc.AppendBinary(stack[:0], c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// AppendEncoded appends the text form of c to dst.
func (cc *CursorCodec) AppendEncoded(dst []byte, c Cursor) []byte {
	var stack [256]byte
	b := cc.AppendBinary(stack[:0], c)
	n := base64.RawURLEncoding.EncodedLen(len(b))
	dst = slices.Grow(dst, n)
	base64.RawURLEncoding.Encode(dst[len(dst):len(dst)+n], b)
	return dst[:len(dst)+n]
}

// AppendBinary appends the signed binary form of c to dst.
func (cc *CursorCodec) AppendBinary(dst []byte, c Cursor) []byte {
	start := len(dst)
	version := byte(cursorVersion)
	low, low2 := lowestTwo(c.Positions)
	starts := 0
	for _, p := range c.Positions {
		if startMatters(p, low, low2) {
			starts++
		}
	}
	if starts > 0 {
		version = cursorVersionFrom
	}
	dst = append(dst, version, byte(len(c.Epoch)))
	dst = append(dst, c.Epoch...)
	if c.Session != "" {
		dst = append(dst, 1)
		dst = append(dst, c.Session...)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Positions)))
	// Most cursors hold a room or two (and its namespace): a small array
	// keeps them off the heap without a kilobyte of stack, which at the
	// bottom of a poll's deep call chain made every poll grow its stack.
	var stack [8]Position
	bySeq := append(stack[:0], c.Positions...)
	slices.SortFunc(bySeq, cmpSeqKey)
	var prev uint64
	for _, p := range bySeq {
		dst = append(dst, byte(p.Key>>40), byte(p.Key>>32), byte(p.Key>>24), byte(p.Key>>16), byte(p.Key>>8), byte(p.Key))
		dst = binary.AppendUvarint(dst, p.Seq-prev)
		prev = p.Seq
	}
	if starts > 0 {
		dst = binary.AppendUvarint(dst, uint64(starts))
		last := 0
		for i, p := range bySeq {
			if startMatters(p, low, low2) {
				dst = binary.AppendUvarint(dst, uint64(i-last))
				dst = binary.AppendUvarint(dst, p.Seq-p.From)
				last = i
			}
		}
	}
	return cc.sign(dst, start)
}

// lowestTwo returns the lowest two Seqs of ps (equal when two are): a
// start matters when a position other than its own is below it.
func lowestTwo(ps []Position) (low, low2 uint64) {
	low, low2 = ^uint64(0), ^uint64(0)
	for _, p := range ps {
		switch {
		case p.Seq < low:
			low, low2 = p.Seq, low
		case p.Seq < low2:
			low2 = p.Seq
		}
	}
	return low, low2
}

// startMatters reports whether p's start must be written: it is set, not
// above p's own position, and some other position (low is the lowest,
// low2 the next) is below it.
func startMatters(p Position, low, low2 uint64) bool {
	if p.From == 0 || p.From > p.Seq {
		return false
	}
	other := low
	if p.Seq == low {
		// p may be the lowest itself; the next one is then the lowest
		// of the others (equal Seqs make low2 equal too).
		other = low2
	}
	return other < p.From
}

// sign appends the tag of dst[start:] to dst.
func (cc *CursorCodec) sign(dst []byte, start int) []byte {
	return cc.mac.Append(dst, dst[start:])
}

// Decode verifies and parses a cursor made by Encode. Any malformed or
// tampered input yields an error wrapping ErrInvalidCursor.
func (cc *CursorCodec) Decode(s string) (Cursor, error) {
	if len(s) == 0 || len(s) > MaxCursorLen {
		return Cursor{}, fmt.Errorf("%w: bad length", ErrInvalidCursor)
	}
	// Strict: the unused low bits of the last character must be zero, so
	// that no cursor has a second spelling.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: not base64url", ErrInvalidCursor)
	}
	if len(b) < cursorMACSize+4 {
		return Cursor{}, fmt.Errorf("%w: too short", ErrInvalidCursor)
	}
	body, mac := b[:len(b)-cursorMACSize], b[len(b)-cursorMACSize:]
	if !cc.mac.Verify(body, mac) {
		return Cursor{}, fmt.Errorf("%w: bad signature", ErrInvalidCursor)
	}
	return parseCursorBody(body)
}

// parseCursorBody parses a cursor's signed body. It is long because it
// reads the layout (version, epoch, session, positions, starts) in one pass
// in the order the encoder writes it, every length checked where it is
// read; split, each part would have to hand on the bytes left and the
// cursor so far, and the format would no longer read top to bottom.
func parseCursorBody(b []byte) (Cursor, error) {
	bad := func(what string) (Cursor, error) {
		return Cursor{}, fmt.Errorf("%w: %s", ErrInvalidCursor, what)
	}
	version := b[0]
	if version != cursorVersion && version != cursorVersionFrom {
		return bad("unknown version")
	}
	b = b[1:]
	n := int(b[0])
	b = b[1:]
	if len(b) < n+1 {
		return bad("truncated epoch")
	}
	c := Cursor{Epoch: string(b[:n])}
	b = b[n:]
	flag := b[0]
	b = b[1:]
	switch flag {
	case 0:
	case 1:
		if len(b) < sessionIDSize {
			return bad("truncated session")
		}
		c.Session = string(b[:sessionIDSize])
		b = b[sessionIDSize:]
	default:
		return bad("bad session flag")
	}
	count, k := binary.Uvarint(b)
	if k <= 0 || count > maxPositions {
		return bad("bad position count")
	}
	b = b[k:]
	c.Positions = make([]Position, 0, count)
	var prev Position
	for range count {
		if len(b) < 7 {
			return bad("truncated position")
		}
		p := Position{Key: uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])}
		b = b[6:]
		d, k := binary.Uvarint(b)
		if k <= 0 || prev.Seq+d < prev.Seq {
			return bad("bad position")
		}
		b = b[k:]
		p.Seq = prev.Seq + d
		if len(c.Positions) > 0 && cmpSeqKey(prev, p) >= 0 {
			return bad("unsorted positions")
		}
		c.Positions = append(c.Positions, p)
		prev = p
	}
	if version == cursorVersionFrom {
		low, low2 := lowestTwo(c.Positions)
		starts, k := binary.Uvarint(b)
		if k <= 0 || starts == 0 || starts > count {
			return bad("bad start count")
		}
		b = b[k:]
		idx := uint64(0)
		for n := range starts {
			di, k := binary.Uvarint(b)
			if k <= 0 || (n > 0 && di == 0) || di >= count-idx {
				return bad("bad start index")
			}
			b = b[k:]
			idx += di
			d, k := binary.Uvarint(b)
			p := &c.Positions[idx]
			if k <= 0 || d >= p.Seq {
				return bad("bad start")
			}
			b = b[k:]
			p.From = p.Seq - d
			if !startMatters(*p, low, low2) {
				// The encoder leaves such a start out: no cursor has
				// a second spelling.
				return bad("needless start")
			}
		}
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	slices.SortFunc(c.Positions, func(a, b Position) int { return cmpU64(a.Key, b.Key) })
	for i := 1; i < len(c.Positions); i++ {
		if c.Positions[i-1].Key == c.Positions[i].Key {
			return bad("duplicate positions")
		}
	}
	return c, nil
}
