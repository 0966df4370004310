package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/roomcast/roomcast/rooms"
)

// testNow is the fixed clock every test starts from.
var testNow = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)

var (
	testSecret    = []byte("0123456789abcdef0123456789abcdef")
	testTicketKey = []byte("ticket-key-16-bytes!")
	testAPIKey    = "server-api-key-0123456789"
)

type testKeys struct {
	rsa, rsaOther *rsa.PrivateKey
	ec, ecOther   *ecdsa.PrivateKey
}

// keys are generated once per test binary: RSA generation is slow.
var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	for _, p := range []**rsa.PrivateKey{&k.rsa, &k.rsaOther} {
		if *p, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	}
	for _, p := range []**ecdsa.PrivateKey{&k.ec, &k.ecOther} {
		if *p, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	}
	return k
})

func pemOf(pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newAuth(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	if cfg.TicketKey == nil {
		cfg.TicketKey = testTicketKey
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testNow }
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// claimsFor returns valid claims for user: exp in ten minutes.
func claimsFor(user string) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "exp": testNow.Add(10 * time.Minute).Unix()}
}

// with returns a copy of c with the given changes; a nil value deletes the claim.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func signJWT(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// craft builds a token by hand, for headers no library would sign.
func craft(t testing.TB, header map[string]any, c jwt.MapClaims, sig string) string {
	return b64json(t, header) + "." + b64json(t, c) + "." + sig
}

// checkInvalid asserts that err is ErrInvalidToken, says want, and does not
// leak the credential.
func checkInvalid(t *testing.T, err error, want, credential string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("error = %v, want ErrInvalidToken", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %q, want it to say %q", err, want)
	}
	for _, part := range strings.Split(credential, ".") {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Fatalf("error %q contains part of the credential", err)
		}
	}
}

