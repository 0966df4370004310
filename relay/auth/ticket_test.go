package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/sign"
)

func hmacSum(key []byte, msg ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, b := range msg {
		m.Write(b)
	}
	return m.Sum(nil)
}

// A ticket issued by the release before rooms/sign (an instance not yet
// replaced in a rolling deploy) is redeemed by this one: LEGACY(sign,
// 2026-12). Tickets issued now are signed with the derived key only, and a
// tag made with another purpose's key is refused.
func TestTicketLegacySignature(t *testing.T) {
	secret := []byte("the deployment's shared secret, 32")
	a := newAuth(t, Config{TicketKey: secret})
	enc := base64.RawURLEncoding
	payload := func(nonce byte) []byte {
		return encodeTicket(nil, ticketPayload{expiry: testNow.Add(time.Minute).UnixNano(),
			nonce: [nonceLen]byte{nonce}, id: rooms.Identity{User: "alice", Name: "Alice"}})
	}
	// The previous derivation, spelt out: the composition root keyed the
	// authenticator with HMAC(secret, "roomcast tickets"), and New keyed
	// tickets with HMAC(that, "roomcast ticket v1").
	oldKey := hmacSum(hmacSum(secret, []byte("roomcast tickets")), []byte("roomcast ticket v1"))
	p := payload(1)
	legacy := enc.EncodeToString(p) + "." + enc.EncodeToString(hmacSum(oldKey, p))
	id, err := a.RedeemTicket(context.Background(), legacy, newClaimStore().claim)
	if err != nil || id.User != "alice" || id.Name != "Alice" {
		t.Fatalf("legacy ticket: %+v, %v; want alice", id, err)
	}

	issued, _, err := a.IssueTicket(rooms.Identity{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	p64, m64, _ := strings.Cut(issued, ".")
	ip, _ := enc.DecodeString(p64)
	im, _ := enc.DecodeString(m64)
	ticketKey, err := sign.Key(secret, sign.Ticket)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(im, hmacSum(oldKey, ip)) || !bytes.Equal(im, hmacSum(ticketKey, ip)) {
		t.Fatal("an issued ticket is not signed with the derived ticket key (and it alone)")
	}

	for _, p := range []sign.Purpose{sign.Cursor, sign.DevTokenMark} {
		k, err := sign.Key(secret, p)
		if err != nil {
			t.Fatal(err)
		}
		pl := payload(2)
		crossed := enc.EncodeToString(pl) + "." + enc.EncodeToString(hmacSum(k, pl))
		if _, err := a.RedeemTicket(context.Background(), crossed, newClaimStore().claim); err == nil || !strings.Contains(err.Error(), "signature") {
			t.Errorf("a ticket signed with the %s key: %v, want a bad signature", p, err)
		}
	}
	// Nor is the secret itself a ticket key.
	pl := payload(3)
	raw := enc.EncodeToString(pl) + "." + enc.EncodeToString(hmacSum(secret, pl))
	if _, err := a.RedeemTicket(context.Background(), raw, newClaimStore().claim); err == nil {
		t.Error("a ticket signed with the bare secret was redeemed")
	}
}
