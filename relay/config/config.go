// Package config reads roomcast's configuration: every option is a command
// line flag and a ROOMCAST_* environment variable of the same name, flags
// winning. PORT and REDIS_URL, the names container platforms set, are
// accepted as aliases of ROOMCAST_ADDR's port and ROOMCAST_REDIS_URL.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is the relay's whole configuration.
type Config struct {
	Addr              string
	RedisURL          string
	RedisSentinel     string
	LogLevel          slog.Level
	LogFormat         string
	MaxPayload        int64
	MaxBatchBytes     int64
	Heartbeat         time.Duration
	RetryMin          time.Duration
	RetryMax          time.Duration
	WriteTimeout      time.Duration
	PollTimeout       time.Duration
	PollMax           time.Duration
	HistorySize       int
	HistoryAge        time.Duration
	QueueSize         int
	MaxRooms          int
	SessionTTL        time.Duration
	PollSessionTTL    time.Duration
	MaxPollSessions   int
	DrainTimeout      time.Duration
	CursorKey         string
	TCPUserTimeout    time.Duration
	ReadHeaderTimeout time.Duration
	ReadBodyTimeout   time.Duration
	IdleTimeout       time.Duration
	Metrics           bool
	MetricsToken      string
	MetricsAddr       string
	DebugAddr         string
	BatchMonitor      bool
	Compress          string
	MaxStreamLifetime time.Duration
	Config            string
	JWTSecret         string
	JWTPublicKey      string
	JWTIssuer         string
	JWTAudience       string
	JWTLeeway         time.Duration
	APIKey            string
	AllowQueryTokens  bool
	Open              bool
	AllowedOrigins    string
	AllowedHosts      string
	PublishRate       float64
	PublishBurst      int
	MaxConnsPerUser   int
	MaxConnsPerIP     int
	TrustedProxies    string
	ClientIPHeader    string
	PresenceGrace     time.Duration
	PresenceTTL       time.Duration
	DevTokens         string
	DevTokenKeyFile   string
	Hijack            bool
	H2C               bool
	H2MaxStreams      int
	WriteCoalesce     time.Duration

	// The per-caller publish total, beside the per-namespace rate.
	PublishCallerRate  float64
	PublishCallerBurst int

	// Per-caller (user, else address) and global bounds on the state
	// requests leave behind.
	MaxPollSessionsPerCaller    int
	MaxPollPresencePerCaller    int
	MaxPollPresence             int
	MaxClientIDsPerCaller       int
	MaxIdempotencyKeysPerCaller int
	MaxIdempotencyKeys          int
	MaxTicketsPerUser           int
	MaxTickets                  int
	MaxRateBuckets              int
	MaxChannels                 int
	MaxSessionsPerCaller        int
	MaxSessions                 int

	// given maps a flag's name to how it was set when not by default: the
	// flag ("-addr"), its variable ("ROOMCAST_ADDR") or an alias ("PORT").
	given map[string]string
}

// Name is how the setting of flag was given, for messages that ask to fix
// it: "-addr" on the command line, "ROOMCAST_ADDR" or its alias "PORT" in
// the environment, and "-addr" when it kept its default.
func (c Config) Name(flag string) string {
	if n, ok := c.given[flag]; ok {
		return n
	}
	return "-" + flag
}

// KeysConfigured reports whether any credential is configured; without one
// the relay runs in open mode.
func (c Config) KeysConfigured() bool {
	return c.JWTSecret != "" || c.JWTPublicKey != "" || c.APIKey != ""
}

