// Package relay is roomcast's HTTP edge: the v1 routes, Server-Sent Events
// streams, long-polls and the JSON error shape. It parses and validates
// requests, calls the rooms package and encodes its answers; the rules live
// in rooms.
package relay

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/metrics"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/sign"
)

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// MaxPayload bounds a publish request body (default 64 KiB).
	MaxPayload int64
	// MaxBatchBytes bounds a POST /v1/batch body (default 4 MiB); each
	// of its events is held to MaxPayload (or its namespace's) as well.
	MaxBatchBytes int64
	// Heartbeat is the interval of ": ping" comments on idle streams (default 15 s).
	Heartbeat time.Duration
	// RetryMin and RetryMax bound the randomised retry: field sent to
	// streams and the reconnect delay of roomcast:closing (default 1–5 s).
	RetryMin, RetryMax time.Duration
	// WriteTimeout bounds each write to a stream; a client that does not
	// take a write within it is disconnected (default 10 s).
	WriteTimeout time.Duration
	// PollDefault and PollMax are a long-poll's default and longest hold
	// (default 25 s and 55 s).
	PollDefault, PollMax time.Duration
	// MaxPadding caps ?padding= on streams (default 4096 bytes).
	MaxPadding int
	// Logger receives the server's logs (default slog.Default()).
	Logger *slog.Logger
	// Compress says what is gzipped for clients that accept it: CompressOff,
	// CompressPolls (default) or CompressAll (polls and streams).
	Compress string
	// MaxStreamLifetime, when set, closes each stream after about this long
	// (jittered by up to a tenth) with roomcast:closing reason max_lifetime,
	// before a platform that cuts long requests does it less politely.
	MaxStreamLifetime time.Duration
	// Auth verifies tokens, the API key and tickets; nil accepts everyone
	// as anonymous.
	Auth *auth.Authenticator
	// Namespaces decides who may publish where (nil: anyone anywhere).
	Namespaces *rooms.Namespaces
	// AllowedOrigins may call the relay from a browser (CORS) besides the
	// relay's own origin; "*" allows any origin without credentials.
	AllowedOrigins []string
	// AllowedHosts, when set, are the only Host values the relay answers
	// to (421 host_not_allowed otherwise, except the health probes and
	// /metrics): a name or address on any port ("relay.example.com",
	// "::1"), on one port ("relay.example.com:8443"), or with "*." any
	// subdomain. Empty allows any host. It keeps pages of other sites
	// whose names resolve to the relay (DNS rebinding) out of a relay that
	// trusts its network, as an open one does.
	AllowedHosts []string
	// BodyTimeout bounds the time a request may take to send its body,
	// from the end of its headers (default 15 s); a request still sending
	// after a moment counts against Limits.MaxConnsPerIP meanwhile.
	BodyTimeout time.Duration
	// Limits are the rate and connection limits.
	Limits Limits
	// DisableHijack keeps HTTP/1.1 streams on net/http's standard path
	// instead of handing them to the shared writer pool.
	DisableHijack bool
	// WriteCoalesce, when set, makes a hijacked stream that was written
	// less than this long ago wait out the rest before its next write, so
	// that under load several events share one write (system calls are
	// most of the cost of a delivery). It adds at most this much latency,
	// and none to a stream quieter than that.
	WriteCoalesce time.Duration
	// MaxConcurrentConnects bounds the streams being opened (joined and
	// replayed) at once; beyond it new streams get 503 with a jittered
	// Retry-After, so a reconnect storm after an instance dies is taken
	// in waves instead of all at once (default 256).
	MaxConcurrentConnects int
	// Metrics, when set, is told about requests and given the server's
	// gauges. The server does not serve it: its handler belongs on a
	// listener of its own (see metrics.Metrics.Handler).
	Metrics *metrics.Metrics
	// IdempotencyTTL is how long the backbone remembers an Idempotency-Key
	// (its history age; default 5 minutes): a key counts against its
	// caller's bound that long.
	IdempotencyTTL time.Duration
	// DevTokenKey, when set, enables POST /v1/dev/token, which signs
	// development tokens (HS256) with it; Auth must accept that key as its
	// JWT secret.
	DevTokenKey []byte
}

