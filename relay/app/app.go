// Package app is roomcast's composition root: it assembles one relay
// instance — backbone, hub, HTTP edge, metrics, keys — from its
// configuration. main serves what New assembles; relaytest assembles its
// test relays with Assemble, so that tests run the wiring production runs
// (the backbone timed by the metrics, the hub observed by them, /metrics,
// the development-token key). It is the one package of relay/ that opens a
// backbone: the edge itself (package relay) never names one.
package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/relay/metrics"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	redisbb "github.com/roomcast/roomcast/rooms/redis"
)

// Backbone is what a relay needs of a backbone beyond rooms.Backbone: the
// relay closes it when it stops.
type Backbone interface {
	rooms.Backbone
	Close() error
}

// Parts are what Assemble wires together.
type Parts struct {
	// Backbone is the relay's; Relay.Close closes it.
	Backbone  Backbone
	CursorKey []byte
	Hub       rooms.HubOptions
	Relay     relay.Options
	// Metrics turns the Prometheus metrics on: the hub's backbone timed
	// by them, the hub observed by them (unless Hub.Observer is set),
	// Relay.MetricsHandler serving them. Assemble makes them:
	// Relay.Metrics is replaced.
	Metrics bool
	// MetricsToken, when set, is the bearer token GET /metrics requires.
	MetricsToken string
}

// Relay is an assembled relay instance. Start its hub (Hub.Start) before
// serving Server; Close stops it.
type Relay struct {
	Backbone Backbone
	Hub      *rooms.Hub
	Server   *relay.Server
	Codec    *rooms.CursorCodec
	// Metrics is nil when the metrics are off.
	Metrics *metrics.Metrics
	// Hosts is the Host allow-list the server answers to (empty: any).
	Hosts []string

	metricsToken string
}

// Assemble wires p's backbone, hub and server together. It takes p.Backbone
// over: on error it is closed.
func Assemble(p Parts) (*Relay, error) {
	codec, err := rooms.NewCursorCodec(p.CursorKey)
	if err != nil {
		_ = p.Backbone.Close()
		return nil, err
	}
	var m *metrics.Metrics
	var hub *rooms.Hub
	var backboneForHub rooms.Backbone = p.Backbone
	if p.Metrics {
		// The gauges read the hub, made below, at each scrape.
		m = metrics.New(func() int { return hub.Rooms() }, func() int { return hub.PollSessions() })
		backboneForHub = m.Backbone(p.Backbone)
		if p.Hub.Observer == nil {
			p.Hub.Observer = m
		}
		p.Relay.Metrics = m
	}
	hub = rooms.NewHub(backboneForHub, codec, p.Hub)
	return &Relay{
		Backbone: p.Backbone,
		Hub:      hub,
		Server:   relay.New(hub, p.Relay),
		Codec:    codec,
		Metrics:  m,
		Hosts:    p.Relay.AllowedHosts,

		metricsToken: p.MetricsToken,
	}, nil
}

// MetricsHandler serves the metrics at GET /metrics and nothing else, for
// a listener of their own (the relay's routes do not serve them: what they
// reveal — rooms, rates, backbone health — is for the operator, not every
// client). Its answers carry nosniff as the relay's do. It is nil when the
// metrics are off.
func (r *Relay) MetricsHandler() http.Handler {
	if r.Metrics == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", relay.MetricsHandler(r.Metrics, r.metricsToken))
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, req)
	})
}

// Close stops the server's writers and the hub's connections, then closes
// the backbone. Drain the server first to let streams end gracefully.
func (r *Relay) Close() {
	r.Server.Close()
	_ = r.Backbone.Close()
}