// LoopbackOnly reports whether the relay listens on loopback addresses only.
func (c Config) LoopbackOnly() bool {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Option describes one setting, for --help and the operations docs.
type Option struct {
	Flag    string
	Env     string
	Default string
	Usage   string
}

// binding ties an Option to where its value goes.
type binding struct {
	Option
	value flag.Value
}

func bindings(c *Config) []binding {
	b := []binding{
		{Option{"addr", "ROOMCAST_ADDR", "127.0.0.1:8080", "address to listen on (PORT=n means :n)"}, stringVar(&c.Addr)},
		{Option{"redis-url", "ROOMCAST_REDIS_URL", "", "redis:// or rediss:// URL of the Redis backbone (alias REDIS_URL); empty runs the embedded in-memory backbone"}, stringVar(&c.RedisURL)},
		{Option{"redis-sentinel-master", "ROOMCAST_REDIS_SENTINEL_MASTER", "", "name of the primary Redis Sentinel watches; -redis-url then lists the sentinels: redis://host:26379?addr=host2:26379&addr=host3:26379"}, stringVar(&c.RedisSentinel)},
		{Option{"log-level", "ROOMCAST_LOG_LEVEL", "info", "debug, info, warn or error"}, levelVar(&c.LogLevel)},
		{Option{"log-format", "ROOMCAST_LOG_FORMAT", "auto", "json, text, or auto (text on a terminal)"}, choiceVar(&c.LogFormat, "auto", "json", "text")},
		{Option{"max-payload", "ROOMCAST_MAX_PAYLOAD", "65536", "largest publish body in bytes"}, int64Var(&c.MaxPayload, 1, maxPayloadLimit)},
		{Option{"max-batch-bytes", "ROOMCAST_MAX_BATCH_BYTES", "4194304", "largest POST /v1/batch body in bytes"}, int64Var(&c.MaxBatchBytes, 1, maxBatchLimit)},
		{Option{"heartbeat", "ROOMCAST_HEARTBEAT", "15s", "interval of keep-alive comments on streams"}, durationVar(&c.Heartbeat, time.Second)},
		{Option{"retry-min", "ROOMCAST_RETRY_MIN", "1s", "lower bound of the randomised reconnect delay sent to clients"}, durationVar(&c.RetryMin, 100*time.Millisecond)},
		{Option{"retry-max", "ROOMCAST_RETRY_MAX", "5s", "upper bound of the randomised reconnect delay sent to clients"}, durationVar(&c.RetryMax, 100*time.Millisecond)},
		{Option{"write-timeout", "ROOMCAST_WRITE_TIMEOUT", "10s", "deadline of each write to a stream; slower clients are dropped"}, durationVar(&c.WriteTimeout, 100*time.Millisecond)},
		{Option{"poll-timeout", "ROOMCAST_POLL_TIMEOUT", "25s", "default hold of a long-poll"}, durationVar(&c.PollTimeout, time.Second)},
		{Option{"poll-max", "ROOMCAST_POLL_MAX", "55s", "longest hold a long-poll may ask for"}, durationVar(&c.PollMax, time.Second)},
		{Option{"history-size", "ROOMCAST_HISTORY_SIZE", "1000", "events retained per room"}, intVar(&c.HistorySize, 1, 1_000_000)},
		{Option{"history-age", "ROOMCAST_HISTORY_AGE", "5m", "how long events (and idempotency keys) are retained"}, durationVar(&c.HistoryAge, time.Second)},
		{Option{"queue-size", "ROOMCAST_QUEUE_SIZE", "1024", "events queued per connection before it is dropped as a slow consumer"}, intVar(&c.QueueSize, 2, 1_000_000)},
		{Option{"max-rooms", "ROOMCAST_MAX_ROOMS", "64", "rooms per multi-room stream or poll"}, intVar(&c.MaxRooms, 1, 1024)},
		{Option{"session-ttl", "ROOMCAST_SESSION_TTL", "5m", "how long a multi-room stream's room set outlives its connection"}, durationVar(&c.SessionTTL, time.Second)},
		{Option{"poll-session-ttl", "ROOMCAST_POLL_SESSION_TTL", "5s", "how long a long-poller's rooms stay joined after an answer, so that its next poll is answered from memory"}, durationVar(&c.PollSessionTTL, 100*time.Millisecond)},
		{Option{"max-poll-sessions", "ROOMCAST_MAX_POLL_SESSIONS", "65536", "long-pollers kept joined between polls at once (0: none; each poll then reads history)"}, intVar(&c.MaxPollSessions, 0, 10_000_000)},
		{Option{"drain-timeout", "ROOMCAST_DRAIN_TIMEOUT", "10s", "longest graceful shutdown after SIGTERM"}, durationVar(&c.DrainTimeout, 0)},
		{Option{"cursor-key", "ROOMCAST_CURSOR_KEY", "", "secret (16+ bytes) signing cursors; random per process when empty"}, stringVar(&c.CursorKey)},
		{Option{"tcp-user-timeout", "ROOMCAST_TCP_USER_TIMEOUT", "30s", "drop connections whose data stays unacknowledged this long (0 disables)"}, durationVar(&c.TCPUserTimeout, 0)},
		{Option{"read-header-timeout", "ROOMCAST_READ_HEADER_TIMEOUT", "10s", "time allowed to read request headers"}, durationVar(&c.ReadHeaderTimeout, 100*time.Millisecond)},
		{Option{"read-body-timeout", "ROOMCAST_READ_BODY_TIMEOUT", "15s", "time allowed to receive a request body after its headers (408 request_timeout past it)"}, durationVar(&c.ReadBodyTimeout, 100*time.Millisecond)},
		{Option{"idle-timeout", "ROOMCAST_IDLE_TIMEOUT", "120s", "keep-alive idle time between requests"}, durationVar(&c.IdleTimeout, time.Second)},
		{Option{"compress", "ROOMCAST_COMPRESS", "polls", "gzip for clients that accept it: off, polls, or all (streams too; ~0.8 MB per stream)"}, choiceVar(&c.Compress, "off", "polls", "all")},
		{Option{"max-stream-lifetime", "ROOMCAST_MAX_STREAM_LIFETIME", "0s", "close each stream cleanly after about this long (0: never), for platforms that cut long requests"}, durationVar(&c.MaxStreamLifetime, 0)},
		{Option{"config", "ROOMCAST_CONFIG", "", "TOML file with per-namespace rules"}, stringVar(&c.Config)},
		{Option{"jwt-secret", "ROOMCAST_JWT_SECRET", "", "HS256 key (32+ bytes) that user tokens are signed with"}, stringVar(&c.JWTSecret)},
		{Option{"jwt-public-key", "ROOMCAST_JWT_PUBLIC_KEY", "", "PEM file of the RS256 or ES256 public key that user tokens are signed with"}, stringVar(&c.JWTPublicKey)},
		{Option{"jwt-issuer", "ROOMCAST_JWT_ISSUER", "", "required iss claim of user tokens (empty: not checked)"}, stringVar(&c.JWTIssuer)},
		{Option{"jwt-audience", "ROOMCAST_JWT_AUDIENCE", "", "required aud claim of user tokens (empty: not checked)"}, stringVar(&c.JWTAudience)},
		{Option{"jwt-leeway", "ROOMCAST_JWT_LEEWAY", "5s", "clock skew allowed on exp and nbf"}, durationVar(&c.JWTLeeway, 0)},
		{Option{"api-key", "ROOMCAST_API_KEY", "", "server API key for backends: publish anywhere and as any user, moderate"}, stringVar(&c.APIKey)},
		{Option{"allow-query-tokens", "ROOMCAST_ALLOW_QUERY_TOKENS", "false", "accept ?access_token= on streams and polls (URLs end up in logs; prefer tickets)"}, boolVar(&c.AllowQueryTokens)},
		{Option{"open", "ROOMCAST_OPEN", "false", "allow running without any key on a non-loopback address (anyone may publish)"}, boolVar(&c.Open)},
		{Option{"allowed-origins", "ROOMCAST_ALLOWED_ORIGINS", "", "comma-separated origins allowed to call from browsers besides the relay's own; * for any, without credentials"}, stringVar(&c.AllowedOrigins)},
		{Option{"allowed-hosts", "ROOMCAST_ALLOWED_HOSTS", "", "comma-separated host names (Host header) the relay answers to: name, name:port or *.domain (empty: any; required with -open or -dev-tokens off loopback)"}, stringVar(&c.AllowedHosts)},
		{Option{"publish-rate", "ROOMCAST_PUBLISH_RATE", "20", "publishes per second per user (per address when anonymous)"}, float64Var(&c.PublishRate)},
		{Option{"publish-burst", "ROOMCAST_PUBLISH_BURST", "40", "publish burst per user"}, intVar(&c.PublishBurst, 1, 1_000_000)},
		{Option{"publish-caller-rate", "ROOMCAST_PUBLISH_CALLER_RATE", "50", "publishes per second per user (per address when anonymous), all namespaces and private messages together"}, float64Var(&c.PublishCallerRate)},
		{Option{"publish-caller-burst", "ROOMCAST_PUBLISH_CALLER_BURST", "100", "burst of all of a user's publishes together"}, intVar(&c.PublishCallerBurst, 1, 1_000_000)},
		{Option{"max-conns-per-user", "ROOMCAST_MAX_CONNS_PER_USER", "50", "concurrent streams and polls per user"}, intVar(&c.MaxConnsPerUser, 1, 10_000_000)},
		{Option{"max-conns-per-ip", "ROOMCAST_MAX_CONNS_PER_IP", "500", "concurrent streams and polls per client address"}, intVar(&c.MaxConnsPerIP, 1, 10_000_000)},
		{Option{"max-poll-sessions-per-caller", "ROOMCAST_MAX_POLL_SESSIONS_PER_CALLER", "500", "long-pollers one user (or address) may keep joined between polls; a poll past it gets 429 too_many_sessions"}, intVar(&c.MaxPollSessionsPerCaller, 1, 10_000_000)},
		{Option{"max-poll-presence-per-caller", "ROOMCAST_MAX_POLL_PRESENCE_PER_CALLER", "4096", "presence entries (one per room) one user (or address) may hold through long-polls; a poll past it gets 429 limit_exceeded"}, intVar(&c.MaxPollPresencePerCaller, 1, 10_000_000)},
		{Option{"max-poll-presence", "ROOMCAST_MAX_POLL_PRESENCE", "1048576", "presence entries long-polls may hold on this instance in all"}, intVar(&c.MaxPollPresence, 1, 100_000_000)},
		{Option{"max-client-ids-per-caller", "ROOMCAST_MAX_CLIENT_IDS_PER_CALLER", "4096", "client ids one user (or address) may hold bound through this instance (each for 2 minutes after its last stream or poll); a stream or poll binding one more gets 429 limit_exceeded"}, intVar(&c.MaxClientIDsPerCaller, 1, 10_000_000)},
		{Option{"max-idempotency-keys-per-caller", "ROOMCAST_MAX_IDEMPOTENCY_KEYS_PER_CALLER", "1000", "Idempotency-Key values remembered per user (or address) within the history age; a publish with a new key past it gets 429 limit_exceeded"}, intVar(&c.MaxIdempotencyKeysPerCaller, 1, 10_000_000)},
		{Option{"max-idempotency-keys", "ROOMCAST_MAX_IDEMPOTENCY_KEYS", "1000000", "Idempotency-Key values remembered through this instance in all"}, intVar(&c.MaxIdempotencyKeys, 1, 100_000_000)},
		{Option{"max-tickets-per-user", "ROOMCAST_MAX_TICKETS_PER_USER", "100", "unexpired tickets per user; POST /v1/tickets past it gets 429 limit_exceeded"}, intVar(&c.MaxTicketsPerUser, 1, 10_000_000)},
		{Option{"max-tickets", "ROOMCAST_MAX_TICKETS", "100000", "unexpired tickets issued by this instance in all"}, intVar(&c.MaxTickets, 1, 100_000_000)},
		{Option{"max-rate-buckets", "ROOMCAST_MAX_RATE_BUCKETS", "1000000", "rate-limit buckets kept in memory by this instance"}, intVar(&c.MaxRateBuckets, 1, 100_000_000)},
		{Option{"max-sessions-per-caller", "ROOMCAST_MAX_SESSIONS_PER_CALLER", "1000", "multi-room sessions one user (or address) may have kept, while their stream is open and ROOMCAST_SESSION_TTL after; a /v1/stream past it gets 429 too_many_sessions"}, intVar(&c.MaxSessionsPerCaller, 1, 10_000_000)},
		{Option{"max-sessions", "ROOMCAST_MAX_SESSIONS", "1000000", "multi-room sessions kept through this instance in all"}, intVar(&c.MaxSessions, 1, 100_000_000)},
		{Option{"max-channels", "ROOMCAST_MAX_CHANNELS", "1000000", "embedded backbone: channels kept at once (with history or subscribed); a publish or stream that needs one more gets 429 limit_exceeded"}, intVar(&c.MaxChannels, 1, 100_000_000)},
		{Option{"trusted-proxies", "ROOMCAST_TRUSTED_PROXIES", "", "comma-separated CIDRs of proxies whose -client-ip-header and X-Forwarded-Proto are believed"}, stringVar(&c.TrustedProxies)},
		{Option{"client-ip-header", "ROOMCAST_CLIENT_IP_HEADER", "X-Forwarded-For", "header trusted proxies name the client in: X-Forwarded-For (right-most untrusted hop) or Fly-Client-IP"}, choiceFoldVar(&c.ClientIPHeader, "X-Forwarded-For", "Fly-Client-IP")},
		{Option{"presence-grace", "ROOMCAST_PRESENCE_GRACE", "5s", "how long a user's last connection may be gone before roomcast:leave (a reconnect within it emits neither leave nor join)"}, durationVar(&c.PresenceGrace, 100*time.Millisecond)},
		{Option{"presence-ttl", "ROOMCAST_PRESENCE_TTL", "45s", "with Redis: how long an instance that stopped renewing (died) keeps its members listed"}, durationVar(&c.PresenceTTL, 3*time.Second)},
		{Option{"dev-tokens", "ROOMCAST_DEV_TOKENS", "auto", "POST /v1/dev/token gives anyone a development token: auto (only in open mode), true or false"}, choiceVar(&c.DevTokens, "auto", "true", "false")},
		{Option{"dev-token-key-file", "ROOMCAST_DEV_TOKEN_KEY_FILE", "", "open mode with the in-memory backbone: file keeping the development-token key across restarts, created when missing (empty: roomcast/dev-token-key in the user's cache directory)"}, stringVar(&c.DevTokenKeyFile)},
		{Option{"hijack", "ROOMCAST_HIJACK", "true", "take HTTP/1.1 streams over from net/http and write them from a shared pool (~8 KB per idle stream instead of ~40 KB)"}, boolVar(&c.Hijack)},
		{Option{"h2c", "ROOMCAST_H2C", "false", "also accept HTTP/2 without TLS (prior knowledge), for a proxy that multiplexes clients' streams over a few connections to the relay"}, boolVar(&c.H2C)},
		{Option{"h2c-max-streams", "ROOMCAST_H2C_MAX_STREAMS", "1000", "concurrent streams per HTTP/2 connection"}, intVar(&c.H2MaxStreams, 1, 1_000_000)},
		{Option{"write-coalesce", "ROOMCAST_WRITE_COALESCE", "10ms", "a hijacked stream written less than this long ago waits out the rest before its next write, so busy streams batch events into fewer writes; streams quieter than that are not delayed (0: write at once)"}, durationVar(&c.WriteCoalesce, 0)},
		{Option{"metrics", "ROOMCAST_METRICS", "true", "collect Prometheus metrics, served at /metrics on -metrics-addr"}, boolVar(&c.Metrics)},
		{Option{"metrics-addr", "ROOMCAST_METRICS_ADDR", "", "serve /metrics on this separate address, never on the relay's own; keep it private (empty: metrics are served nowhere)"}, stringVar(&c.MetricsAddr)},
		{Option{"metrics-token", "ROOMCAST_METRICS_TOKEN", "", "bearer token /metrics requires; empty serves it to anyone who reaches -metrics-addr"}, stringVar(&c.MetricsToken)},
		{Option{"batch-runtime-monitor", "ROOMCAST_BATCH_RUNTIME_MONITOR", "true", "Linux: run the Go runtime's monitor thread as SCHED_BATCH, so that its wake-ups do not preempt the stream writers (7-20% less CPU per delivery on one core)"}, boolVar(&c.BatchMonitor)},
		{Option{"debug-addr", "ROOMCAST_DEBUG_ADDR", "", "serve Go's runtime profiles (/debug/pprof/) on this separate address; keep it private (empty: off)"}, stringVar(&c.DebugAddr)},
	}
	return b
}

// maxPayloadLimit bounds every publish body limit, global or a namespace's.
const maxPayloadLimit = 16 << 20

// maxBatchLimit bounds ROOMCAST_MAX_BATCH_BYTES: a batch is read whole
// before its events are published.
const maxBatchLimit = 256 << 20

// Options lists every setting with its flag, variable and default.
func Options() []Option {
	var c Config
	bs := bindings(&c)
	out := make([]Option, len(bs))
	for i, b := range bs {
		out[i] = b.Option
	}
	return out
}

// Commands is the command summary that heads the usage, and that an
// unknown command or `roomcast help` prints.
const Commands = `Usage: roomcast [flags]                 run the relay
       roomcast pub [flags] ROOM DATA   publish an event (see roomcast pub -h)
       roomcast sub [flags] ROOM        print a room's events, resuming after disconnects
       roomcast token [flags] USER      mint a development JWT from ROOMCAST_JWT_SECRET
       roomcast healthcheck             exit 0 when a running relay is ready (see roomcast healthcheck -h)
       roomcast bench [flags]           load-test a relay (see roomcast bench -h)
       roomcast version                 print the version (also --version)
       roomcast help                    print this help
`

// Hint follows every configuration error instead of the whole usage.
const Hint = "roomcast -h lists every flag and variable; roomcast help lists the commands"

// Load reads the configuration from args (flags, without the program name)
// and getenv. An invalid value is an error naming the flag or variable it
// was given by; -h writes the usage to usageOut and returns flag.ErrHelp.
func Load(args []string, getenv func(string) string, usageOut io.Writer) (Config, error) {
	var c Config
	c.given = map[string]string{}
	fs := flag.NewFlagSet("roomcast", flag.ContinueOnError)
	// The flag package prints the whole usage around a parse error: the
	// caller prints the error alone, with a hint, and the usage only on -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	bs := bindings(&c)
	for _, b := range bs {
		if err := b.value.Set(b.Default); err != nil {
			return Config{}, fmt.Errorf("default of -%s: %w", b.Flag, err)
		}
	}
	// Registered before the environment is read: -h shows each flag's
	// default as its value at registration, and the environment's values
	// include secrets (the JWT secret, the API key, a Redis password).
	for _, b := range bs {
		fs.Var(b.value, b.Flag, b.Usage+" ($"+b.Env+")")
	}
	aliases := map[string]string{"ROOMCAST_ADDR": "PORT", "ROOMCAST_REDIS_URL": "REDIS_URL"}
	for _, b := range bs {
		name, v := b.Env, getenv(b.Env)
		if alias, ok := aliases[b.Env]; ok && v == "" && getenv(alias) != "" {
			name, v = alias, getenv(alias)
			if alias == "PORT" {
				if !validPort(v) {
					return Config{}, fmt.Errorf("PORT=%q is not a port number (0 to 65535)", v)
				}
				v = ":" + v
			}
		}
		if v == "" {
			continue
		}
		if err := b.value.Set(v); err != nil {
			return Config{}, fmt.Errorf("%s=%q: %w", name, v, err)
		}
		c.given[b.Flag] = name
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(usageOut, Commands)
			fmt.Fprintln(usageOut, "\nEvery flag is also an environment variable (PORT=n is ROOMCAST_ADDR=:n, REDIS_URL is ROOMCAST_REDIS_URL):")
			fs.SetOutput(usageOut)
			fs.PrintDefaults()
		}
		return Config{}, err
	}
	fs.Visit(func(f *flag.Flag) { c.given[f.Name] = "-" + f.Name })
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unknown command %q\n\n%s", fs.Arg(0), Commands)
	}
	return c, c.validate()
}