// Server serves the v1 API over a Hub.
type Server struct {
	hub  *rooms.Hub
	opts Options
	log  *slog.Logger

	ready    atomic.Bool
	draining atomic.Bool
	streams  sync.WaitGroup

	admission  chan struct{}
	writerOnce sync.Once
	writer     *streamer
	buckets    buckets
	hosts      []hostPattern // nil: any host
	// publisher decides and stores every publish, whatever its path.
	publisher   *rooms.Publisher
	connsByUser counters
	connsByIP   counters
	// tickets counts the tickets outstanding, by caller (Limits bound
	// them).
	tickets *rooms.Quota
	// devMarks marks the development tokens this relay mints; nil when
	// DevTokenKey is unset or unusable.
	devMarks *sign.Signer
	// requests numbers requests for their log lines' ids, after idPrefix.
	requests atomic.Uint64
	idPrefix string

	handler http.Handler
}

// New returns a Server for hub. It reports not ready until SetReady.
func New(hub *rooms.Hub, opts Options) *Server {
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = 64 << 10
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 4 << 20
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(opts.RetryMin, 5*time.Second)
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.PollDefault <= 0 {
		opts.PollDefault = 25 * time.Second
	}
	if opts.PollMax <= 0 {
		opts.PollMax = 55 * time.Second
	}
	if opts.MaxPadding <= 0 {
		opts.MaxPadding = 4096
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 15 * time.Second
	}
	opts.Limits.defaults()
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 5 * time.Minute
	}
	if opts.MaxConcurrentConnects <= 0 {
		opts.MaxConcurrentConnects = 256
	}
	if opts.Compress == "" {
		opts.Compress = CompressPolls
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{hub: hub, opts: opts, log: opts.Logger, admission: make(chan struct{}, opts.MaxConcurrentConnects)}
	s.publisher = rooms.NewPublisher(hub, rooms.PublisherOptions{
		Policy: rooms.PublishPolicy{
			Namespaces: opts.Namespaces,
			Limits: rooms.PublishLimits{
				MaxPayload:  opts.MaxPayload,
				Rate:        opts.Limits.PublishRate,
				Burst:       opts.Limits.PublishBurst,
				CallerRate:  opts.Limits.PublishCallerRate,
				CallerBurst: opts.Limits.PublishCallerBurst,
			},
		},
		Spender:          publishLimits{s},
		IdempotencyTTL:   opts.IdempotencyTTL,
		MaxKeysPerCaller: opts.Limits.MaxIdempotencyKeysPerCaller,
		MaxKeys:          opts.Limits.MaxIdempotencyKeys,
	})
	s.idPrefix = rooms.NewClientID()[:8]
	s.devMarks = newDevMarks(opts.DevTokenKey, s.log)
	if len(opts.AllowedHosts) > 0 {
		// A list with no usable entry allows nothing rather than anything.
		s.hosts = append(make([]hostPattern, 0, len(opts.AllowedHosts)), parseHostPatterns(opts.AllowedHosts)...)
	}
	s.tickets = rooms.NewQuota(opts.Limits.MaxTicketsPerUser, opts.Limits.MaxTickets)
	s.buckets.max = opts.Limits.MaxRateBuckets
	s.handler = s.routes()
	if m := opts.Metrics; m != nil {
		s.registerGauges(m)
	}
	return s
}

