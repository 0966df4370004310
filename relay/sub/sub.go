// Package sub is the `roomcast sub ROOM` command: it prints a room's events
// and resumes after disconnects.
//
// It reads the stream with github.com/r3labs/sse/v2's Client, an SSE parser
// roomcast did not write, and wraps the flaws that client has as a
// long-running subscriber:
//   - its line scanner stops at 64 KiB, less than one full-size event;
//   - a stream the server ends cleanly returns nil and is not retried;
//   - its default backoff gives up after 15 minutes and ignores the context;
//   - it ignores the server's retry: field and knows nothing of
//     roomcast:closing's reconnect_ms;
//   - it retries a request that can never succeed (a 400) forever.
package sub

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/rooms"
)

// maxEventSize bounds one SSE event as the client reads it. The relay's
// largest publish body (64 KiB by default, 16 MiB at most) grows when sent
// as a JSON string or base64 and is wrapped in the envelope and cursor. An
// event over the bound would fail the stream at the same place on every
// reconnect, so the bound is generous: the scanner grows its buffer only as
// far as the events it meets need.
const maxEventSize = 32 << 20

// minPause keeps a server that ends every stream at once from being
// hammered, whatever retry: it asks for.
const minPause = 100 * time.Millisecond

const usage = `Usage: roomcast sub [flags] ROOM

Prints the events of ROOM as they are published, one per line on stdout,
and system events (roomcast:*) on stderr. It resumes after disconnects from
the last event seen, without gaps or repeats, until interrupted.

Flags:
`

// Main runs the command with args (after "sub") and returns its exit code:
// 0 when ctx is cancelled, 1 when the relay refuses the stream for good
// (such as a 404 from a wrong -url), 2 for a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomcast sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultURL := os.Getenv("ROOMCAST_URL")
	if defaultURL == "" {
		defaultURL = "http://127.0.0.1:8080"
	}
	base := fs.String("url", defaultURL, "base URL of the relay ($ROOMCAST_URL)")
	format := fs.String("format", "json", "json: one envelope per line; text: \"event room from: data\"")
	lastID := fs.String("last-event-id", "", "start after this cursor (the stream's id: field, which sub prints when it stops)")
	multi := fs.Bool("multi", false, "ROOM is a comma-separated list of rooms carried by one stream")
	tok := fs.String("token", os.Getenv("ROOMCAST_TOKEN"), "user token (JWT) or API key sent as Authorization: Bearer ($ROOMCAST_TOKEN; mint one with roomcast token)")
	config.HideDefaults(fs, "token")
	idle := fs.Duration("idle-timeout", time.Minute,
		"reconnect when the stream stays silent this long; the relay pings every 15s by default (0 disables)")
	fail := func(err error) int {
		fmt.Fprintln(stderr, "roomcast sub:", err)
		fmt.Fprintln(stderr, config.CommandHint("sub"))
		return 2
	}
	if err := config.ParseCommand(fs, args, usage, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail(err)
	}
	if fs.NArg() != 1 {
		return fail(errors.New("exactly one ROOM argument is needed (flags go before it)"))
	}
	if *format != "json" && *format != "text" {
		return fail(fmt.Errorf("-format %q: must be json or text", *format))
	}
	target, err := streamURL(*base, fs.Arg(0), *multi)
	if err != nil {
		return fail(err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()

	s := &subscriber{stdout: stdout, stderr: stderr, text: *format == "text", cancel: cancel, retry: time.Second}
	s.backoff = backoff.NewExponentialBackOff()
	s.backoff.MaxElapsedTime = 0 // never give up: a relay may be down for longer than 15 minutes

	c := sse.NewClient(target, sse.ClientMaxBufferSize(maxEventSize))
	c.Connection = &http.Client{Transport: transport}
	if *idle > 0 {
		c.Connection.Transport = idleTransport{transport, *idle}
	}
	c.ResponseValidator = validateResponse
	if *tok != "" {
		// A header, not ?access_token=: the relay refuses query tokens by
		// default, and URLs end up in logs.
		c.Headers["Authorization"] = "Bearer " + *tok
	}
	c.ReconnectStrategy = backoff.WithContext(s.backoff, ctx)
	c.ReconnectNotify = func(err error, next time.Duration) {
		fmt.Fprintf(stderr, "roomcast sub: %v; reconnecting in %s\n", err, next.Round(time.Millisecond))
	}
	// One Client serves the whole run, so the Last-Event-ID it records from
	// each id: line carries across every reconnect, ours and its own.
	if *lastID != "" {
		c.LastEventID.Store([]byte(*lastID))
	}
	return s.run(ctx, c)
}

// streamURL is the stream of room, or of the comma-separated rooms of a
// multi-room stream. Names are checked here so that a typo fails at once
// instead of being retried.
func streamURL(base, arg string, multi bool) (string, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-url %q: must be an http:// or https:// URL", base)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		// The routes are appended to the URL: they would land in its query.
		return "", fmt.Errorf("-url %q: the relay's base URL takes no query or fragment", base)
	}
	if !multi {
		room, err := rooms.ParseRoom(arg)
		if err != nil {
			if strings.Contains(arg, ",") {
				err = fmt.Errorf("%w (use -multi for several rooms)", err)
			}
			return "", err
		}
		return u.String() + "/v1/rooms/" + url.PathEscape(room.String()) + "/events", nil
	}
	q := url.Values{}
	for _, name := range strings.Split(arg, ",") {
		room, err := rooms.ParseRoom(strings.TrimSpace(name))
		if err != nil {
			return "", err
		}
		q.Add("room", room.String())
	}
	return u.String() + "/v1/stream?" + q.Encode(), nil
}