// validPort reports whether s is a port number, 0 (any free port) to 65535.
func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535 && s[0] != '+' && s[0] != '-'
}

// checkAddr checks a listen address: host:port, the port a number from 0
// (any free port) to 65535, which net.SplitHostPort does not check.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		return fmt.Errorf("%w (want host:port, such as 127.0.0.1:8080 or :8080)", err)
	case !validPort(port):
		return fmt.Errorf("port %q is not a port number (0 to 65535)", port)
	case strings.ContainsAny(host, "/ "):
		return fmt.Errorf("%q is not a host name or address", host)
	}
	return nil
}

func (c Config) validate() error {
	var errs []error
	if err := checkAddr(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("%s %q: %w", c.Name("addr"), c.Addr, err))
	}
	if c.DebugAddr != "" {
		if err := checkAddr(c.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", c.Name("debug-addr"), c.DebugAddr, err))
		}
	}
	if c.MetricsAddr != "" {
		if err := checkAddr(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", c.Name("metrics-addr"), c.MetricsAddr, err))
		}
		if !c.Metrics {
			errs = append(errs, fmt.Errorf("%s is set but %s is false: no metrics to serve", c.Name("metrics-addr"), c.Name("metrics")))
		}
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("%s (%s) is below %s (%s)", c.Name("retry-max"), c.RetryMax, c.Name("retry-min"), c.RetryMin))
	}
	if c.PollTimeout > c.PollMax {
		errs = append(errs, fmt.Errorf("%s (%s) is above %s (%s)", c.Name("poll-timeout"), c.PollTimeout, c.Name("poll-max"), c.PollMax))
	}
	// Streams renew their shared presence at heartbeats: a member whose
	// lease ran out between two would be announced gone (and back) while
	// its stream lives. A third of the lease is left for Redis and sweeps.
	if c.RedisURL != "" && c.Heartbeat > c.PresenceTTL*2/3 {
		errs = append(errs, fmt.Errorf("%s (%s) is above two thirds of %s (%s): streams renew their presence at heartbeats",
			c.Name("heartbeat"), c.Heartbeat, c.Name("presence-ttl"), c.PresenceTTL))
	}
	if c.CursorKey != "" && len(c.CursorKey) < 16 {
		errs = append(errs, fmt.Errorf("%s must be at least 16 bytes", c.Name("cursor-key")))
	}
	if _, err := c.Proxies(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.parseOrigins(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.Hosts(); err != nil {
		errs = append(errs, err)
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		errs = append(errs, fmt.Errorf("%s must be at least 32 bytes (RFC 7518)", c.Name("jwt-secret")))
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		errs = append(errs, fmt.Errorf("%s must start with redis:// or rediss://", c.Name("redis-url")))
	}
	if err := c.checkSentinel(); err != nil {
		errs = append(errs, err)
	}
	// The file would be ignored: with a key configured development tokens
	// are signed with it, and with Redis the instances share their key.
	if c.DevTokenKeyFile != "" && c.KeysConfigured() {
		errs = append(errs, fmt.Errorf("%s is for open mode (no key configured): with a key configured, development tokens are signed with %s", c.Name("dev-token-key-file"), c.Name("jwt-secret")))
	}
	if c.DevTokenKeyFile != "" && c.RedisURL != "" {
		errs = append(errs, fmt.Errorf("%s is for the in-memory backbone: with Redis (%s), the instances share the development-token key through Redis", c.Name("dev-token-key-file"), c.Name("redis-url")))
	}
	return errors.Join(errs...)
}

// checkSentinel checks the Sentinel settings: a master name given (even
// empty, on the command line) needs the sentinels in the Redis URL, and a
// master_name in that URL must agree with it.
func (c Config) checkSentinel() error {
	_, given := c.given["redis-sentinel-master"]
	name := c.Name("redis-sentinel-master")
	switch {
	case !given:
		if u, err := url.Parse(c.RedisURL); err == nil && u.Query().Has("master_name") {
			return fmt.Errorf("%s has master_name: name the primary with ROOMCAST_REDIS_SENTINEL_MASTER (-redis-sentinel-master), and the URL lists the sentinels", c.Name("redis-url"))
		}
		return nil
	case strings.TrimSpace(c.RedisSentinel) == "" || strings.ContainsAny(c.RedisSentinel, " \t\r\n"):
		return fmt.Errorf("%s %q: want the name of the primary the sentinels watch (sentinel monitor NAME ...)", name, c.RedisSentinel)
	case c.RedisURL == "":
		return fmt.Errorf("%s needs %s listing the sentinels (redis://host:26379?addr=host2:26379)", name, c.Name("redis-url"))
	}
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name("redis-url"), err)
	}
	if u.Host == "" {
		return fmt.Errorf("%s must name a sentinel (redis://host:26379) with %s", c.Name("redis-url"), name)
	}
	for _, a := range u.Query()["addr"] {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%s: addr=%q: %w", c.Name("redis-url"), a, err)
		}
	}
	if m := u.Query().Get("master_name"); m != "" && m != c.RedisSentinel {
		return fmt.Errorf("%s names master_name %q, %s %q", c.Name("redis-url"), m, name, c.RedisSentinel)
	}
	return nil
}

