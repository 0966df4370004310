// Package pub is the `roomcast pub ROOM DATA` command: one publish, with
// the options of the HTTP API, for scripts and for trying a relay out.
package pub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/rooms"
)

const usage = `Usage: roomcast pub [flags] ROOM DATA
       roomcast pub [flags] -user USER DATA
       roomcast pub [flags] -namespace NS DATA
       roomcast pub [flags] -file EVENTS

Publishes DATA (a string; a JSON value with -json; - reads it from stdin;
bytes that are not UTF-8 arrive base64-encoded, with "encoding":"base64")
to ROOM, to several rooms as one event (ROOM is a comma-separated list), to
a user's private channel (-user) or to every subscriber of a namespace
(-namespace), and prints the relay's answer. Exits 0 when the relay
accepted the event, 1 when it refused it (the answer's status and error say
why), 2 for a usage error.

With -file, EVENTS (a file, or - for stdin) goes to POST /v1/batch: a JSON
array, or NDJSON (one event per line), of up to 1,000 events, each a
publish body with its target ("room", "rooms", "user" or "namespace") and
an optional "idempotency_key". It prints the relay's result per event and
exits 0 when every event was stored, 1 when any was not.

Flags:
`

// maxStdin bounds DATA read from stdin: the relay's -max-payload is at
// most 16 MiB.
const maxStdin = 16 << 20

// Main runs the command with args (after "pub"), reading DATA "-" from
// stdin, and returns its exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomcast pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", cmpOr(getenv("ROOMCAST_URL"), "http://127.0.0.1:8080"), "base URL of the relay ($ROOMCAST_URL)")
	event := fs.String("event", "message", "event name")
	user := fs.String("user", "", "send DATA to this user's private channel instead of a room (needs a token or the API key)")
	namespace := fs.String("namespace", "", "broadcast DATA to every subscriber of this namespace instead of a room")
	isJSON := fs.Bool("json", false, "DATA is a JSON value (default: a string)")
	volatile := fs.Bool("volatile", false, "best effort: not retained, never replayed, no id")
	idemKey := fs.String("idempotency-key", "", "Idempotency-Key: a repeat with the same key publishes nothing and answers as the first time")
	as := fs.String("as", "", "USER or USER:NAME to publish as (API key only)")
	exclude := fs.String("exclude", "", "comma-separated client ids that must not receive the event (API key only)")
	tok := fs.String("token", getenv("ROOMCAST_TOKEN"), "user token (JWT) sent as Authorization: Bearer ($ROOMCAST_TOKEN)")
	apiKey := fs.String("api-key", getenv("ROOMCAST_API_KEY"), "server API key sent as Authorization: Bearer ($ROOMCAST_API_KEY); -token wins")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of the request")
	file := fs.String("file", "", "send the events of this file (JSON array or NDJSON; - for stdin) as one batch to POST /v1/batch")
	config.HideDefaults(fs, "token", "api-key")
	fail := func(err error) int {
		fmt.Fprintln(stderr, "roomcast pub:", err)
		fmt.Fprintln(stderr, config.CommandHint("pub"))
		return 2
	}
	if err := config.ParseCommand(fs, args, usage, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail(err)
	}
	if *timeout <= 0 {
		// It would expire before the request is sent, reading as if the
		// relay were unreachable.
		return fail(errors.New("-timeout must be above 0"))
	}
	o := options{base: *base, event: *event, user: *user, namespace: *namespace, isJSON: *isJSON,
		volatile: *volatile, idemKey: *idemKey, as: *as, exclude: *exclude, credential: cmpOr(*tok, *apiKey),
		timeout: *timeout, args: fs.Args()}
	if *file != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"event", "user", "namespace", "json", "volatile", "idempotency-key", "as", "exclude"} {
			if set[name] {
				return fail(fmt.Errorf("-%s does not go with -file: each event of the file carries its own", name))
			}
		}
		if fs.NArg() != 0 {
			return fail(errors.New("-file takes no ROOM or DATA: each event of the file names its target"))
		}
		base, err := baseURL(*base)
		if err != nil {
			return fail(err)
		}
		events, err := readFile(*file, stdin)
		if err != nil {
			return fail(err)
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return sendBatch(ctx, base, o.credential, events, stdout, stderr)
	}
	target, contentType, payload, err := o.request(stdin)
	if err != nil {
		return fail(err)
	}
	return o.send(ctx, target, contentType, payload, stdout, stderr)
}

