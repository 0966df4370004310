package rooms

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/roomcast/roomcast/rooms/sign"
)

func testCodec(t testing.TB, key string) *CursorCodec {
	t.Helper()
	cc, err := NewCursorCodec([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

const testKey = "0123456789abcdef-test-key"

// testSession has the shape of a real session id: randomID(12).
const testSession = "AAAAbbbbCCCCdd-_"

func sameCursor(a, b Cursor) bool {
	return a.Epoch == b.Epoch && a.Session == b.Session && slices.Equal(a.Positions, b.Positions)
}

func TestNewCursorCodecShortKey(t *testing.T) {
	if _, err := NewCursorCodec(make([]byte, 15)); err == nil {
		t.Fatal("a 15-byte key was accepted")
	}
}

func TestCursorPositions(t *testing.T) {
	var c Cursor
	c.Set("b", 2)
	c.Set("a", 1)
	c.Set("c", 3)
	c.Set("b", 20)
	if len(c.Positions) != 3 {
		t.Fatalf("3 channels, %d positions", len(c.Positions))
	}
	if !slices.IsSortedFunc(c.Positions, func(x, y Position) int { return cmpU64(x.Key, y.Key) }) {
		t.Fatalf("positions not sorted by key: %v", c.Positions)
	}
	for ch, want := range map[string]uint64{"a": 1, "b": 20, "c": 3} {
		if got, ok := c.Get(ch); !ok || got != want {
			t.Errorf("Get(%q) = %d, %v; want %d", ch, got, ok, want)
		}
	}
	if _, ok := c.Get("d"); ok {
		t.Error("Get of an absent channel reports it present")
	}
	clone := c.Clone()
	c.Delete("b")
	c.Delete("absent")
	if _, ok := c.Get("b"); ok || len(c.Positions) != 2 {
		t.Fatalf("Delete(b) left %v", c.Positions)
	}
	if got, ok := clone.Get("b"); !ok || got != 20 {
		t.Fatal("Clone shares positions with the original")
	}
	if k := ChannelKey("some channel"); k>>48 != 0 {
		t.Fatalf("ChannelKey %x is wider than 48 bits", k)
	}
}

func roundTripCases() []Cursor {
	multi := Cursor{Epoch: "a1b2c3d4", Session: testSession}
	for i := range 64 {
		multi.Set(fmt.Sprintf("room-%d", i), uint64(1_000_000_000_000+i*7))
	}
	// Rooms started (joined) while others were behind them; the first
	// room's start is below every other position, so it is left out.
	starts := Cursor{Epoch: "a1b2c3d4", Session: testSession}
	for i := range 64 {
		starts.Set(fmt.Sprintf("room-%d", i), uint64(1_000_000_000_000+i*7))
		if i > 0 {
			starts.setFrom(fmt.Sprintf("room-%d", i), uint64(1_000_000_000_000+i*3))
		}
	}
	return []Cursor{
		starts,
		{Epoch: "e", Positions: []Position{{Key: 1, Seq: 9}, {Key: 2, Seq: 20, From: 10}}},
		{Epoch: "e", Positions: []Position{{Key: 1, Seq: 9}, {Key: 2, Seq: 10, From: 10}, {Key: 3, Seq: 12, From: 10}}},
		{Epoch: "a1b2c3d4"},
		{Epoch: "", Positions: []Position{}},
		{Epoch: "e", Positions: []Position{{Key: ChannelKey("r"), Seq: 0}}},
		{Epoch: "e", Positions: []Position{{Key: ChannelKey("r"), Seq: 1<<64 - 1}}},
		{Epoch: "e", Positions: []Position{{Key: 0, Seq: 5}, {Key: 1<<48 - 1, Seq: 1<<64 - 1}}},
		{Epoch: "a1b2c3d4", Session: testSession, Positions: []Position{{Key: ChannelKey("a"), Seq: 3}}},
		multi,
	}
}

func TestCursorRoundTrip(t *testing.T) {
	cc := testCodec(t, testKey)
	for i, c := range roundTripCases() {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			s := cc.Encode(c)
			if got := string(cc.AppendEncoded([]byte("x"), c)); got != "x"+s {
				t.Fatalf("AppendEncoded differs from Encode:\n%s\nx%s", got, s)
			}
			if _, err := base64.RawURLEncoding.Strict().DecodeString(s); err != nil {
				t.Fatalf("Encode is not unpadded base64url: %v", err)
			}
			got, err := cc.Decode(s)
			if err != nil {
				t.Fatalf("Decode(Encode(c)): %v", err)
			}
			if !sameCursor(got, c) {
				t.Fatalf("round trip changed the cursor:\n got %+v\nwant %+v", got, c)
			}
			if again := cc.Encode(got); again != s {
				t.Fatalf("encoding is not deterministic: %s vs %s", again, s)
			}
		})
	}
}

// TestCursorStartsLeftOut: a start no other position is below says
// nothing a resume needs, and is not written, so cursors without one keep
// the first layout, byte for byte.
func TestCursorStartsLeftOut(t *testing.T) {
	cc := testCodec(t, testKey)
	plain := Cursor{Epoch: "e", Positions: []Position{{Key: 1, Seq: 9}, {Key: 2, Seq: 20}}}
	for _, from := range []uint64{0, 5, 9, 21} {
		c := plain.Clone()
		c.Positions[1].From = from
		if got, want := cc.Encode(c), cc.Encode(plain); got != want {
			t.Errorf("start %d written: %s, want %s", from, got, want)
		}
	}
	c := plain.Clone()
	c.Positions[1].From = 10
	got, err := cc.Decode(cc.Encode(c))
	if err != nil || got.From("") != 0 || got.Positions[1].From != 10 {
		t.Fatalf("start 10 above position 9: decoded %+v, %v", got, err)
	}
}

// A cursor carries its session and one position per room; for the 64 rooms
// a multi-room stream may hold it must stay within 1 KiB (the Last-Event-ID
// a browser sends back), whatever the positions are.
func TestCursorSize(t *testing.T) {
	const limit = 1024
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		seq  func(i int) uint64
	}{
		{"all near 1e12", func(i int) uint64 { return 1e12 - uint64(i) }},
		{"all at 1e12", func(int) uint64 { return 1e12 }},
		{"spread over 0..1e12", func(int) uint64 { return rng.Uint64N(1e12) }},
		// Equal gaps make the distances as long as they can get.
		{"evenly spaced up to 1e12", func(i int) uint64 { return uint64(i+1) * (1e12 / 64) }},
		{"one room far behind", func(i int) uint64 {
			if i == 0 {
				return 1
			}
			return 1e12 + uint64(i)
		}},
	}
	cc := testCodec(t, testKey)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Cursor{Epoch: "a1b2c3d4", Session: testSession}
			for i := range 64 {
				c.Set(fmt.Sprintf("namespace-%02d:a-rather-long-room-name-%d", i, i), tt.seq(i))
			}
			if len(c.Positions) != 64 {
				t.Fatalf("channel keys collided: %d positions", len(c.Positions))
			}
			s := cc.Encode(c)
			if len(s) > limit {
				t.Fatalf("cursor for 64 rooms is %d characters, more than %d", len(s), limit)
			}
			got, err := cc.Decode(s)
			if err != nil || !sameCursor(got, c) {
				t.Fatalf("Decode: %v", err)
			}
			t.Logf("%d characters", len(s))
		})
	}
}