type stringValue struct{ p *string }

func stringVar(p *string) flag.Value     { return stringValue{p} }
func (v stringValue) Set(s string) error { *v.p = s; return nil }
func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

type choiceValue struct {
	p       *string
	choices []string
}

func choiceVar(p *string, choices ...string) flag.Value { return choiceValue{p, choices} }
func (v choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(v.choices, ", "))
}
func (v choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

// choiceFoldVar is a choice matched without regard to case, stored as the
// choice is written.
func choiceFoldVar(p *string, choices ...string) flag.Value { return choiceFoldValue{p, choices} }

type choiceFoldValue struct {
	p       *string
	choices []string
}

func (v choiceFoldValue) Set(s string) error {
	for _, c := range v.choices {
		if strings.EqualFold(s, c) {
			*v.p = c
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(v.choices, ", "))
}
func (v choiceFoldValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

type durationValue struct {
	p   *time.Duration
	min time.Duration
}

func durationVar(p *time.Duration, min time.Duration) flag.Value { return durationValue{p, min} }
func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("must be a duration such as 15s or 2m")
	}
	if d < v.min {
		return fmt.Errorf("must be at least %s", v.min)
	}
	*v.p = d
	return nil
}
func (v durationValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}

type intValue struct {
	p        *int
	min, max int
}

func intVar(p *int, min, max int) flag.Value { return intValue{p, min, max} }
func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("must be a whole number from %d to %d", v.min, v.max)
	}
	*v.p = n
	return nil
}
func (v intValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

type int64Value struct {
	p        *int64
	min, max int64
}

func int64Var(p *int64, min, max int64) flag.Value { return int64Value{p, min, max} }
func (v int64Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("must be a whole number from %d to %d", v.min, v.max)
	}
	*v.p = n
	return nil
}
func (v int64Value) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(*v.p, 10)
}

