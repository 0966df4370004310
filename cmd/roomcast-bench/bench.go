package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/rooms"
)

const usage = `Usage: roomcast bench [flags]
   or: roomcast-bench [flags]

Connects -n SSE subscribers (and -polls long-pollers) to a room of the
relays at -targets, publishes -messages events (or -rate × -duration) at
-rate per second, and reports deliveries per second, latency percentiles,
events lost, duplicated or out of order, and, for every -server-pid, the
relay's CPU time per delivery and memory per connection. Targets must be
loopback addresses. Exits 0 when every event reached every subscriber once
and in order, 1 otherwise, 2 for a usage error.

Publishes carry -api-key, which the relay exempts from rate limits; start
the relay with its connection limits raised above -n (for instance
ROOMCAST_MAX_CONNS_PER_IP, and ROOMCAST_MAX_POLL_SESSIONS_PER_CALLER above
-polls) and anonymous subscribing allowed, or give
subscribers a token with -subscriber-token.

Once connected, SSE streams are read as -reader says: "epoll" (Linux, the
default there) reads them from one loop per GOMAXPROCS, each waiting on an
epoll set of many sockets and reading each ready one once into a shared
buffer; "goroutine" reads each stream with a goroutine and a buffer of its
own. The epoll reader needs less memory and no second read (EAGAIN) per
frame; both spend most of their CPU in the read that returns a frame. The
load generator's CPU and reader are in every report: compare the two on
the same relay.

Flags:
`

// Main runs the command with args (after "bench") and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, format, jsonFile, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomcast bench:", err)
		fmt.Fprintln(stderr, config.CommandHint("bench"))
		return 2
	}
	rep, err := Run(ctx, cfg, stderr)
	if rep != nil {
		if jsonFile != "" {
			if werr := writeJSONFile(jsonFile, rep); werr != nil {
				fmt.Fprintln(stderr, "roomcast bench:", werr)
				return 1
			}
		}
		if format == "json" {
			_ = rep.WriteJSON(stdout)
		} else {
			_ = rep.WriteTable(stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomcast bench:", err)
		return 1
	}
	if !rep.OK {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (cfg Config, format, jsonFile string, err error) {
	fs := flag.NewFlagSet("roomcast bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultTarget := os.Getenv("ROOMCAST_URL")
	if defaultTarget == "" {
		defaultTarget = "http://127.0.0.1:8080"
	}
	targets := fs.String("targets", defaultTarget, "comma-separated base URLs of the relays (loopback only; $ROOMCAST_URL)")
	fs.BoolVar(&cfg.PublishSpread, "publish-spread", false, "spread publishers over the targets (default: all publish to the first)")
	fs.StringVar(&cfg.Room, "room", defaultRoom, "room to subscribe and publish to")
	fs.StringVar(&cfg.Event, "event", defaultEvent, "event name to publish")
	fs.IntVar(&cfg.Subscribers, "n", 100, "SSE subscribers")
	fs.IntVar(&cfg.Polls, "polls", 0, "long-poll subscribers")
	fs.IntVar(&cfg.Publishers, "publishers", 1, "publishers, sharing -rate; each sends one request at a time")
	fs.Float64Var(&cfg.Rate, "rate", 50, "messages per second, all publishers together")
	fs.IntVar(&cfg.Messages, "messages", 0, "messages to publish (0: -rate × -duration)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "publish window when -messages is 0")
	fs.IntVar(&cfg.Size, "size", defaultSize, "bytes of each message body (at least its header, ~30 B)")
	fs.DurationVar(&cfg.Warmup, "warmup", 3*time.Second, "idle time with every subscriber connected before publishing (idle memory and CPU are measured over it)")
	fs.BoolVar(&cfg.Volatile, "volatile", false, "publish volatile events (losses are then allowed)")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("ROOMCAST_API_KEY"), "API key sent as Authorization: Bearer on publishes ($ROOMCAST_API_KEY)")
	config.HideDefaults(fs, "api-key")
	fs.StringVar(&cfg.SubscriberToken, "subscriber-token", "", "bearer token sent by subscribers (default: anonymous)")
	var pids pidList
	fs.Var(&pids, "server-pid", "pid of a relay under test, for CPU and memory figures (repeat for several)")
	fs.IntVar(&cfg.Sources, "sources", 0, "source addresses 127.0.0.1… to connect from (0: one per 16,384 subscribers)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", defaultConcurrency, "connection attempts in flight")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", time.Minute, "bound of the connect phase")
	fs.DurationVar(&cfg.Settle, "settle", 10*time.Second, "how long to wait for deliveries after the last publish")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "hard deadline of the whole run")
	fs.DurationVar(&cfg.PollHold, "poll-hold", 25*time.Second, "hold each long-poll asks for")
	fs.StringVar(&cfg.Label, "label", "", "name of the run in its report")
	fs.BoolVar(&cfg.H2C, "h2c", false, "SSE subscribers speak HTTP/2 without TLS, many streams per connection, as a proxy would (the relay needs ROOMCAST_H2C=true); each read by a goroutine")
	fs.StringVar(&cfg.Reader, "reader", defaultReader, "how connected SSE streams are read: epoll (Linux only) or goroutine")
	fs.StringVar(&format, "format", "table", "table or json, on stdout")
	fs.StringVar(&jsonFile, "json", "", "also write the JSON report to this file")
	if err := config.ParseCommand(fs, args, usage, stderr); err != nil {
		return cfg, "", "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := checkReader(cfg.Reader); err != nil {
		return cfg, "", "", err
	}
	if format != "table" && format != "json" {
		return cfg, "", "", fmt.Errorf("-format %q: must be table or json", format)
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	for _, t := range cfg.Targets {
		if _, err := parseTarget(t); err != nil {
			return cfg, "", "", err
		}
	}
	if _, err := rooms.ParseRoom(cfg.Room); err != nil {
		return cfg, "", "", fmt.Errorf("-room: %w", err)
	}
	if err := rooms.ValidateEventName(cfg.Event); err != nil {
		return cfg, "", "", fmt.Errorf("-event: %w", err)
	}
	cfg.ServerPIDs = pids
	return cfg, format, jsonFile, nil
}

// pidList is a repeatable -server-pid.
type pidList []int

func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a pid", f)
		}
		*p = append(*p, n)
	}
	return nil
}

func writeJSONFile(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