// New assembles the relay cfg describes: it opens the configured backbone,
// settles the shared keys (cursors, tickets, development tokens), reads the
// namespace rules and the Host allow-list, and warns through log about
// what an operator should know (open mode, development tokens, capped
// rates).
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Relay, error) {
	bb, cursorKey, err := openBackbone(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	p, err := parts(ctx, cfg, log, bb, cursorKey)
	if err != nil {
		_ = bb.Close()
		return nil, err
	}
	return Assemble(p)
}

// parts maps cfg to what Assemble wires, bb and cursorKey being the
// backbone and the cursor key openBackbone settled.
func parts(ctx context.Context, cfg config.Config, log *slog.Logger, bb Backbone, cursorKey []byte) (Parts, error) {
	open := !cfg.KeysConfigured()
	hosts, err := allowedHosts(cfg, open)
	if err != nil {
		return Parts{}, err
	}
	if open {
		log.Warn("OPEN MODE: no key is configured, so anyone who can reach this relay may subscribe and publish anywhere")
	}
	namespaces, err := loadNamespaces(cfg, open)
	if err != nil {
		return Parts{}, err
	}
	warnCappedRates(cfg, namespaces, log)
	devKey, err := devTokenKey(ctx, cfg, bb, open, log)
	if err != nil {
		return Parts{}, err
	}
	authn, err := newAuthenticator(cfg, cursorKey, devKey)
	if err != nil {
		return Parts{}, err
	}
	proxies, _ := cfg.Proxies()
	return Parts{
		Backbone:  bb,
		CursorKey: cursorKey,
		// Metrics are collected only where they are served: on their own
		// listener, never the relay's.
		Metrics:      cfg.Metrics && cfg.MetricsAddr != "",
		MetricsToken: cfg.MetricsToken,
		Hub: rooms.HubOptions{
			QueueSize:      cfg.QueueSize,
			MaxRooms:       cfg.MaxRooms,
			SessionTTL:     cfg.SessionTTL,
			PollSessionTTL: cfg.PollSessionTTL,
			// Zero means none here, the hub's default there.
			MaxPollSessions: cmp.Or(cfg.MaxPollSessions, -1),
			ReplayLimit:     cfg.HistorySize,
			Namespaces:      &namespaces,
			// Renew shared presence well within its lease.
			PresenceRenew: min(cfg.Heartbeat, cfg.PresenceTTL/3),
			ClientTTL:     clientTTL(cfg),

			MaxPollSessionsPerCaller: cfg.MaxPollSessionsPerCaller,
			MaxPollPresencePerCaller: cfg.MaxPollPresencePerCaller,
			MaxPollPresence:          cfg.MaxPollPresence,
			MaxClientIDsPerCaller:    cfg.MaxClientIDsPerCaller,
			MaxSessionsPerCaller:     cfg.MaxSessionsPerCaller,
			MaxSessions:              cfg.MaxSessions,
		},
		Relay: relay.Options{
			MaxPayload:        cfg.MaxPayload,
			MaxBatchBytes:     cfg.MaxBatchBytes,
			Heartbeat:         cfg.Heartbeat,
			RetryMin:          cfg.RetryMin,
			RetryMax:          cfg.RetryMax,
			WriteTimeout:      cfg.WriteTimeout,
			PollDefault:       cfg.PollTimeout,
			PollMax:           cfg.PollMax,
			Logger:            log,
			Compress:          cfg.Compress,
			DisableHijack:     !cfg.Hijack,
			WriteCoalesce:     cfg.WriteCoalesce,
			MaxStreamLifetime: cfg.MaxStreamLifetime,
			DevTokenKey:       devKey,
			IdempotencyTTL:    cfg.HistoryAge,
			Auth:              authn,
			Namespaces:        &namespaces,
			AllowedOrigins:    cfg.Origins(),
			AllowedHosts:      hosts,
			BodyTimeout:       cfg.ReadBodyTimeout,
			Limits: relay.Limits{
				PublishRate:     cfg.PublishRate,
				PublishBurst:    cfg.PublishBurst,
				MaxConnsPerUser: cfg.MaxConnsPerUser,
				MaxConnsPerIP:   cfg.MaxConnsPerIP,
				TrustedProxies:  proxies,
				ClientIPHeader:  cfg.ClientIPHeader,

				PublishCallerRate:  cfg.PublishCallerRate,
				PublishCallerBurst: cfg.PublishCallerBurst,

				MaxIdempotencyKeysPerCaller: cfg.MaxIdempotencyKeysPerCaller,
				MaxIdempotencyKeys:          cfg.MaxIdempotencyKeys,
				MaxTicketsPerUser:           cfg.MaxTicketsPerUser,
				MaxTickets:                  cfg.MaxTickets,
				MaxRateBuckets:              cfg.MaxRateBuckets,
			},
		},
	}, nil
}

// openBackbone opens the configured backbone and settles the cursor key:
// the configured one, else one shared through Redis by every instance, else
// a random one for this process.
func openBackbone(ctx context.Context, cfg config.Config, log *slog.Logger) (Backbone, []byte, error) {
	key := []byte(cfg.CursorKey)
	if cfg.RedisURL == "" {
		if len(key) == 0 {
			key = make([]byte, 32)
			_, _ = rand.Read(key)
			log.Info("no cursor key configured: cursors are valid for this process only")
		}
		return memory.New(memory.Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge, PresenceGrace: cfg.PresenceGrace,
			MaxChannels: cfg.MaxChannels}), key, nil
	}
	bb, err := redisbb.New(ctx, cfg.RedisURL, redisbb.Options{HistorySize: cfg.HistorySize, HistoryAge: cfg.HistoryAge,
		PresenceGrace: cfg.PresenceGrace, MemberTTL: cfg.PresenceTTL, SentinelMaster: cfg.RedisSentinel})
	if err != nil {
		return nil, nil, err
	}
	if len(key) == 0 {
		if key, err = bb.SharedSecret(ctx, "cursor-key"); err != nil {
			_ = bb.Close()
			return nil, nil, err
		}
	}
	return bb, key, nil
}