type levelValue struct{ p *slog.Level }

func levelVar(p *slog.Level) flag.Value { return levelValue{p} }
func (v levelValue) Set(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return errors.New("must be debug, info, warn or error")
	}
	*v.p = l
	return nil
}
func (v levelValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.ToLower(v.p.String())
}

type boolValue struct{ p *bool }

func boolVar(p *bool) flag.Value { return boolValue{p} }
func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("must be true or false")
	}
	*v.p = b
	return nil
}
func (v boolValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatBool(*v.p)
}

// IsBoolFlag lets -metrics stand alone on the command line.
func (v boolValue) IsBoolFlag() bool { return true }

type float64Value struct{ p *float64 }

func float64Var(p *float64) flag.Value { return float64Value{p} }
func (v float64Value) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	// NaN compares false with everything: "f <= 0" alone would let it
	// (and infinity) through and turn the limit off.
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return errors.New("must be a finite number above 0")
	}
	*v.p = f
	return nil
}
func (v float64Value) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatFloat(*v.p, 'g', -1, 64)
}

// Origins returns the allowed origins as a list (validated by Load).
func (c Config) Origins() []string {
	o, _ := c.parseOrigins()
	return o
}

// parseOrigins checks each allowed origin against what a browser sends in
// Origin (RFC 6454 serialisation: a lower-case scheme and host, the port
// only when not the scheme's default, nothing after it), since an entry in
// any other form could never match and would fail silently.
func (c Config) parseOrigins() ([]string, error) {
	var out []string
	for _, s := range splitList(c.AllowedOrigins) {
		if s == "*" {
			out = append(out, s)
			continue
		}
		want, err := serialiseOrigin(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an origin: %w", c.Name("allowed-origins"), s, err)
		}
		if want != s {
			return nil, fmt.Errorf("%s: %q can never match, since browsers send the origin as %q: write that", c.Name("allowed-origins"), s, want)
		}
		out = append(out, s)
	}
	return out, nil
}