func TestCursorTamper(t *testing.T) {
	cc := testCodec(t, testKey)
	c := Cursor{Epoch: "a1b2c3d4", Session: testSession}
	c.Set("a", 10)
	c.Set("b", 12345)
	for _, c := range []Cursor{c, {Epoch: "e", Positions: []Position{{Key: ChannelKey("x"), Seq: 7}}}} {
		s := cc.Encode(c)
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		for i := range len(s) {
			for _, r := range []byte(alphabet + "=+/.~ \x00\xff") {
				if r == s[i] {
					continue
				}
				b := []byte(s)
				b[i] = r
				if got, err := cc.Decode(string(b)); !errors.Is(err, ErrInvalidCursor) {
					t.Fatalf("cursor with byte %d changed from %q to %q decoded: %+v, %v", i, s[i], r, got, err)
				}
			}
			if _, err := cc.Decode(s[:i]); !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("cursor cut to %d characters decoded: %v", i, err)
			}
		}
		for _, extra := range []string{"A", "AA", "AAA", "AAAA", "="} {
			if _, err := cc.Decode(s + extra); !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("cursor with %q appended decoded: %v", extra, err)
			}
		}
	}
}

func TestCursorWrongKey(t *testing.T) {
	a := testCodec(t, testKey)
	b := testCodec(t, testKey+"!")
	c := Cursor{Epoch: "e", Positions: []Position{{Key: ChannelKey("r"), Seq: 42}}}
	if _, err := b.Decode(a.Encode(c)); !errors.Is(err, ErrInvalidCursor) {
		t.Fatalf("a cursor signed with another key decoded: %v", err)
	}
	if _, err := a.Decode(a.Encode(c)); err != nil {
		t.Fatalf("own cursor rejected: %v", err)
	}
}