// registerGauges exposes how much of each kind of state requests created
// this process holds, so that an operator sees any of them grow.
func (s *Server) registerGauges(m *metrics.Metrics) {
	m.Gauge("roomcast_channels", "Channels (rooms, namespace and user channels) this instance's hub is subscribed to.", s.hub.Channels)
	m.Gauge("roomcast_sessions", "Multi-room sessions this instance counts as kept: of its open streams, and of streams that ended within the session TTL.", s.hub.Sessions)
	m.Gauge("roomcast_poll_presence_leases", "Presence entries held for long-pollers by this instance (they outlive the poll by its hold).", s.hub.PollPresenceLeases)
	m.Gauge("roomcast_idempotency_keys", "Idempotency-Key values of callers' publishes this instance counts as remembered.", s.publisher.IdempotencyKeys)
	m.Gauge("roomcast_rate_buckets", "Rate-limit buckets this instance keeps in memory (with a backbone that keeps rate limits, none).", s.buckets.len)
	m.Gauge("roomcast_tickets", "Tickets this instance issued whose key may still be held: until they expire, and a spent one's key is forgotten.", s.tickets.Held)
	m.Gauge("roomcast_client_ids_held", "Client ids this instance counts as bound for its callers (each for the binding's TTL after its last use; ROOMCAST_MAX_CLIENT_IDS_PER_CALLER).", s.hub.ClientIDsHeld)
	m.Gauge("roomcast_client_bindings", "Client ids bound to their owners on the backbone (with Redis, all instances' together).", func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, _ := s.hub.ClientBindings(ctx)
		return n
	})
	g := s.hub.BackboneGauges()
	if g.Channels != nil {
		m.Gauge("roomcast_backbone_channels", "Channels the backbone keeps in this process: the embedded one's with history or subscribers, Redis's subscriptions.", g.Channels)
	}
	if g.PresenceEntries != nil && g.Keys != nil {
		// The embedded backbone keeps history, keys and presence in this
		// process; a shared one keeps them in Redis, under its own TTLs.
		if g.FreedChannels != nil {
			m.Gauge("roomcast_backbone_freed_channels", "Freed channels whose last position the embedded backbone remembers by name, so that their old cursors read as gaps and no other's does (a day, ROOMCAST_MAX_CHANNELS at most).", g.FreedChannels)
		}
		m.Gauge("roomcast_presence_entries", "Presence members and users (in their grace period included) the embedded backbone keeps.", g.PresenceEntries)
		m.Gauge("roomcast_backbone_idempotency_keys", "Idempotency keys the embedded backbone remembers.", func() int { n, _, _ := g.Keys(); return n })
		m.Gauge("roomcast_backbone_claims", "Redeemed tickets the embedded backbone remembers, so that none is used twice.", func() int { _, n, _ := g.Keys(); return n })
		m.Gauge("roomcast_backbone_sessions", "Multi-room sessions the embedded backbone remembers.", func() int { _, _, n := g.Keys(); return n })
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// SetReady marks the server ready to take traffic (/readyz answers 200).
func (s *Server) SetReady() { s.ready.Store(true) }

// Drain starts a graceful shutdown: /readyz fails, new streams are refused,
// polls are answered at once instead of held, and every open stream is told
// to reconnect elsewhere after a jittered delay and closed. It returns once every stream handler has
// finished or ctx is done. In-flight publishes are left to http.Server.Shutdown.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	s.hub.Drain(s.retryDelay)
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// streamer returns the shared writer of hijacked streams, starting it on
// first use.
func (s *Server) streamer() *streamer {
	s.writerOnce.Do(func() { s.writer = newStreamer(s) })
	return s.writer
}

// Close ends every stream still open and stops the shared writer's
// goroutines. Call it after Drain and http.Server.Shutdown.
func (s *Server) Close() {
	s.hub.Drain(s.retryDelay)
	s.writerOnce.Do(func() {}) // no writer starts after this
	if s.writer != nil {
		s.writer.stop()
	}
}

// retryDelay picks a reconnect delay in [RetryMin, RetryMax] so that
// clients spread their reconnects out.
func (s *Server) retryDelay() time.Duration {
	span := s.opts.RetryMax - s.opts.RetryMin
	if span <= 0 {
		return s.opts.RetryMin
	}
	return s.opts.RetryMin + rand.N(span+1)
}