func TestVerifyToken(t *testing.T) {
	k := keys()
	rsaPEM := pemOf(&k.rsa.PublicKey)
	ecPEM := pemOf(&k.ec.PublicKey)
	hsRSA := Config{JWTSecret: testSecret, JWTPublicKeyPEM: rsaPEM}
	rsaOnly := Config{JWTPublicKeyPEM: rsaPEM}
	ecOnly := Config{JWTPublicKeyPEM: ecPEM}
	hsOnly := Config{JWTSecret: testSecret}
	base := claimsFor("alice")
	exp := testNow.Add(10 * time.Minute)

	validRS := signJWT(t, jwt.SigningMethodRS256, k.rsa, base)
	parts := strings.Split(validRS, ".")
	tamperedPayload := parts[0] + "." + b64json(t, with(base, "sub", "admin")) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[len(sig)/2] ^= 0x01
	tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	// The last character of a 256-byte signature carries 2 bits and 4
	// padding bits; setting a padding bit decodes to the same bytes unless
	// decoding is strict.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, parts[2][len(parts[2])-1])
	paddingBits := parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + string(alphabet[last+1])

	tests := []struct {
		name    string
		cfg     Config
		token   string
		wantErr string // "" for success
		want    rooms.Identity
	}{
		{name: "HS256 valid", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, base),
			want: rooms.Identity{User: "alice", Name: "alice", Expires: exp}},
		{name: "RS256 valid", cfg: hsRSA, token: validRS,
			want: rooms.Identity{User: "alice", Name: "alice", Expires: exp}},
		{name: "ES256 valid", cfg: ecOnly, token: signJWT(t, jwt.SigningMethodES256, k.ec, base),
			want: rooms.Identity{User: "alice", Name: "alice", Expires: exp}},
		{name: "RS256 public key as RSA PUBLIC KEY", cfg: Config{JWTPublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})},
			token: validRS, want: rooms.Identity{User: "alice", Name: "alice", Expires: exp}},

		{name: "alg none", cfg: hsRSA, token: craft(t, map[string]any{"alg": "none", "typ": "JWT"}, base, ""), wantErr: "algorithm not allowed"},
		{name: "alg None", cfg: hsRSA, token: craft(t, map[string]any{"alg": "None"}, base, ""), wantErr: "algorithm not allowed"},
		{name: "alg missing", cfg: hsRSA, token: craft(t, map[string]any{"typ": "JWT"}, base, "c2ln"), wantErr: "algorithm not allowed"},
		{name: "alg not a string", cfg: hsRSA, token: craft(t, map[string]any{"alg": 256}, base, "c2ln"), wantErr: "algorithm not allowed"},
		{name: "alg none, signed with jwt's unsafe none", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, base), wantErr: "algorithm not allowed"},
		{name: "HS256 when only RS256 is configured", cfg: rsaOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, base), wantErr: "algorithm not allowed"},
		{name: "HS/RS confusion: HS256 keyed with the RSA public key PEM", cfg: rsaOnly,
			token: signJWT(t, jwt.SigningMethodHS256, rsaPEM, base), wantErr: "algorithm not allowed"},
		{name: "HS/RS confusion with a secret configured too", cfg: hsRSA,
			token: signJWT(t, jwt.SigningMethodHS256, rsaPEM, base), wantErr: "bad signature"},
		{name: "HS/ES confusion: HS256 keyed with the EC public key PEM", cfg: ecOnly,
			token: signJWT(t, jwt.SigningMethodHS256, ecPEM, base), wantErr: "algorithm not allowed"},
		{name: "RS256 when only HS256 is configured", cfg: hsOnly, token: validRS, wantErr: "algorithm not allowed"},
		{name: "ES256 when an RSA key is configured", cfg: hsRSA,
			token: signJWT(t, jwt.SigningMethodES256, k.ec, base), wantErr: "algorithm not allowed"},
		{name: "RS384 is not pinned", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodRS384, k.rsa, base), wantErr: "algorithm not allowed"},
		{name: "HS512 is not pinned", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodHS512, testSecret, base), wantErr: "algorithm not allowed"},
		{name: "PS256 is not pinned", cfg: rsaOnly, token: signJWT(t, jwt.SigningMethodPS256, k.rsa, base), wantErr: "algorithm not allowed"},
		{name: "unknown alg", cfg: hsRSA, token: craft(t, map[string]any{"alg": "XX999"}, base, "c2ln"), wantErr: "algorithm not allowed"},
		{name: "no JWT key configured", cfg: Config{APIKey: testAPIKey}, token: validRS, wantErr: "no JWT key is configured"},
		{name: "crit header", cfg: hsOnly,
			token: func() string {
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, base)
				tok.Header["crit"] = []string{"b64"}
				tok.Header["b64"] = false
				s, _ := tok.SignedString(testSecret)
				return s
			}(), wantErr: "unsupported critical header"},

		{name: "RS256 wrong key", cfg: rsaOnly, token: signJWT(t, jwt.SigningMethodRS256, k.rsaOther, base), wantErr: "bad signature"},
		{name: "ES256 wrong key", cfg: ecOnly, token: signJWT(t, jwt.SigningMethodES256, k.ecOther, base), wantErr: "bad signature"},
		{name: "HS256 wrong secret", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes-or-more!"), base), wantErr: "bad signature"},
		{name: "tampered payload", cfg: rsaOnly, token: tamperedPayload, wantErr: "bad signature"},
		{name: "tampered signature", cfg: rsaOnly, token: tamperedSig, wantErr: "bad signature"},
		{name: "signature stripped", cfg: rsaOnly, token: parts[0] + "." + parts[1] + ".", wantErr: "bad signature"},
		{name: "signature with non-zero padding bits", cfg: rsaOnly,
			token: paddingBits, wantErr: "malformed token"},

		{name: "expired", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "exp", testNow.Add(-time.Minute).Unix())), wantErr: "token expired"},
		{name: "exp missing", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "exp", nil)), wantErr: "token has no exp"},
		{name: "exp not a number", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "exp", "tomorrow")), wantErr: "malformed token"},
		{name: "exp within the default leeway", cfg: hsRSA,
			token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "exp", testNow.Add(-3*time.Second).Unix())),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: testNow.Add(-3 * time.Second)}},
		{name: "exp past a configured leeway", cfg: Config{JWTSecret: testSecret, Leeway: 2 * time.Second},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "exp", testNow.Add(-3*time.Second).Unix())), wantErr: "token expired"},
		{name: "negative leeway means none", cfg: Config{JWTSecret: testSecret, Leeway: -1},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "exp", testNow.Unix())), wantErr: "token expired"},
		{name: "nbf in the future", cfg: hsRSA, token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "nbf", testNow.Add(time.Minute).Unix())), wantErr: "token not valid yet"},
		{name: "nbf within the leeway", cfg: hsRSA,
			token: signJWT(t, jwt.SigningMethodRS256, k.rsa, with(base, "nbf", testNow.Add(3*time.Second).Unix())),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp}},

		{name: "right issuer and audience", cfg: Config{JWTSecret: testSecret, Issuer: "https://id.example", Audience: "roomcast"},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "iss", "https://id.example", "aud", []string{"other", "roomcast"})),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp}},
		{name: "wrong issuer", cfg: Config{JWTSecret: testSecret, Issuer: "https://id.example"},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "iss", "https://evil.example")), wantErr: "wrong issuer"},
		{name: "issuer missing", cfg: Config{JWTSecret: testSecret, Issuer: "https://id.example"},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, base), wantErr: "wrong issuer"},
		{name: "wrong audience", cfg: Config{JWTSecret: testSecret, Audience: "roomcast"},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "aud", "other")), wantErr: "wrong audience"},
		{name: "audience missing", cfg: Config{JWTSecret: testSecret, Audience: "roomcast"},
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, base), wantErr: "wrong audience"},
		{name: "iss and aud ignored when not configured", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "iss", "x", "aud", "y")),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp}},

		{name: "oversized (9 KiB)", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "name", strings.Repeat("x", 9<<10))), wantErr: "token too large"},
		{name: "empty sub", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "sub", "")), wantErr: "token has no sub"},
		{name: "sub missing", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "sub", nil)), wantErr: "token has no sub"},
		{name: "sub with a control character", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "sub", "al\nice")), wantErr: "not a valid user id"},
		{name: "sub not a string", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "sub", 42)), wantErr: "malformed token"},

		{name: "garbage", cfg: hsRSA, token: "garbage", wantErr: "malformed token"},
		{name: "empty", cfg: hsRSA, token: "", wantErr: "malformed token"},
		{name: "dots", cfg: hsRSA, token: "...", wantErr: "malformed token"},
		{name: "three junk segments", cfg: hsRSA, token: "a.b.c", wantErr: "malformed token"},
		{name: "four segments", cfg: hsRSA, token: validRS + ".x", wantErr: "malformed token"},
		{name: "header not JSON", cfg: hsRSA, token: base64.RawURLEncoding.EncodeToString([]byte("not json")) + "." + parts[1] + "." + parts[2], wantErr: "malformed token"},
		{name: "header JSON null", cfg: hsRSA, token: base64.RawURLEncoding.EncodeToString([]byte("null")) + "." + parts[1] + "." + parts[2], wantErr: "malformed token"},
		{name: "padded base64", cfg: rsaOnly, token: parts[0] + "=." + parts[1] + "." + parts[2], wantErr: "malformed token"},
		{name: "claims not JSON", cfg: hsRSA, token: parts[0] + ".bm90IGpzb24." + parts[2], wantErr: "malformed token"},

		{name: "name claim", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "name", "Alice A.")),
			want: rooms.Identity{User: "alice", Name: "Alice A.", Expires: exp}},
		{name: "rooms claim absent: no restriction", cfg: hsOnly, token: signJWT(t, jwt.SigningMethodHS256, testSecret, base),
			want: rooms.Identity{User: "alice", Name: "alice", Expires: exp}},
		{name: "rooms claim with both lists", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "rooms", map[string]any{"subscribe": []string{"team-*", "admin:*"}, "publish": []string{"team-a"}})),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp, Subscribe: []string{"team-*", "admin:*"}, Publish: []string{"team-a"}}},
		{name: "rooms claim with an empty publish list: nothing", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "rooms", map[string]any{"subscribe": []string{"*"}, "publish": []string{}})),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp, Subscribe: []string{"*"}, Publish: []string{}}},
		{name: "rooms claim with subscribe only", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "rooms", map[string]any{"subscribe": []string{"lobby"}})),
			want:  rooms.Identity{User: "alice", Name: "alice", Expires: exp, Subscribe: []string{"lobby"}}},
		{name: "rooms claim of the wrong type", cfg: hsOnly,
			token: signJWT(t, jwt.SigningMethodHS256, testSecret, with(base, "rooms", "everything")), wantErr: "malformed token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, tt.cfg)
			id, err := a.VerifyToken(tt.token)
			if tt.wantErr != "" {
				checkInvalid(t, err, tt.wantErr, tt.token)
				if !id.Anonymous() {
					t.Fatalf("identity %+v returned with an error", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyToken: %v", err)
			}
			checkIdentity(t, id, tt.want)
		})
	}
}

