// Package auth verifies credentials — JWTs, the server API key and
// single-use tickets — and turns them into a rooms.Identity. It decides who
// a caller is, never what the caller may do: policy lives in package rooms.
package auth

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/roomcast/roomcast/rooms/sign"
)

// ErrInvalidToken is wrapped by every credential failure; the wrapping
// error's message says which check failed and never contains the
// credential itself.
var ErrInvalidToken = errors.New("invalid token")

// Limits and defaults.
const (
	defaultLeeway   = 5 * time.Second
	maxTicketTTL    = 60 * time.Second
	minTicketKeyLen = sign.MinSecret
	minJWTSecretLen = 32 // RFC 7518 §3.2: an HS256 key is at least as long as the hash
	minRSAKeyBits   = 2048
	// legacyTicketContexts are the messages of the two HMACs that made
	// the ticket key from the shared secret before rooms/sign: the
	// composition root's, then New's.
	legacyTicketContext1 = "roomcast tickets"
	legacyTicketContext2 = "roomcast ticket v1"
)

// Config says which credentials an Authenticator accepts.
type Config struct {
	// JWTSecret is the HS256 key; empty for none. At least 32 bytes.
	JWTSecret []byte
	// JWTPublicKeyPEM is a PEM public key (PKIX "PUBLIC KEY", PKCS#1
	// "RSA PUBLIC KEY" or a "CERTIFICATE"): RSA (2048 bits or more) means
	// RS256, ECDSA P-256 means ES256. Empty for none.
	JWTPublicKeyPEM []byte
	// Issuer and Audience, when not empty, must match the token's iss and
	// one of its aud.
	Issuer, Audience string
	// Leeway is the clock skew allowed on exp and nbf: 5 s when zero, none
	// when negative.
	Leeway time.Duration
	// APIKey is the server API key; empty for none.
	APIKey string
	// AllowQueryTokens accepts ?access_token= on subscribing requests. Off
	// by default: URLs end up in proxy logs.
	AllowQueryTokens bool
	// TicketKey is the deployment's shared secret (the cursor key) from
	// which the ticket key is derived (sign.Ticket); at least 16 bytes,
	// required.
	TicketKey []byte
	// TicketTTL is how long a ticket stays valid: 60 s when zero, and at
	// most 60 s.
	TicketTTL time.Duration
	// SpentTicketKept is how long a redeemed ticket's key is remembered
	// past the ticket's expiry, so that an instance whose clock lags still
	// refuses it a second time (default 1 minute).
	SpentTicketKept time.Duration
	// Now is the clock, for tests; time.Now when nil.
	Now func() time.Time
}

// Authenticator verifies credentials. It is safe for concurrent use; its
// configuration does not change after New.
type Authenticator struct {
	secret      []byte
	rsaKey      *rsa.PublicKey
	ecKey       *ecdsa.PublicKey
	algs        []string // the JWT algorithms configured keys allow
	issuer      string
	audience    string
	leeway      time.Duration
	apiKeyHash  *[sha256.Size]byte // nil when no API key is configured
	queryTokens bool
	ticketMAC   *sign.Signer
	ticketTTL   time.Duration
	spentKept   time.Duration
	now         func() time.Time
}