// options are the parsed flags and arguments of one publish.
type options struct {
	base, event, user, namespace string
	isJSON, volatile             bool
	idemKey, as, exclude         string
	credential                   string
	timeout                      time.Duration
	args                         []string
}

// request checks the flags and arguments (usage errors, exit 2) and makes
// the publish: its URL, content type and body.
func (o options) request(stdin io.Reader) (target, contentType string, payload []byte, err error) {
	dataArg, err := o.data(stdin)
	if err != nil {
		return "", "", nil, err
	}
	body, err := o.body(dataArg)
	if err != nil {
		return "", "", nil, err
	}
	if target, err = o.target(&body); err != nil {
		return "", "", nil, err
	}
	if o.idemKey != "" {
		for _, c := range o.idemKey {
			if c < 0x21 || c > 0x7e || len(o.idemKey) > 255 {
				return "", "", nil, errors.New("-idempotency-key: 1 to 255 printable ASCII characters")
			}
		}
	}
	if !o.isJSON && !utf8.ValidString(dataArg) {
		// A JSON string cannot hold these bytes (encoding would replace
		// them with U+FFFD): the relay takes them as a raw body and
		// delivers them base64-encoded, as it does for curl --data-binary.
		if body.From != nil || body.Exclude != nil || body.Rooms != nil {
			return "", "", nil, errors.New("DATA is not UTF-8 text: such data goes to the relay as a raw body, which -as, -exclude and several rooms cannot go with")
		}
		q := url.Values{"event": {body.Event}}
		if body.Volatile {
			q.Set("volatile", "true")
		}
		return target + "?" + q.Encode(), "application/octet-stream", []byte(dataArg), nil
	}
	payload, _ = json.Marshal(body)
	return target, "application/json", payload, nil
}

// data is DATA, the last argument, read from stdin when it is "-".
func (o options) data(stdin io.Reader) (string, error) {
	targets := 0
	for _, s := range []string{o.user, o.namespace} {
		if s != "" {
			targets++
		}
	}
	want := 2 - targets
	if targets > 1 || len(o.args) != want {
		return "", errors.New("give ROOM and DATA, or -user USER DATA, or -namespace NS DATA (flags go first)")
	}
	dataArg := o.args[want-1]
	if dataArg == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxStdin+1))
		if err != nil {
			return "", fmt.Errorf("reading stdin: %w", err)
		}
		if len(b) > maxStdin {
			// Cut short, it would be published truncated.
			return "", fmt.Errorf("stdin holds more than %d MiB, more than any relay accepts", maxStdin>>20)
		}
		dataArg = string(b)
	}
	return dataArg, nil
}

// body is the publish body of dataArg with the flags' event, sender and
// exclusions.
func (o options) body(dataArg string) (publishBody, error) {
	body := publishBody{Event: o.event, Volatile: o.volatile}
	if o.isJSON {
		if !json.Valid([]byte(dataArg)) {
			return body, errors.New("-json: DATA is not a JSON value")
		}
		body.Data = json.RawMessage(dataArg)
	} else {
		body.Data, _ = json.Marshal(dataArg)
	}
	if err := rooms.ValidateEventName(o.event); err != nil {
		return body, fmt.Errorf("-event: %w", err)
	}
	if o.as != "" {
		u, name, _ := strings.Cut(o.as, ":")
		if err := rooms.ValidateUserID(u); err != nil {
			return body, fmt.Errorf("-as: %w", err)
		}
		body.From = &rooms.Sender{User: u, Name: cmpOr(name, u)}
	}
	for _, c := range strings.Split(o.exclude, ",") {
		if c = strings.TrimSpace(c); c != "" {
			body.Exclude = append(body.Exclude, c)
		}
	}
	return body, nil
}