// serialiseOrigin is s as a browser would send it in Origin.
func serialiseOrigin(s string) (string, error) {
	const form = "want scheme://host[:port], such as https://app.example.com or http://localhost:3000"
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", errors.New(form)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("the scheme must be http or https; %s", form)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return "", fmt.Errorf("no user, query or fragment; %s", form)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port != "" {
		if !validPort(port) {
			return "", fmt.Errorf("port %q is not a port number", port)
		}
		n, _ := strconv.Atoi(port)
		port = strconv.Itoa(n) // browsers send 8080 for 08080
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	host, err = serialiseHost(host)
	if err != nil {
		return "", err
	}
	out := scheme + "://" + host
	if port != "" {
		out += ":" + port
	}
	return out, nil
}

// Hosts returns the allowed hosts as a list.
func (c Config) Hosts() ([]string, error) {
	hosts := splitList(c.AllowedHosts)
	for _, h := range hosts {
		if strings.ContainsAny(h, "/@ \t") || strings.HasPrefix(h, ":") && strings.Count(h, ":") == 1 || strings.Count(h, "*") > 1 ||
			strings.Contains(h, "*") && !strings.HasPrefix(h, "*.") {
			return nil, fmt.Errorf("%s: %q is not a host name, name:port or *.domain", c.Name("allowed-hosts"), h)
		}
		if want, err := serialiseAllowedHost(h); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", c.Name("allowed-hosts"), h, err)
		} else if want != "" {
			return nil, fmt.Errorf("%s: %q can never match, since browsers send the host as %q: write that", c.Name("allowed-hosts"), h, want)
		}
	}
	return hosts, nil
}