// New validates cfg and returns an Authenticator. Errors name the Config
// field at fault.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{
		issuer:      cfg.Issuer,
		audience:    cfg.Audience,
		leeway:      cfg.Leeway,
		queryTokens: cfg.AllowQueryTokens,
		ticketTTL:   cfg.TicketTTL,
		spentKept:   cmp.Or(cfg.SpentTicketKept, time.Minute),
		now:         cfg.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	switch {
	case a.leeway == 0:
		a.leeway = defaultLeeway
	case a.leeway < 0:
		a.leeway = 0
	}
	if len(cfg.JWTSecret) > 0 {
		if len(cfg.JWTSecret) < minJWTSecretLen {
			return nil, fmt.Errorf("auth: JWTSecret must be at least %d bytes for HS256, got %d", minJWTSecretLen, len(cfg.JWTSecret))
		}
		a.secret = append([]byte(nil), cfg.JWTSecret...)
		a.algs = append(a.algs, "HS256")
	}
	if len(cfg.JWTPublicKeyPEM) > 0 {
		key, err := parsePublicKey(cfg.JWTPublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("auth: JWTPublicKeyPEM: %w", err)
		}
		switch key := key.(type) {
		case *rsa.PublicKey:
			if key.N.BitLen() < minRSAKeyBits {
				return nil, fmt.Errorf("auth: JWTPublicKeyPEM: RSA key of %d bits, at least %d are needed", key.N.BitLen(), minRSAKeyBits)
			}
			a.rsaKey = key
			a.algs = append(a.algs, "RS256")
		case *ecdsa.PublicKey:
			if key.Curve != elliptic.P256() {
				return nil, fmt.Errorf("auth: JWTPublicKeyPEM: unsupported ECDSA curve %s, only P-256 (ES256) is supported", key.Curve.Params().Name)
			}
			a.ecKey = key
			a.algs = append(a.algs, "ES256")
		default:
			return nil, fmt.Errorf("auth: JWTPublicKeyPEM: unsupported key type %T, only RSA (RS256) and ECDSA P-256 (ES256) are supported", key)
		}
	}
	if cfg.APIKey != "" {
		h := sha256.Sum256([]byte(cfg.APIKey))
		a.apiKeyHash = &h
	}
	if len(cfg.TicketKey) < minTicketKeyLen {
		return nil, fmt.Errorf("auth: TicketKey must be at least %d bytes, got %d", minTicketKeyLen, len(cfg.TicketKey))
	}
	mac, err := sign.New(cfg.TicketKey, sign.Ticket)
	if err != nil {
		return nil, fmt.Errorf("auth: TicketKey: %w", err)
	}
	// LEGACY(sign, 2026-12): before rooms/sign, the ticket key was
	// HMAC(HMAC(secret, context1), context2). Tickets live a minute at
	// most, but instances of the previous release still issue them during
	// a rolling deploy: they keep verifying for the one release that brings
	// rooms/sign; remove this in the release after it.
	a.ticketMAC = mac.WithLegacy(sign.Legacy{Key: legacyTicketKey(cfg.TicketKey)})
	switch {
	case a.ticketTTL == 0:
		a.ticketTTL = maxTicketTTL
	case a.ticketTTL < time.Second || a.ticketTTL > maxTicketTTL:
		return nil, fmt.Errorf("auth: TicketTTL must be between 1s and %s, got %s", maxTicketTTL, a.ticketTTL)
	}
	return a, nil
}

// parsePublicKey reads the first PEM block of data.
func parsePublicKey(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PUBLIC KEY":
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad PUBLIC KEY block: %w", err)
		}
		return key, nil
	case "RSA PUBLIC KEY":
		key, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad RSA PUBLIC KEY block: %w", err)
		}
		return key, nil
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad CERTIFICATE block: %w", err)
		}
		return cert.PublicKey, nil
	default:
		// Never echo the block: a private key pasted by mistake must not
		// reach the logs.
		return nil, fmt.Errorf("PEM block of type %q is not a public key", block.Type)
	}
}

// Open reports whether no key is configured at all: no JWT secret, no
// public key and no API key.
func (a *Authenticator) Open() bool {
	return a.secret == nil && a.rsaKey == nil && a.ecKey == nil && a.apiKeyHash == nil
}

// IsAPIKey reports, in constant time, whether s is the configured API key;
// false when none is configured. Comparing digests keeps the key's length
// secret too.
func (a *Authenticator) IsAPIKey(s string) bool {
	if a.apiKeyHash == nil {
		return false
	}
	h := sha256.Sum256([]byte(s))
	return subtle.ConstantTimeCompare(h[:], a.apiKeyHash[:]) == 1
}

// invalid returns ErrInvalidToken wrapped with a message saying which check
// failed. msg must never contain the credential.
func invalid(msg string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, msg)
}

// legacyTicketKey is the ticket key the release before rooms/sign derived
// from secret. LEGACY(sign, 2026-12): remove with its use in New.
func legacyTicketKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(legacyTicketContext1))
	m = hmac.New(sha256.New, m.Sum(nil))
	m.Write([]byte(legacyTicketContext2))
	return m.Sum(nil)
}
