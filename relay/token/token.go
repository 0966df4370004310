// Package token is the `roomcast token USER` command: it mints a
// development user token (an HS256 JWT) with ROOMCAST_JWT_SECRET, as an
// app's backend would, in the manner of Centrifugo's gentoken.
package token

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/rooms"
)

const usage = `Usage: roomcast token [flags] USER

Prints a user token for USER (the sub claim), signed with HS256 and the
relay's ROOMCAST_JWT_SECRET, for development and scripts: pass it to
roomcast sub/pub -token, or as Authorization: Bearer. In production the
app's backend mints tokens (docs/integrate.md).

Flags:
`

// minSecret is the shortest HS256 key the relay accepts (RFC 7518).
const minSecret = 32

// Main runs the command with args (after "token") and returns its exit
// code: 0 with the token on stdout, 2 for a usage error.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomcast token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("secret", getenv("ROOMCAST_JWT_SECRET"), "HS256 key, as the relay's ($ROOMCAST_JWT_SECRET)")
	name := fs.String("name", "", "display name (the name claim; default: USER)")
	subscribe := fs.String("subscribe", "", "comma-separated room patterns the token may subscribe to, * any run of characters (default: what the namespace allows users)")
	publish := fs.String("publish", "", "comma-separated room patterns the token may publish to (default: what the namespace allows users)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (the exp claim)")
	issuer := fs.String("issuer", getenv("ROOMCAST_JWT_ISSUER"), "iss claim ($ROOMCAST_JWT_ISSUER)")
	audience := fs.String("audience", getenv("ROOMCAST_JWT_AUDIENCE"), "aud claim ($ROOMCAST_JWT_AUDIENCE)")
	config.HideDefaults(fs, "secret")
	err := config.ParseCommand(fs, args, usage, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		// A flag given with no pattern (-subscribe "$ROOMS", ROOMS empty)
		// would mint a token with no limit at all: refuse it.
		fs.Visit(func(f *flag.Flag) {
			if err == nil && (f.Name == "subscribe" || f.Name == "publish") {
				err = checkPatterns(f.Name, f.Value.String())
			}
		})
	}
	var tok string
	if err == nil {
		tok, err = mint(fs.Args(), *secret, *name, *subscribe, *publish, *ttl, *issuer, *audience, time.Now())
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomcast token:", err)
		fmt.Fprintln(stderr, config.CommandHint("token"))
		return 2
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func mint(args []string, secret, name, subscribe, publish string, ttl time.Duration, issuer, audience string, now time.Time) (string, error) {
	if len(args) != 1 {
		return "", errors.New("exactly one USER argument is needed (flags go before it)")
	}
	user := args[0]
	if err := rooms.ValidateUserID(user); err != nil {
		return "", err
	}
	switch {
	case secret == "":
		return "", errors.New("no secret: set ROOMCAST_JWT_SECRET (the relay's) or pass -secret")
	case len(secret) < minSecret:
		return "", fmt.Errorf("the secret must be at least %d bytes, as the relay's ROOMCAST_JWT_SECRET", minSecret)
	case ttl < time.Second:
		// exp is in whole seconds: less would be expired when minted.
		return "", errors.New("-ttl must be at least 1s")
	}
	claims := jwt.MapClaims{"sub": user, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if name != "" {
		claims["name"] = name
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	limits := map[string][]string{}
	for key, list := range map[string]string{"subscribe": subscribe, "publish": publish} {
		if list == "" {
			continue
		}
		patterns := []string{}
		for _, p := range strings.Split(list, ",") {
			if p = strings.TrimSpace(p); p != "" {
				patterns = append(patterns, p)
			}
		}
		limits[key] = patterns
	}
	if len(limits) > 0 {
		claims["rooms"] = limits
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// checkPatterns refuses a -subscribe or -publish list that names no
// pattern, or a pattern no room name can match, which would fail silently.
func checkPatterns(flagName, list string) error {
	n := 0
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n++
		if name, ok := strings.CutPrefix(p, rooms.DefaultNamespace+":"); ok {
			return fmt.Errorf("-%s %q: rooms of the default namespace are matched by their name alone (%q, not %q)", flagName, p, name, p)
		}
		// '*' stands for at least nothing; "x" in its place must make a
		// room name for the pattern to match one.
		if _, err := rooms.ParseRoom(strings.ReplaceAll(p, "*", "x")); err != nil {
			return fmt.Errorf("-%s %q matches no room: %w", flagName, p, err)
		}
	}
	if n == 0 {
		return fmt.Errorf("-%s names no room pattern (leave it out for what the namespace allows)", flagName)
	}
	return nil
}