// serialiseAllowedHost checks an allowed host (name, name:port, *.domain,
// an IPv6 address bare or in brackets) against what browsers send in Host,
// as serialiseOrigin does for origins: it returns the form to write when
// h's differs in more than case or a trailing dot, which the relay
// ignores.
func serialiseAllowedHost(h string) (string, error) {
	name, port, bracketed := h, "", false
	switch {
	case strings.HasPrefix(h, "["):
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", errors.New("no closing ]")
		}
		name, port, bracketed = h[1:end], strings.TrimPrefix(h[end+1:], ":"), true
	case strings.Count(h, ":") == 1:
		name, port, _ = strings.Cut(h, ":")
	}
	given := port
	if port != "" {
		if !validPort(port) {
			return "", fmt.Errorf("port %q is not a port number (0 to 65535)", port)
		}
		n, _ := strconv.Atoi(port)
		port = strconv.Itoa(n) // browsers send 8080 for 08080
	}
	wildcard := strings.HasPrefix(name, "*.")
	host, err := serialiseHost(strings.ToLower(strings.TrimPrefix(name, "*.")))
	if err != nil {
		return "", err
	}
	want := strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if want == strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(name, "*.")), ".") && port == given {
		return "", nil
	}
	if wildcard {
		want = "*." + want
	}
	if bracketed || strings.Contains(want, ":") && port != "" {
		want = "[" + want + "]"
	}
	if port != "" {
		want += ":" + port
	}
	return want, nil
}