// allowedHosts is the Host allow-list: ROOMCAST_ALLOWED_HOSTS, which a
// relay that trusts whoever reaches it must have unless it listens on
// loopback only, where the loopback names are allowed too. An open relay
// lets anyone publish, and one handing out development tokens lets anyone
// become a user: without the list, a page of any site whose name an
// attacker points at the relay's address (DNS rebinding) would reach it,
// and read the answers, as well.
func allowedHosts(cfg config.Config, open bool) ([]string, error) {
	hosts, err := cfg.Hosts()
	devTokens := devTokensOn(cfg, open)
	if err != nil || !open && !devTokens {
		return hosts, err
	}
	if cfg.LoopbackOnly() {
		hosts = append(hosts, relay.LoopbackHosts()...)
		// The address it listens on, such as 127.0.0.2, which the usual
		// names do not reach; an address is no name DNS could rebind.
		if h, _, err := net.SplitHostPort(cfg.Addr); err == nil && net.ParseIP(h) != nil {
			hosts = append(hosts, h)
		}
		return hosts, nil
	}
	if open && !cfg.Open {
		return nil, fmt.Errorf("no ROOMCAST_JWT_SECRET, ROOMCAST_JWT_PUBLIC_KEY or ROOMCAST_API_KEY is configured and %s is not a loopback address: "+
			"anyone could publish anything; configure a key, or set ROOMCAST_OPEN=true (with ROOMCAST_ALLOWED_HOSTS) to run open on purpose", cfg.Addr)
	}
	if len(hosts) == 0 && open {
		return nil, fmt.Errorf("ROOMCAST_OPEN=true on %s needs ROOMCAST_ALLOWED_HOSTS, the host names clients reach the relay by "+
			"(e.g. relay.example.com): an open relay answering to any host can be reached by any web page through DNS rebinding", cfg.Addr)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%s=true on %s needs ROOMCAST_ALLOWED_HOSTS, the host names clients reach the relay by "+
			"(e.g. relay.example.com): a relay handing out development tokens to any host can be reached by any web page through DNS rebinding", cfg.Name("dev-tokens"), cfg.Addr)
	}
	return hosts, nil
}

// devTokensOn reports whether POST /v1/dev/token hands out development
// tokens (-dev-tokens auto: in open mode only).
func devTokensOn(cfg config.Config, open bool) bool {
	return cfg.DevTokens == "true" || cfg.DevTokens == "auto" && open
}

// loadNamespaces reads the namespace rules: the global defaults (open mode
// lets anyone subscribe and publish; with a key, subscribing and publishing
// need a token) under what ROOMCAST_CONFIG sets.
func loadNamespaces(cfg config.Config, open bool) (rooms.Namespaces, error) {
	base := rooms.NamespaceOptions{
		Anonymous:       open,
		Publish:         rooms.PublishAuthenticated,
		Presence:        true,
		JoinLeaveEvents: true,
	}
	if open {
		base.Publish = rooms.PublishAnyone
	}
	return config.LoadNamespaces(cfg.Config, base)
}

