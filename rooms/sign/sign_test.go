package sign

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"sync"
	"testing"
)

var testSecret = []byte("a shared secret of some length!!")

// allPurposes lists every purpose the table defines.
func allPurposes(t *testing.T) []Purpose {
	t.Helper()
	var ps []Purpose
	for p := Purpose(1); int(p) < len(purposes); p++ {
		if !p.valid() {
			t.Fatalf("purpose %d has no line in the table", p)
		}
		ps = append(ps, p)
	}
	if len(ps) < 3 {
		t.Fatalf("%d purposes, want at least cursor, ticket and dev-token mark", len(ps))
	}
	return ps
}

func newSigner(t testing.TB, secret []byte, p Purpose) *Signer {
	t.Helper()
	s, err := New(secret, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeysDifferPerPurpose(t *testing.T) {
	seen := map[string]Purpose{}
	infos := map[string]Purpose{}
	for _, p := range allPurposes(t) {
		k, err := Key(testSecret, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != keySize {
			t.Errorf("%s: key of %d bytes, want %d", p, len(k), keySize)
		}
		if q, dup := seen[string(k)]; dup {
			t.Errorf("%s and %s have the same key", p, q)
		}
		seen[string(k)] = p
		if q, dup := infos[p.String()]; dup {
			t.Errorf("%s and %s share their info string", p, q)
		}
		infos[p.String()] = p
		if bytes.Equal(k, testSecret[:min(len(testSecret), len(k))]) {
			t.Errorf("%s: the key is the secret", p)
		}
	}
}

// The derivation is HKDF-SHA256 with the purpose's name as info: pinned, so
// that a change to it (which would invalidate every value clients hold) is
// a deliberate one.
func TestKeyIsHKDF(t *testing.T) {
	for _, p := range allPurposes(t) {
		want, err := hkdf.Key(sha256.New, testSecret, nil, p.String(), 32)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Key(testSecret, p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: Key = %x, %v; want HKDF-SHA256 %x", p, got, err, want)
		}
	}
	if got := Cursor.String(); got != "roomcast/cursor" {
		t.Errorf("the cursor key's info is %q: changing it resets every client's cursor", got)
	}
	if got := Ticket.String(); got != "roomcast/ticket" {
		t.Errorf("the ticket key's info is %q", got)
	}
	if got := DevTokenMark.String(); got != "roomcast/dev-token-mark" {
		t.Errorf("the dev-token mark key's info is %q", got)
	}
}

func TestKeyRefuses(t *testing.T) {
	if _, err := Key(make([]byte, MinSecret-1), Cursor); err == nil {
		t.Error("a secret shorter than MinSecret was accepted")
	}
	if _, err := New(testSecret, Purpose(0)); err == nil {
		t.Error("purpose 0 was accepted")
	}
	if _, err := New(testSecret, Purpose(len(purposes))); err == nil {
		t.Error("a purpose past the table was accepted")
	}
}

func TestSignVerify(t *testing.T) {
	for _, p := range allPurposes(t) {
		s := newSigner(t, testSecret, p)
		msg := []byte("the value " + p.String())
		tag := s.Append(nil, msg)
		if len(tag) != p.Size() || s.Size() != p.Size() {
			t.Fatalf("%s: tag of %d bytes, Size %d, want %d", p, len(tag), s.Size(), p.Size())
		}
		full := hmac.New(sha256.New, mustKey(t, p))
		full.Write(msg)
		if want := full.Sum(nil)[:p.Size()]; !bytes.Equal(tag, want) {
			t.Fatalf("%s: tag %x, want the truncated HMAC-SHA256 %x", p, tag, want)
		}
		if !s.Verify(msg, tag) {
			t.Fatalf("%s: its own tag does not verify", p)
		}
		for i := range tag {
			bad := bytes.Clone(tag)
			bad[i] ^= 1
			if s.Verify(msg, bad) {
				t.Fatalf("%s: a tag with byte %d flipped verifies", p, i)
			}
		}
		if s.Verify(msg, tag[:len(tag)-1]) || s.Verify(msg, append(bytes.Clone(tag), 0)) {
			t.Fatalf("%s: a tag of another length verifies", p)
		}
		if s.Verify(append(bytes.Clone(msg), 'x'), tag) {
			t.Fatalf("%s: the tag verifies another message", p)
		}
		other := newSigner(t, []byte("another secret, another deployment"), p)
		if other.Verify(msg, tag) {
			t.Fatalf("%s: a tag made from another secret verifies", p)
		}
	}
}

func mustKey(t *testing.T, p Purpose) []byte {
	t.Helper()
	k, err := Key(testSecret, p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A value signed for one purpose never verifies for another, even where
// the tag lengths agree.
func TestPurposesDoNotCross(t *testing.T) {
	ps := allPurposes(t)
	msg := []byte("a value that could mean anything")
	for _, p := range ps {
		tag := newSigner(t, testSecret, p).Append(nil, msg)
		for _, q := range ps {
			if q == p {
				continue
			}
			s := newSigner(t, testSecret, q)
			// Fit the tag to q's length, as an attacker would.
			fitted := append(bytes.Clone(tag), make([]byte, max(0, q.Size()-len(tag)))...)[:q.Size()]
			if s.Verify(msg, fitted) {
				t.Errorf("a %s tag verifies as %s", p, q)
			}
		}
	}
}

func TestLegacy(t *testing.T) {
	oldKey := []byte("the key before derivation")
	prefix := []byte("old context\x00")
	msg := []byte("a cursor from last week")
	old := hmac.New(sha256.New, oldKey)
	old.Write(prefix)
	old.Write(msg)
	oldTag := old.Sum(nil)[:Cursor.Size()]

	s := newSigner(t, testSecret, Cursor)
	if s.Verify(msg, oldTag) {
		t.Fatal("a legacy tag verifies without WithLegacy")
	}
	l := s.WithLegacy(Legacy{Key: oldKey, Prefix: prefix})
	if !l.Verify(msg, oldTag) {
		t.Fatal("a legacy tag does not verify WithLegacy")
	}
	if s.Verify(msg, oldTag) {
		t.Fatal("WithLegacy changed the signer it was called on")
	}
	// Signing is with the new key only.
	if got, want := l.Append(nil, msg), s.Append(nil, msg); !bytes.Equal(got, want) {
		t.Fatalf("WithLegacy signs %x, want the new key's %x", got, want)
	}
	if !l.Verify(msg, s.Append(nil, msg)) {
		t.Fatal("a new tag does not verify WithLegacy")
	}
	if l.Verify([]byte("another"), oldTag) {
		t.Fatal("a legacy tag verifies another message")
	}
}

// Append leaves what dst held and may sign a part of dst itself, as the
// cursor codec does.
func TestAppendAliasing(t *testing.T) {
	s := newSigner(t, testSecret, Cursor)
	msg := []byte("body of a value")
	want := s.Append(nil, msg)
	buf := make([]byte, 0, len(msg)) // no room: Append must reallocate
	buf = append(buf, msg...)
	got := s.Append(buf, buf)
	if !bytes.Equal(got[:len(msg)], msg) || !bytes.Equal(got[len(msg):], want) {
		t.Fatalf("Append(buf, buf) = %q, want the body and then %x", got, want)
	}
}

func TestConcurrent(t *testing.T) {
	s := newSigner(t, testSecret, Ticket)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte(i)}, 100*i+1)
			tag := s.Append(nil, msg)
			for range 200 {
				if !s.Verify(msg, tag) {
					t.Error("a tag stopped verifying under concurrent use")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestEqual(t *testing.T) {
	if !Equal([]byte("abc"), []byte("abc")) || Equal([]byte("abc"), []byte("abd")) || Equal([]byte("abc"), []byte("ab")) {
		t.Fatal("Equal is wrong")
	}
}

func BenchmarkSign(b *testing.B) {
	s := newSigner(b, testSecret, Cursor)
	msg := make([]byte, 60)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.Append(buf[:0], msg)
	}
}