// serialiseHost is a lower-case host as browsers write it in Origin (the
// WHATWG URL standard): IPv6 addresses compressed, in brackets, IPv4
// addresses in dotted decimal, domain names in ASCII.
func serialiseHost(host string) (string, error) {
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return "", fmt.Errorf("%q is not an IPv6 address", host)
		}
		if a.Is4In6() {
			// netip writes ::ffff:127.0.0.1; browsers ::ffff:7f00:1.
			b := a.As16()
			return fmt.Sprintf("[::ffff:%x:%x]", uint16(b[12])<<8|uint16(b[13]), uint16(b[14])<<8|uint16(b[15])), nil
		}
		return "[" + a.String() + "]", nil
	}
	for _, r := range host {
		switch {
		case r > 0x7e:
			return "", errors.New("browsers send an international domain name in its ASCII form (xn--…): write that")
		case r == '*':
			return "", errors.New("an origin names one host (no wildcards): list each origin, or * for any")
		}
	}
	// A host whose last label is a number is an IPv4 address to browsers,
	// which write 127.1 or 0x7f.0.0.1 as 127.0.0.1.
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	last := labels[len(labels)-1]
	if last != "" && (strings.TrimLeft(last, "0123456789") == "" || strings.HasPrefix(last, "0x")) {
		a, err := netip.ParseAddr(strings.TrimSuffix(host, "."))
		if err != nil || !a.Is4() {
			return "", fmt.Errorf("%q ends in a number, so browsers read it as an IPv4 address: write that address as four decimal numbers, such as 127.0.0.1", host)
		}
		return a.String(), nil
	}
	return host, nil
}

// Proxies parses the trusted proxy ranges.
func (c Config) Proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range splitList(c.TrustedProxies) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR or address", c.Name("trusted-proxies"), s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