// target is the route to publish to: a user's, a namespace's, several
// rooms' (named in body) or one room's.
func (o options) target(body *publishBody) (string, error) {
	target, err := baseURL(o.base)
	if err != nil {
		return "", err
	}
	switch {
	case o.user != "":
		if err := rooms.ValidateUserID(o.user); err != nil {
			return "", fmt.Errorf("-user: %w", err)
		}
		return target + "/v1/users/" + url.PathEscape(o.user) + "/events", nil
	case o.namespace != "":
		return target + "/v1/namespaces/" + url.PathEscape(o.namespace) + "/events", nil
	case strings.Contains(o.args[0], ","):
		for _, name := range strings.Split(o.args[0], ",") {
			room, err := rooms.ParseRoom(strings.TrimSpace(name))
			if err != nil {
				return "", err
			}
			body.Rooms = append(body.Rooms, room.String())
		}
		return target + "/v1/events", nil
	default:
		room, err := rooms.ParseRoom(o.args[0])
		if err != nil {
			return "", err
		}
		return target + "/v1/rooms/" + url.PathEscape(room.String()) + "/events", nil
	}
}

// send publishes and prints the relay's answer; it returns the exit code.
func (o options) send(ctx context.Context, target, contentType string, payload []byte, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		fmt.Fprintln(stderr, "roomcast pub:", err)
		fmt.Fprintln(stderr, config.CommandHint("pub"))
		return 2
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "roomcast-pub")
	if o.credential != "" {
		req.Header.Set("Authorization", "Bearer "+o.credential)
	}
	if o.idemKey != "" {
		req.Header.Set("Idempotency-Key", o.idemKey)
	}
	resp, answer, ok := send(req, 1<<20, stderr)
	if !ok {
		return 1
	}
	if resp.StatusCode != http.StatusAccepted {
		fmt.Fprintf(stderr, "roomcast pub: %s: %s\n", resp.Status, refusal(resp, answer))
		return 1
	}
	if resp.Header.Get("Idempotent-Replayed") == "true" {
		fmt.Fprintln(stderr, "roomcast pub: an earlier publish with this -idempotency-key answered; nothing was published again")
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(answer)))
	return 0
}

// publishBody is the JSON body of every publish route.
type publishBody struct {
	Rooms    []string        `json:"rooms,omitempty"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	Volatile bool            `json:"volatile,omitempty"`
	From     *rooms.Sender   `json:"from,omitempty"`
	Exclude  []string        `json:"exclude,omitempty"`
}

// refusal describes a refused publish from its error body, with a hint
// where the status has a usual cause.
func refusal(resp *http.Response, answer []byte) string {
	var body struct {
		Error struct{ Code, Message string }
	}
	msg := strings.TrimSpace(string(answer))
	if json.Unmarshal(answer, &body) == nil && body.Error.Code != "" {
		msg = body.Error.Code + ": " + body.Error.Message
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		msg += " (pass a user token with -token or $ROOMCAST_TOKEN, or the API key with -api-key)"
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		msg += " (retry after " + ra + " s)"
	}
	// After 503 outcome_unknown the event may be stored: only a resend
	// with the answer's key is stored once, and the key is in a header
	// the user would not otherwise see.
	if key := resp.Header.Get("Idempotency-Key"); key != "" && resp.StatusCode == http.StatusServiceUnavailable {
		msg += "\nthe event may have been published: resend it with -idempotency-key " + key +
			" (and the same ROOM, DATA and flags), which publishes it at most once; a plain re-run may publish it twice"
	}
	return msg
}

// baseURL checks the relay's base URL.
func baseURL(base string) (string, error) {
	b, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" {
		return "", fmt.Errorf("-url %q: must be an http:// or https:// URL", base)
	}
	if b.RawQuery != "" || b.ForceQuery || b.Fragment != "" {
		// The route is appended to the URL: it would land in its query.
		return "", fmt.Errorf("-url %q: the relay's base URL takes no query or fragment", base)
	}
	return b.String(), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// send sends req on a connection of its own and reads at most limit bytes
// of the answer; it reports a failure on stderr and says whether there is
// an answer to look at.
func send(req *http.Request, limit int64, stderr io.Writer) (*http.Response, []byte, bool) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "roomcast pub:", err)
		return nil, nil, false
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		fmt.Fprintln(stderr, "roomcast pub: reading the answer:", err)
		return nil, nil, false
	}
	return resp, answer, true
}