// signBody returns a correctly signed cursor around an arbitrary body, to
// reach the parser behind the MAC.
func signBody(cc *CursorCodec, body []byte) string {
	return base64.RawURLEncoding.EncodeToString(cc.sign(slices.Clone(body), 0))
}

func TestCursorDecodeMalformed(t *testing.T) {
	cc := testCodec(t, testKey)
	key1, key2 := []byte{0, 0, 0, 0, 0, 1}, []byte{0, 0, 0, 0, 0, 2}
	body := func(parts ...[]byte) []byte { return slices.Concat(parts...) }
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"too long", string(make([]byte, MaxCursorLen+1))},
		{"not base64", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"},
		{"padded base64", base64.URLEncoding.EncodeToString(make([]byte, 40))},
		{"too short", base64.RawURLEncoding.EncodeToString(make([]byte, cursorMACSize+3))},
		{"unsigned", base64.RawURLEncoding.EncodeToString(make([]byte, 64))},
		{"unknown version", signBody(cc, body([]byte{2, 1, 'e', 0}, uv(0)))},
		{"truncated epoch", signBody(cc, []byte{1, 200, 'e', 'e'})},
		{"truncated session", signBody(cc, body([]byte{1, 1, 'e', 1}, []byte("short")))},
		{"bad session flag", signBody(cc, body([]byte{1, 1, 'e', 2}, uv(0)))},
		{"no count", signBody(cc, []byte{1, 1, 'e', 0})},
		{"overlong count", signBody(cc, body([]byte{1, 0, 0}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}))},
		{"count too large", signBody(cc, body([]byte{1, 0, 0}, uv(maxPositions+1)))},
		{"missing positions", signBody(cc, body([]byte{1, 0, 0}, uv(2), key1, uv(0)))},
		{"truncated key", signBody(cc, body([]byte{1, 0, 0}, uv(1), key1[:5]))},
		{"missing distance", signBody(cc, body([]byte{1, 0, 0}, uv(1), key1))},
		{"seq overflows", signBody(cc, body([]byte{1, 0, 0}, uv(2), key1, uv(1<<64-1), key2, uv(1)))},
		{"unsorted seqs", signBody(cc, body([]byte{1, 0, 0}, uv(2), key2, uv(0), key1, uv(0)))},
		{"duplicate positions", signBody(cc, body([]byte{1, 0, 0}, uv(2), key1, uv(1), key1, uv(1)))},
		{"duplicate at one seq", signBody(cc, body([]byte{1, 0, 0}, uv(2), key1, uv(1), key1, uv(0)))},
		{"trailing bytes", signBody(cc, body([]byte{1, 0, 0}, uv(1), key1, uv(0), []byte{0}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := cc.Decode(tt.in); !errors.Is(err, ErrInvalidCursor) {
				t.Fatalf("Decode = %+v, %v; want ErrInvalidCursor", c, err)
			}
		})
	}
	// The same layout, well formed, decodes: the cases above fail for the
	// reason they name.
	c, err := cc.Decode(signBody(cc, body([]byte{1, 1, 'e', 0}, uv(3), key2, uv(0), key1, uv(5), key2[:5], []byte{3}, uv(0))))
	if err != nil || !sameCursor(c, Cursor{Epoch: "e", Positions: []Position{{Key: 1, Seq: 5}, {Key: 2, Seq: 0}, {Key: 3, Seq: 5}}}) {
		t.Fatalf("well-formed body: %+v, %v", c, err)
	}
}

func FuzzCursorDecode(f *testing.F) {
	cc := testCodec(f, testKey)
	for _, c := range roundTripCases() {
		s := cc.Encode(c)
		f.Add([]byte(s))
		b, _ := base64.RawURLEncoding.DecodeString(s)
		f.Add(b[:len(b)-cursorMACSize])
	}
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(s string) {
			c, err := cc.Decode(s)
			if err != nil {
				if !errors.Is(err, ErrInvalidCursor) {
					t.Fatalf("Decode error %v does not wrap ErrInvalidCursor", err)
				}
				return
			}
			if !slices.IsSortedFunc(c.Positions, func(x, y Position) int { return cmpU64(x.Key, y.Key) }) {
				t.Fatalf("decoded positions are not sorted: %v", c.Positions)
			}
			again, err := cc.Decode(cc.Encode(c))
			if err != nil {
				t.Fatalf("re-encoded cursor does not decode: %v", err)
			}
			if !sameCursor(again, c) {
				t.Fatalf("re-encoding changed the cursor:\n got %+v\nwant %+v", again, c)
			}
		}
		// As received from a client, and signed, so that the fuzzer
		// reaches the parser behind the MAC.
		check(string(in))
		if len(in) <= 1500 {
			check(signBody(cc, in))
		}
	})
}