// checkIdentity compares identities, telling nil lists from empty ones.
func checkIdentity(t *testing.T, got, want rooms.Identity) {
	t.Helper()
	if got.User != want.User || got.Name != want.Name || got.Server != want.Server || !got.Expires.Equal(want.Expires) ||
		!sameList(got.Subscribe, want.Subscribe) || !sameList(got.Publish, want.Publish) {
		t.Fatalf("identity = %+v (subscribe nil %v, publish nil %v), want %+v (subscribe nil %v, publish nil %v)",
			got, got.Subscribe == nil, got.Publish == nil, want, want.Subscribe == nil, want.Publish == nil)
	}
}

func sameList(a, b []string) bool { return (a == nil) == (b == nil) && slices.Equal(a, b) }

func TestNew(t *testing.T) {
	k := keys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)})

	tests := []struct {
		name    string
		cfg     Config
		wantErr string // names the option; "" for success
		open    bool
	}{
		{name: "open", cfg: Config{TicketKey: testTicketKey}, open: true},
		{name: "secret", cfg: Config{TicketKey: testTicketKey, JWTSecret: testSecret}},
		{name: "API key only", cfg: Config{TicketKey: testTicketKey, APIKey: testAPIKey}},
		{name: "RSA key", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pemOf(&k.rsa.PublicKey)}},
		{name: "EC key", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pemOf(&k.ec.PublicKey)}},
		{name: "certificate", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: selfSigned(t, k.ec)}},
		{name: "ticket TTL of 30s", cfg: Config{TicketKey: testTicketKey, TicketTTL: 30 * time.Second}, open: true},

		{name: "no ticket key", cfg: Config{JWTSecret: testSecret}, wantErr: "TicketKey"},
		{name: "short ticket key", cfg: Config{TicketKey: []byte("short")}, wantErr: "TicketKey"},
		{name: "ticket TTL over 60s", cfg: Config{TicketKey: testTicketKey, TicketTTL: 2 * time.Minute}, wantErr: "TicketTTL"},
		{name: "negative ticket TTL", cfg: Config{TicketKey: testTicketKey, TicketTTL: -time.Second}, wantErr: "TicketTTL"},
		{name: "short secret", cfg: Config{TicketKey: testTicketKey, JWTSecret: []byte("secret")}, wantErr: "JWTSecret"},
		{name: "not PEM", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: []byte("hello")}, wantErr: "JWTPublicKeyPEM"},
		{name: "corrupt PEM", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}, wantErr: "JWTPublicKeyPEM"},
		{name: "private key", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: privPEM}, wantErr: "JWTPublicKeyPEM"},
		{name: "RSA 1024", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pemOf(&small.PublicKey)}, wantErr: "JWTPublicKeyPEM"},
		{name: "P-384", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pemOf(&p384.PublicKey)}, wantErr: "JWTPublicKeyPEM"},
		{name: "Ed25519", cfg: Config{TicketKey: testTicketKey, JWTPublicKeyPEM: pemOf(edPub)}, wantErr: "JWTPublicKeyPEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: error %v, want one naming %s", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), string(testSecret[:8])) {
					t.Fatalf("New: error %q leaks key material", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if a.Open() != tt.open {
				t.Fatalf("Open() = %v, want %v", a.Open(), tt.open)
			}
		})
	}
}