// validateResponse accepts an event stream. Other answers are errors; a 4xx
// other than 408 and 429 is permanent, since asking again cannot change it,
// while a 5xx (503 from a draining relay) is retried.
func validateResponse(_ *sse.Client, resp *http.Response) error {
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(ct, "text/event-stream") {
		return nil
	}
	// The client closes the body only when the answer is accepted.
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	err := fmt.Errorf("%s from %s", resp.Status, resp.Request.URL.Redacted())
	if body.Error.Code != "" {
		err = fmt.Errorf("%s from %s: %s: %s", resp.Status, resp.Request.URL.Redacted(), body.Error.Code, body.Error.Message)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		err = fmt.Errorf("%w (pass a user token with -token or $ROOMCAST_TOKEN; roomcast token mints one)", err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return backoff.Permanent(fmt.Errorf("%s answers %q, not an event stream", resp.Request.URL.Redacted(), ct))
	case resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return backoff.Permanent(err)
	}
	return err
}

// subscriber prints one stream's events. The sse.Client calls handle on
// the goroutine that runs run, so its fields need no locking.
type subscriber struct {
	stdout, stderr io.Writer
	text           bool
	backoff        *backoff.ExponentialBackOff
	cancel         context.CancelFunc
	writeErr       error

	retry   time.Duration // the server's retry: field
	closing time.Duration // reconnect_ms of the last roomcast:closing, 0 when none
}

func (s *subscriber) run(ctx context.Context, c *sse.Client) int {
	for {
		// Errors are retried inside, with backoff; it returns nil when the
		// server ends the stream cleanly, and an error when retrying stops.
		err := c.SubscribeWithContext(ctx, "", s.handle)
		switch {
		case s.writeErr != nil:
			fmt.Fprintln(s.stderr, "roomcast sub:", s.writeErr)
			return 1
		case ctx.Err() != nil:
			return s.stopped(c)
		case err != nil:
			fmt.Fprintln(s.stderr, "roomcast sub:", err)
			return 1
		}
		pause := s.retry
		if s.closing > 0 {
			pause = s.closing
		}
		pause = max(pause, minPause)
		s.closing = 0
		fmt.Fprintf(s.stderr, "roomcast sub: stream ended; reconnecting in %s\n", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.stopped(c)
		case <-t.C:
		}
	}
}

// stopped ends a run the user interrupted. Cursors are opaque (an
// envelope's id is not one), so this is where a user learns one to pick up
// from later.
func (s *subscriber) stopped(c *sse.Client) int {
	if last, _ := c.LastEventID.Load().([]byte); len(last) > 0 {
		fmt.Fprintf(s.stderr, "roomcast sub: stopped; resume with -last-event-id=%s\n", last)
	}
	return 0
}

func (s *subscriber) handle(msg *sse.Event) {
	if ms, err := strconv.Atoi(string(msg.Retry)); err == nil && ms >= 0 {
		s.retry = time.Duration(ms) * time.Millisecond
	}
	if len(msg.Event) == 0 && len(msg.Data) == 0 {
		return // a retry: field alone
	}
	name := string(msg.Event)
	if name == "" {
		name = "message"
	}
	if strings.HasPrefix(name, rooms.ReservedPrefix) {
		s.system(name, msg.Data)
		return
	}
	line := append(msg.Data, '\n')
	if s.text {
		line = textLine(name, msg.Data)
	}
	if _, err := s.stdout.Write(line); err != nil && s.writeErr == nil {
		s.writeErr = fmt.Errorf("writing output: %w", err)
		s.cancel()
	}
}

// system reports a roomcast:* event on stderr and acts on it.
func (s *subscriber) system(name string, data []byte) {
	switch name {
	case "roomcast:connected":
		// The connection works again: the next failure starts over from a
		// short delay instead of where the last outage left the backoff.
		s.backoff.Reset()
	case "roomcast:closing":
		var d struct {
			ReconnectMS int `json:"reconnect_ms"`
		}
		if json.Unmarshal(data, &d) == nil && d.ReconnectMS > 0 {
			s.closing = time.Duration(d.ReconnectMS) * time.Millisecond
		}
	}
	fmt.Fprintf(s.stderr, "%s %s\n", name, data)
}

// textLine formats an envelope as "event room from: data". A string that
// fits on a line is printed bare; any other data as JSON.
func textLine(name string, envelope []byte) []byte {
	var env struct {
		Room     string          `json:"room"`
		Data     json.RawMessage `json:"data"`
		Encoding string          `json:"encoding"`
		From     *rooms.Sender   `json:"from"`
		Client   *string         `json:"client"`
	}
	if err := json.Unmarshal(envelope, &env); err != nil {
		return fmt.Appendf(nil, "%s ? ?: %s\n", name, envelope)
	}
	from := "-"
	switch {
	case env.From != nil && env.From.Name != "":
		from = env.From.Name
	case env.From != nil && env.From.User != "":
		from = env.From.User
	case env.Client != nil:
		from = *env.Client
	}
	data := string(env.Data)
	var str string
	if env.Encoding == "" && strings.HasPrefix(data, `"`) && json.Unmarshal(env.Data, &str) == nil && !strings.ContainsAny(str, "\r\n") {
		data = str
	}
	return fmt.Appendf(nil, "%s %s %s: %s\n", name, env.Room, from, data)
}

// idleTransport ends a response that stays silent for longer than timeout.
// The relay writes a heartbeat comment on idle streams, so silence means
// the path to it is dead even where TCP has not noticed, such as behind a
// proxy that keeps its side of the connection open.
type idleTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

func (t idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(t.timeout, cancel)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		timer.Stop()
		cancel()
		return nil, err
	}
	resp.Body = &idleBody{ReadCloser: resp.Body, timer: timer, timeout: t.timeout, cancel: cancel}
	return resp, nil
}

type idleBody struct {
	io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	cancel  context.CancelFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