func FuzzCursorRoundTrip(f *testing.F) {
	f.Add("a1b2c3d4", true, []byte("positions.............."))
	f.Add("", false, []byte{})
	f.Add("e", false, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	cc := testCodec(f, testKey)
	f.Fuzz(func(t *testing.T, epoch string, session bool, raw []byte) {
		if len(epoch) > 64 {
			epoch = epoch[:64]
		}
		c := Cursor{Epoch: epoch}
		if session {
			c.Session = testSession
		}
		// Each 14 bytes make a position: a 48-bit key and a Seq.
		for len(raw) >= 14 && len(c.Positions) < 64 {
			key := uint64(raw[0])<<40 | uint64(raw[1])<<32 | uint64(raw[2])<<24 | uint64(raw[3])<<16 | uint64(raw[4])<<8 | uint64(raw[5])
			seq := binary.BigEndian.Uint64(raw[6:14])
			raw = raw[14:]
			i, found := slices.BinarySearchFunc(c.Positions, key, func(p Position, k uint64) int { return cmpU64(p.Key, k) })
			if !found {
				c.Positions = slices.Insert(c.Positions, i, Position{Key: key, Seq: seq})
			}
		}
		s := cc.Encode(c)
		got, err := cc.Decode(s)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)) = %v", c, err)
		}
		if !sameCursor(got, c) {
			t.Fatalf("round trip changed the cursor:\n got %+v\nwant %+v", got, c)
		}
	})
}

// BenchmarkCursorEncode measures what a multi-room stream's writer pays per
// event for its id line.
func BenchmarkCursorEncode(b *testing.B) {
	cc := testCodec(b, testKey)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			c := Cursor{Epoch: "a1b2c3d4", Session: testSession}
			for i := range n {
				c.Set(fmt.Sprint("room-", i), 1e12-rng.Uint64N(1e6))
			}
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				buf = cc.AppendEncoded(buf[:0], c)
			}
			b.ReportMetric(float64(len(buf)), "chars")
		})
	}
}

// ChannelKey is FNV-1a (64 bits, cut to 48): cursors signed before it was
// written out by hand must still name the same channels.
func TestChannelKeyIsFNV1a(t *testing.T) {
	for _, ch := range []string{"", "a", "lobby", "#ns:default", "#user:alice", "ns:room/with-ü"} {
		h := fnv.New64a()
		h.Write([]byte(ch))
		if got, want := ChannelKey(ch), h.Sum64()&(1<<48-1); got != want {
			t.Errorf("ChannelKey(%q) = %x, want %x", ch, got, want)
		}
	}
}

// BenchmarkCursorDecode measures what a resume or a poll pays to verify and
// read the cursor it was sent.
func BenchmarkCursorDecode(b *testing.B) {
	cc := testCodec(b, testKey)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			c := Cursor{Epoch: "a1b2c3d4", Session: testSession}
			for i := range n {
				c.Set(fmt.Sprint("room-", i), 1e12-rng.Uint64N(1e6))
			}
			s := cc.Encode(c)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cc.Decode(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A cursor signed by the release before rooms/sign (HMAC-SHA256 keyed with
// the secret itself) still restores its positions: LEGACY(sign, 2026-12).
// Cursors are signed with the derived key only, and a tag made with another
// purpose's key is refused.
func TestCursorLegacySignature(t *testing.T) {
	cc := testCodec(t, testKey)
	c := Cursor{Epoch: "a1b2c3d4", Session: testSession}
	c.Set("lobby", 41)
	c.Set("#ns:default", 7)
	signed := cc.AppendBinary(nil, c)
	body := signed[:len(signed)-cursorMACSize]
	tag := func(key []byte) string {
		m := hmac.New(sha256.New, key)
		m.Write(body)
		return base64.RawURLEncoding.EncodeToString(append(slices.Clone(body), m.Sum(nil)[:cursorMACSize]...))
	}
	got, err := cc.Decode(tag([]byte(testKey)))
	if err != nil || !sameCursor(got, c) {
		t.Fatalf("legacy cursor: %+v, %v; want %+v", got, err, c)
	}
	cursorKey, err := sign.Key([]byte(testKey), sign.Cursor)
	if err != nil {
		t.Fatal(err)
	}
	if now := cc.Encode(c); now != tag(cursorKey) || now == tag([]byte(testKey)) {
		t.Fatal("Encode does not sign with the derived cursor key (and it alone)")
	}
	for _, p := range []sign.Purpose{sign.Ticket, sign.DevTokenMark} {
		k, err := sign.Key([]byte(testKey), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cc.Decode(tag(k)); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("a cursor signed with the %s key: %v, want ErrInvalidCursor", p, err)
		}
	}
}