func selfSigned(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCertificateKeyVerifies(t *testing.T) {
	k := keys()
	a := newAuth(t, Config{JWTPublicKeyPEM: selfSigned(t, k.ec)})
	id, err := a.VerifyToken(signJWT(t, jwt.SigningMethodES256, k.ec, claimsFor("alice")))
	if err != nil || id.User != "alice" {
		t.Fatalf("VerifyToken = %+v, %v; want alice", id, err)
	}
}

func TestIsAPIKey(t *testing.T) {
	a := newAuth(t, Config{APIKey: testAPIKey})
	none := newAuth(t, Config{})
	for _, tt := range []struct {
		a    *Authenticator
		s    string
		want bool
	}{
		{a, testAPIKey, true},
		{a, testAPIKey + "x", false},
		{a, testAPIKey[:len(testAPIKey)-1], false},
		{a, "", false},
		{none, "", false},
		{none, testAPIKey, false},
	} {
		if got := tt.a.IsAPIKey(tt.s); got != tt.want {
			t.Errorf("IsAPIKey(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// claims is an in-memory claim func: each key once, across every
// Authenticator that shares it.
type claimStore struct {
	mu   sync.Mutex
	seen map[string]time.Duration
}

func newClaimStore() *claimStore { return &claimStore{seen: map[string]time.Duration{}} }

func (s *claimStore) claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[key]; ok {
		return false, nil
	}
	s.seen[key] = ttl
	return true, nil
}

func TestTicketRoundTrip(t *testing.T) {
	exp := testNow.Add(10 * time.Minute).Add(123 * time.Millisecond)
	for _, id := range []rooms.Identity{
		{User: "alice", Name: "Alice", Expires: exp, Subscribe: []string{"team-*", "admin:*"}, Publish: []string{"team-a"}},
		{User: "bob", Name: "bob", Expires: exp},
		{User: "carol", Name: "", Subscribe: []string{}, Publish: []string{}},
		{User: "dave", Name: "Dåve 🎉", Subscribe: []string{""}, Publish: nil},
	} {
		t.Run(id.User, func(t *testing.T) {
			a := newAuth(t, Config{})
			ticket, ttl, err := a.IssueTicket(id)
			if err != nil {
				t.Fatal(err)
			}
			if ttl != 60*time.Second {
				t.Fatalf("ttl = %s, want 60s", ttl)
			}
			store := newClaimStore()
			got, err := a.RedeemTicket(context.Background(), ticket, store.claim)
			if err != nil {
				t.Fatalf("RedeemTicket: %v", err)
			}
			checkIdentity(t, got, id)
			if len(store.seen) != 1 {
				t.Fatalf("claimed %d keys, want 1", len(store.seen))
			}
			for key, claimTTL := range store.seen {
				if !strings.HasPrefix(key, "ticket:") {
					t.Fatalf("claim key %q, want a ticket: key", key)
				}
				if claimTTL < ttl {
					t.Fatalf("claim ttl %s shorter than the ticket's %s", claimTTL, ttl)
				}
			}
		})
	}
}

func TestTicketFromTokenCarriesNoToken(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	token := signJWT(t, jwt.SigningMethodHS256, testSecret, with(claimsFor("alice"), "name", "Alice"))
	id, err := a.VerifyToken(token)
	if err != nil {
		t.Fatal(err)
	}
	ticket, _, err := a.IssueTicket(id)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(ticket, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(token, ".") {
		if strings.Contains(ticket, part) || strings.Contains(string(payload), part) {
			t.Fatalf("ticket contains part of the token")
		}
	}
	got, err := a.RedeemTicket(context.Background(), ticket, newClaimStore().claim)
	if err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, got, id)
}

func TestTicketSingleUse(t *testing.T) {
	// Two instances sharing a ticket key and a claim store, as behind a
	// load balancer with the backbone as the store.
	a1, a2 := newAuth(t, Config{}), newAuth(t, Config{})
	store := newClaimStore()
	ticket, _, err := a1.IssueTicket(rooms.Identity{User: "alice", Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.RedeemTicket(context.Background(), ticket, store.claim); err != nil {
		t.Fatalf("first redeem: %v", err)
	}
	for _, a := range []*Authenticator{a1, a2} {
		_, err := a.RedeemTicket(context.Background(), ticket, store.claim)
		checkInvalid(t, err, "ticket already used", ticket)
	}

	// Concurrent redeems: exactly one wins.
	ticket, _, err = a1.IssueTicket(rooms.Identity{User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 16 {
		wg.Go(func() {
			if _, err := a2.RedeemTicket(context.Background(), ticket, store.claim); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent redeems succeeded, want 1", wins)
	}
}

func TestTicketClaimError(t *testing.T) {
	a := newAuth(t, Config{})
	ticket, _, err := a.IssueTicket(rooms.Identity{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("backbone down")
	_, err = a.RedeemTicket(context.Background(), ticket, func(context.Context, string, time.Duration) (bool, error) { return false, down })
	if !errors.Is(err, down) || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("error = %v, want the claim's error and not ErrInvalidToken", err)
	}
	if strings.Contains(err.Error(), ticket) {
		t.Fatalf("error %q contains the ticket", err)
	}
}

func TestTicketLifetime(t *testing.T) {
	tests := []struct {
		name     string
		ttl      time.Duration // Config.TicketTTL
		expires  time.Duration // identity expiry from now; 0 for never
		wantTTL  time.Duration
		redeemOK []time.Duration // redeem succeeds this long after issue
		redeemNo []time.Duration // and fails with "ticket expired"
	}{
		{name: "default 60s", wantTTL: 60 * time.Second,
			redeemOK: []time.Duration{0, 59 * time.Second}, redeemNo: []time.Duration{60 * time.Second, time.Hour}},
		{name: "configured 10s", ttl: 10 * time.Second, wantTTL: 10 * time.Second,
			redeemOK: []time.Duration{9 * time.Second}, redeemNo: []time.Duration{10 * time.Second}},
		{name: "capped by the identity's expiry", expires: 5 * time.Second, wantTTL: 5 * time.Second,
			redeemOK: []time.Duration{4 * time.Second}, redeemNo: []time.Duration{5 * time.Second, 30 * time.Second}},
		{name: "identity expiring later than the ticket", expires: time.Hour, wantTTL: 60 * time.Second,
			redeemOK: []time.Duration{59 * time.Second}, redeemNo: []time.Duration{61 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := rooms.Identity{User: "alice"}
			if tt.expires != 0 {
				id.Expires = testNow.Add(tt.expires)
			}
			check := func(after time.Duration, ok bool) {
				t.Helper()
				c := &clock{t: testNow}
				a := newAuth(t, Config{TicketTTL: tt.ttl, Now: c.Now})
				ticket, ttl, err := a.IssueTicket(id)
				if err != nil {
					t.Fatal(err)
				}
				if ttl != tt.wantTTL {
					t.Fatalf("ttl = %s, want %s", ttl, tt.wantTTL)
				}
				c.Advance(after)
				_, err = a.RedeemTicket(context.Background(), ticket, newClaimStore().claim)
				if ok && err != nil {
					t.Fatalf("redeem %s after issue: %v", after, err)
				}
				if !ok {
					checkInvalid(t, err, "ticket expired", ticket)
				}
			}
			for _, d := range tt.redeemOK {
				check(d, true)
			}
			for _, d := range tt.redeemNo {
				check(d, false)
			}
		})
	}
}

func TestIssueTicketRefuses(t *testing.T) {
	a := newAuth(t, Config{})
	for _, tt := range []struct {
		name string
		id   rooms.Identity
		want error
	}{
		{"anonymous", rooms.Identity{}, rooms.ErrUnauthenticated},
		{"API key", rooms.Identity{Server: true}, rooms.ErrForbidden},
		{"expired identity", rooms.Identity{User: "alice", Expires: testNow.Add(-time.Second)}, ErrInvalidToken},
		{"identity expiring now", rooms.Identity{User: "alice", Expires: testNow}, ErrInvalidToken},
		{"identity too large", rooms.Identity{User: "alice", Subscribe: []string{strings.Repeat("r", 16<<10)}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ticket, _, err := a.IssueTicket(tt.id)
			if err == nil || ticket != "" || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("IssueTicket = %q, %v; want an error wrapping %v", ticket, err, tt.want)
			}
		})
	}
}

func TestRedeemTicketHostile(t *testing.T) {
	a := newAuth(t, Config{})
	other := newAuth(t, Config{TicketKey: []byte("another-ticket-key!!")})
	issue := func(a *Authenticator, user string) string {
		ticket, _, err := a.IssueTicket(rooms.Identity{User: user, Name: user})
		if err != nil {
			t.Fatal(err)
		}
		return ticket
	}
	good := issue(a, "alice")
	p64, m64, _ := strings.Cut(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(p64)
	mac, _ := base64.RawURLEncoding.DecodeString(m64)
	enc := base64.RawURLEncoding.EncodeToString
	flip := func(b []byte, i int) []byte {
		b = slices.Clone(b)
		b[i] ^= 0x01
		return b
	}
	_, bobMAC, _ := strings.Cut(issue(a, "bob"), ".")
	// Rewrite the user (alice -> alicf): a privilege change by tampering.
	renamed := slices.Clone(payload)
	renamed[len(renamed)-2-len("alice")-1-1] = 'f' // before: publish, subscribe, name, name's length

	tests := []struct {
		name, ticket, want string
	}{
		{"tampered payload byte", enc(flip(payload, len(payload)-3)) + "." + m64, "bad ticket signature"},
		{"tampered expiry", enc(flip(payload, 8)) + "." + m64, "bad ticket signature"},
		{"tampered user", enc(renamed) + "." + m64, "bad ticket signature"},
		{"tampered MAC", p64 + "." + enc(flip(mac, 0)), "bad ticket signature"},
		{"MAC of another ticket", p64 + "." + bobMAC, "bad ticket signature"},
		{"signed with another key", issue(other, "alice"), "bad ticket signature"},
		{"truncated MAC", p64 + "." + enc(mac[:16]), "malformed ticket"},
		{"no MAC", p64, "malformed ticket"},
		{"empty", "", "malformed ticket"},
		{"garbage", "garbage", "malformed ticket"},
		{"extra dot", good + ".x", "malformed ticket"},
		{"not base64", "!!!." + m64, "malformed ticket"},
		{"padded base64", p64 + "=." + m64, "malformed ticket"},
		{"a JWT instead", signJWT(t, jwt.SigningMethodHS256, testSecret, claimsFor("alice")), "malformed ticket"},
		{"oversized", strings.Repeat("A", 17<<10) + "." + m64, "ticket too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newClaimStore()
			id, err := a.RedeemTicket(context.Background(), tt.ticket, store.claim)
			checkInvalid(t, err, tt.want, tt.ticket)
			if !id.Anonymous() || len(store.seen) != 0 {
				t.Fatalf("identity %+v / %d claims after a bad ticket", id, len(store.seen))
			}
		})
	}
	// The untouched ticket still works: the cases above failed for their tampering.
	if _, err := a.RedeemTicket(context.Background(), good, newClaimStore().claim); err != nil {
		t.Fatalf("good ticket: %v", err)
	}
}

func TestFromRequest(t *testing.T) {
	k := keys()
	alice := signJWT(t, jwt.SigningMethodRS256, k.rsa, claimsFor("alice"))
	bob := signJWT(t, jwt.SigningMethodRS256, k.rsa, claimsFor("bob"))
	carol := signJWT(t, jwt.SigningMethodRS256, k.rsa, claimsFor("carol"))
	bad := signJWT(t, jwt.SigningMethodRS256, k.rsaOther, claimsFor("mallory"))
	const ticketDave = "<ticket for dave>" // replaced by a fresh ticket per case

	type request struct {
		auth   []string // Authorization header values
		cookie string
		query  url.Values
	}
	tests := []struct {
		name        string
		req         request
		mode        Credentials
		queryTokens bool
		wantUser    string // "" for anonymous
		wantServer  bool
		wantErr     string
	}{
		{name: "nothing, state-changing", mode: StateChanging},
		{name: "nothing, subscribing", mode: Subscribing},
		{name: "bearer JWT, state-changing", req: request{auth: []string{"Bearer " + alice}}, mode: StateChanging, wantUser: "alice"},
		{name: "bearer JWT, subscribing", req: request{auth: []string{"Bearer " + alice}}, mode: Subscribing, wantUser: "alice"},
		{name: "lower-case scheme", req: request{auth: []string{"bearer " + alice}}, mode: StateChanging, wantUser: "alice"},
		{name: "API key, state-changing", req: request{auth: []string{"Bearer " + testAPIKey}}, mode: StateChanging, wantServer: true},
		{name: "API key, subscribing", req: request{auth: []string{"Bearer " + testAPIKey}}, mode: Subscribing, wantServer: true},
		{name: "bad bearer, state-changing", req: request{auth: []string{"Bearer " + bad}}, mode: StateChanging, wantErr: "bad signature"},
		{name: "bad bearer, subscribing", req: request{auth: []string{"Bearer " + bad}}, mode: Subscribing, wantErr: "bad signature"},
		{name: "Basic scheme", req: request{auth: []string{"Basic YWxpY2U6cHc="}}, mode: StateChanging, wantErr: "not Bearer"},
		{name: "bare token without scheme", req: request{auth: []string{alice}}, mode: StateChanging, wantErr: "not Bearer"},
		{name: "empty bearer", req: request{auth: []string{"Bearer "}}, mode: StateChanging, wantErr: "empty bearer token"},
		{name: "two Authorization headers", req: request{auth: []string{"Bearer " + alice, "Bearer " + testAPIKey}}, mode: StateChanging, wantErr: "more than one Authorization header"},
		{name: "blank Authorization header", req: request{auth: []string{"  "}}, mode: StateChanging},

		{name: "cookie ignored when state-changing", req: request{cookie: bob}, mode: StateChanging},
		{name: "bad cookie ignored when state-changing", req: request{cookie: bad}, mode: StateChanging},
		{name: "cookie, subscribing", req: request{cookie: bob}, mode: Subscribing, wantUser: "bob"},
		{name: "bad cookie, subscribing", req: request{cookie: bad}, mode: Subscribing, wantErr: "bad signature"},
		{name: "API key in a cookie is not the server", req: request{cookie: testAPIKey}, mode: Subscribing, wantErr: "malformed token"},
		{name: "bearer before cookie", req: request{auth: []string{"Bearer " + alice}, cookie: bob}, mode: Subscribing, wantUser: "alice"},
		{name: "bad bearer is not made up for by a cookie", req: request{auth: []string{"Bearer " + bad}, cookie: bob}, mode: Subscribing, wantErr: "bad signature"},
		{name: "bearer, not cookie, when state-changing", req: request{auth: []string{"Bearer " + alice}, cookie: bob}, mode: StateChanging, wantUser: "alice"},

		{name: "query token ignored by default", req: request{query: url.Values{"access_token": {carol}}}, mode: Subscribing},
		{name: "query token allowed", req: request{query: url.Values{"access_token": {carol}}}, mode: Subscribing, queryTokens: true, wantUser: "carol"},
		{name: "query token ignored when state-changing", req: request{query: url.Values{"access_token": {carol}}}, mode: StateChanging, queryTokens: true},
		{name: "bad query token", req: request{query: url.Values{"access_token": {bad}}}, mode: Subscribing, queryTokens: true, wantErr: "bad signature"},
		{name: "API key as query token is not the server", req: request{query: url.Values{"access_token": {testAPIKey}}}, mode: Subscribing, queryTokens: true, wantErr: "malformed token"},
		{name: "two query tokens", req: request{query: url.Values{"access_token": {carol, alice}}}, mode: Subscribing, queryTokens: true, wantErr: "more than one access_token"},
		{name: "cookie before query token", req: request{cookie: bob, query: url.Values{"access_token": {carol}}}, mode: Subscribing, queryTokens: true, wantUser: "bob"},

		{name: "ticket, subscribing", req: request{query: url.Values{"ticket": {ticketDave}}}, mode: Subscribing, wantUser: "dave"},
		{name: "ticket ignored when state-changing", req: request{query: url.Values{"ticket": {ticketDave}}}, mode: StateChanging},
		{name: "ticket before bearer", req: request{auth: []string{"Bearer " + alice}, query: url.Values{"ticket": {ticketDave}}}, mode: Subscribing, wantUser: "dave"},
		{name: "bad ticket is not made up for by a bearer", req: request{auth: []string{"Bearer " + alice}, query: url.Values{"ticket": {"garbage"}}}, mode: Subscribing, wantErr: "malformed ticket"},
		{name: "two tickets", req: request{query: url.Values{"ticket": {ticketDave, ticketDave}}}, mode: Subscribing, wantErr: "more than one ticket"},
		{name: "empty ticket is absent", req: request{auth: []string{"Bearer " + alice}, query: url.Values{"ticket": {""}}}, mode: Subscribing, wantUser: "alice"},
		{name: "ticket before query token", req: request{query: url.Values{"ticket": {ticketDave}, "access_token": {carol}}}, mode: Subscribing, queryTokens: true, wantUser: "dave"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, Config{JWTPublicKeyPEM: pemOf(&k.rsa.PublicKey), APIKey: testAPIKey, AllowQueryTokens: tt.queryTokens})
			ticket, _, err := a.IssueTicket(rooms.Identity{User: "dave", Name: "dave"})
			if err != nil {
				t.Fatal(err)
			}
			q := url.Values{}
			for key, vs := range tt.req.query {
				for _, v := range vs {
					q.Add(key, strings.ReplaceAll(v, ticketDave, ticket))
				}
			}
			r := httptest.NewRequest(http.MethodGet, "/v1/rooms/lobby/events?"+q.Encode(), nil)
			for _, v := range tt.req.auth {
				r.Header.Add("Authorization", v)
			}
			if tt.req.cookie != "" {
				r.AddCookie(&http.Cookie{Name: "roomcast_token", Value: tt.req.cookie})
			}
			store := newClaimStore()
			id, err := a.FromRequest(r, tt.mode, store.claim)
			if tt.wantErr != "" {
				checkInvalid(t, err, tt.wantErr, "")
				for _, secret := range []string{alice, bob, carol, bad, ticket, testAPIKey} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q contains a credential", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("FromRequest: %v", err)
			}
			if id.User != tt.wantUser || id.Server != tt.wantServer {
				t.Fatalf("identity = %+v, want user %q server %v", id, tt.wantUser, tt.wantServer)
			}
			if tt.wantUser == "dave" {
				// The ticket was spent: the same request again fails.
				_, err := a.FromRequest(r, tt.mode, store.claim)
				checkInvalid(t, err, "ticket already used", ticket)
			}
		})
	}
}

// fuzzSetup is shared by the fuzz targets' iterations.
type fuzzSetup struct {
	hs, es *Authenticator
	valid  map[string]bool // the only inputs allowed to succeed
}

var fuzzOnce = sync.OnceValue(func() *fuzzSetup {
	k := keys()
	s := &fuzzSetup{valid: map[string]bool{}}
	var err error
	now := func() time.Time { return testNow }
	if s.hs, err = New(Config{JWTSecret: testSecret, JWTPublicKeyPEM: pemOf(&k.rsa.PublicKey), APIKey: testAPIKey, TicketKey: testTicketKey, Now: now}); err != nil {
		panic(err)
	}
	if s.es, err = New(Config{JWTPublicKeyPEM: pemOf(&k.ec.PublicKey), TicketKey: testTicketKey, Now: now}); err != nil {
		panic(err)
	}
	return s
})

// FuzzVerifyToken checks that no input but the tokens signed here verifies.
// Each fuzz worker process generates its own keys, so the RS256 and ES256
// seeds only verify in the process that signed them; the property holds in
// every process all the same.
func FuzzVerifyToken(f *testing.F) {
	s := fuzzOnce()
	k := keys()
	full := with(claimsFor("alice"), "name", "Alice", "rooms", map[string]any{"subscribe": []string{"team-*"}, "publish": []string{}})
	for _, tok := range []string{
		signJWT(f, jwt.SigningMethodHS256, testSecret, full),
		signJWT(f, jwt.SigningMethodRS256, k.rsa, full),
		signJWT(f, jwt.SigningMethodES256, k.ec, full),
	} {
		s.valid[tok] = true
		f.Add(tok)
		f.Add(tok[:len(tok)-2])
	}
	f.Add(craft(f, map[string]any{"alg": "none"}, full, ""))
	f.Add(signJWT(f, jwt.SigningMethodHS256, pemOf(&k.rsa.PublicKey), full))
	f.Add("garbage")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		for _, a := range []*Authenticator{s.hs, s.es} {
			id, err := a.VerifyToken(token)
			if err == nil {
				if !s.valid[token] {
					t.Fatalf("VerifyToken accepted an input it never signed: %+v", id)
				}
				continue
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			if len(token) > 40 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q contains the token", err)
			}
		}
	})
}

func FuzzRedeemTicket(f *testing.F) {
	s := fuzzOnce()
	a := s.hs
	enc := base64.RawURLEncoding
	sealed := func(payload []byte) string {
		return enc.EncodeToString(payload) + "." + enc.EncodeToString(a.ticketMAC.Append(nil, payload))
	}
	// Seeds are built as IssueTicket builds tickets but with fixed nonces:
	// fuzz workers are separate processes, and each must know the same
	// valid tickets as the coordinator that sends it inputs.
	valid := map[string]bool{}
	for i, id := range []rooms.Identity{
		{User: "alice", Name: "Alice", Expires: testNow.Add(time.Hour), Subscribe: []string{"team-*"}, Publish: []string{}},
		{User: "bob"},
	} {
		payload := encodeTicket(nil, ticketPayload{expiry: testNow.Add(time.Minute).UnixNano(), nonce: [nonceLen]byte{byte(i)}, id: id})
		ticket := sealed(payload)
		if _, err := a.RedeemTicket(context.Background(), ticket, newClaimStore().claim); err != nil {
			f.Fatalf("seed ticket: %v", err)
		}
		valid[ticket] = true
		f.Add(ticket)
		f.Add(string(payload)) // also tried below as a correctly signed payload
	}
	f.Add("garbage")
	f.Add("")
	f.Add("a.b")
	always := func(context.Context, string, time.Duration) (bool, error) { return true, nil }
	f.Fuzz(func(t *testing.T, in string) {
		id, err := a.RedeemTicket(context.Background(), in, always)
		if err == nil && !valid[in] {
			t.Fatalf("RedeemTicket accepted an input it never issued: %+v", id)
		}
		if err != nil && !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("error %v does not wrap ErrInvalidToken", err)
		}
		// The payload parser behind the MAC: never panics, and whatever it
		// accepts has a user and survives re-encoding.
		id, err = a.RedeemTicket(context.Background(), sealed([]byte(in)), always)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		if id.User == "" || id.Server {
			t.Fatalf("payload parsed into %+v", id)
		}
		tp, err := decodeTicket([]byte(in))
		if err != nil {
			t.Fatalf("decodeTicket refused what RedeemTicket accepted: %v", err)
		}
		back, err := decodeTicket(encodeTicket(nil, tp))
		if err != nil {
			t.Fatalf("re-encoded payload refused: %v", err)
		}
		if back.expiry != tp.expiry || back.nonce != tp.nonce || back.id.User != tp.id.User || back.id.Name != tp.id.Name ||
			!back.id.Expires.Equal(tp.id.Expires) || !sameList(back.id.Subscribe, tp.id.Subscribe) || !sameList(back.id.Publish, tp.id.Publish) {
			t.Fatalf("re-encoding changed %+v into %+v", tp, back)
		}
	})
}