// warnCappedRates says when a namespace allows a caller more publishes than
// the per-caller total does: the total wins, which may surprise.
func warnCappedRates(cfg config.Config, ns rooms.Namespaces, log *slog.Logger) {
	check := func(name string, o rooms.NamespaceOptions) {
		if o.PublishRate > cfg.PublishCallerRate {
			log.Warn("a namespace's publish_rate is above the per-caller total, which caps it",
				"namespace", name, "publish_rate", o.PublishRate, "ROOMCAST_PUBLISH_CALLER_RATE", cfg.PublishCallerRate)
		}
	}
	check(rooms.DefaultNamespace, ns.Default)
	for name, o := range ns.Named {
		check(name, o)
	}
}

// newAuthenticator verifies user tokens with the configured keys and signs
// tickets with a key derived (rooms/sign) from the cursor key, which every
// instance sharing a backbone has.
func newAuthenticator(cfg config.Config, cursorKey, devKey []byte) (*auth.Authenticator, error) {
	var pem []byte
	if cfg.JWTPublicKey != "" {
		var err error
		if pem, err = os.ReadFile(cfg.JWTPublicKey); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Name("jwt-public-key"), err)
		}
	}
	jwtSecret := []byte(cfg.JWTSecret)
	if len(jwtSecret) == 0 {
		jwtSecret = devKey
	}
	return auth.New(auth.Config{
		JWTSecret:        jwtSecret,
		JWTPublicKeyPEM:  pem,
		Issuer:           cfg.JWTIssuer,
		Audience:         cfg.JWTAudience,
		Leeway:           leeway(cfg.JWTLeeway),
		APIKey:           cfg.APIKey,
		AllowQueryTokens: cfg.AllowQueryTokens,
		TicketKey:        cursorKey,
	})
}

// devTokenKey returns the key development tokens are signed with, or nil
// when POST /v1/dev/token is off (-dev-tokens auto: on in open mode only).
// It is the JWT secret when one is configured; otherwise a key that the
// Authenticator accepts as its JWT secret, shared through Redis by every
// instance. With the in-memory backbone in open mode it is kept in a file
// (-dev-token-key-file), so that a restarted relay accepts the tokens its
// users already hold; failing that, and with keys configured, it is random
// for this process.
func devTokenKey(ctx context.Context, cfg config.Config, bb Backbone, open bool, log *slog.Logger) ([]byte, error) {
	if !devTokensOn(cfg, open) {
		return nil, nil
	}
	if !open {
		log.Warn("DEV TOKENS: " + cfg.Name("dev-tokens") + "=true lets anyone get a user token from POST /v1/dev/token")
	}
	if cfg.JWTSecret != "" {
		return []byte(cfg.JWTSecret), nil
	}
	if s, ok := bb.(interface {
		SharedSecret(context.Context, string) ([]byte, error)
	}); ok {
		return s.SharedSecret(ctx, "dev-token-key")
	}
	if open {
		path := cfg.DevTokenKeyFile
		var err error
		if path == "" {
			path, err = defaultDevKeyFile()
		}
		var key []byte
		if err == nil {
			key, err = loadOrCreateKey(path)
		}
		if err == nil {
			log.Info("development tokens are signed with the key kept in a file", "file", path)
			return key, nil
		}
		log.Warn("the development-token key is not kept across restarts: tokens of this process stop working when it stops", "err", err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return key, nil
}

// leeway maps the configured clock skew to auth's convention, where zero
// means the default and a negative value none.
func leeway(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// clientTTL is how long a client id stays bound after its last renewal:
// 2 minutes, or longer when streams renew less often (at the first
// heartbeat after a quarter of it) or a poller's next poll may come later
// (after a hold of up to poll-max, and its parked session): a binding that
// lapsed under a live stream or poller would let anyone claim its id.
func clientTTL(cfg config.Config) time.Duration {
	return max(2*time.Minute, 4*cfg.Heartbeat, 2*(cfg.PollMax+cfg.PollSessionTTL))
}
