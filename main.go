// Command roomcast is a realtime relay for the HTTP-only web: rooms over
// Server-Sent Events and plain POST, with a long-poll fallback.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/relay/bench"
	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/relay/healthcheck"
	"github.com/roomcast/roomcast/relay/metrics"
	"github.com/roomcast/roomcast/relay/pub"
	"github.com/roomcast/roomcast/relay/sub"
	"github.com/roomcast/roomcast/relay/sysmon"
	"github.com/roomcast/roomcast/relay/token"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
	redisbb "github.com/roomcast/roomcast/rooms/redis"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "roomcast", version)
			return 0
		case "help":
			fmt.Fprint(stdout, config.Commands)
			fmt.Fprintln(stdout, "\nroomcast -h lists the relay's flags and their environment variables.")
			return 0
		case "sub":
			return sub.Main(ctx, args[1:], stdout, stderr)
		case "pub":
			return pub.Main(ctx, args[1:], getenv, os.Stdin, stdout, stderr)
		case "token":
			return token.Main(args[1:], getenv, stdout, stderr)
		case "healthcheck":
			return healthcheck.Main(ctx, args[1:], stdout, stderr)
		case "bench":
			// The load generator's readers wake from idle at every
			// publish, as the relay's writers do.
			stop, _, err := sysmon.BatchWhile(ctx)
			if err != nil && !errors.Is(err, errors.ErrUnsupported) {
				fmt.Fprintln(stderr, "roomcast bench: the runtime monitor keeps its scheduling:", err)
			}
			defer stop()
			return bench.Main(ctx, args[1:], stdout, stderr)
		}
	}
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		// The error alone and where to look, not the whole usage around it.
		fmt.Fprintln(stderr, "roomcast:", err)
		fmt.Fprintln(stderr, config.Hint)
		return 2
	}
	log := newLogger(cfg, stderr)
	if cfg.BatchMonitor {
		stop, tid, err := sysmon.BatchWhile(ctx)
		switch {
		case errors.Is(err, errors.ErrUnsupported):
			// Not Linux: nothing to say at every start.
		case err != nil:
			log.Info("the runtime monitor keeps its scheduling", "err", err)
		default:
			log.Debug("runtime monitor thread runs as SCHED_BATCH", "tid", tid)
		}
		defer stop()
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("roomcast stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	text := cfg.LogFormat == "text"
	if cfg.LogFormat == "auto" {
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				text = true
			}
		}
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs the relay until ctx is cancelled, then drains it.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	bb, cursorKey, err := openBackbone(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer bb.Close()
	codec, err := rooms.NewCursorCodec(cursorKey)
	if err != nil {
		return err
	}
	var m *metrics.Metrics
	var hub *rooms.Hub
	var backboneForHub rooms.Backbone = bb
	if cfg.Metrics {
		m = metrics.New(func() int { return hub.Rooms() }, func() int { return hub.PollSessions() })
		backboneForHub = m.Backbone(bb)
	}
	open := !cfg.KeysConfigured()
	hosts, err := allowedHosts(cfg, open)
	if err != nil {
		return err
	}
	if open {
		log.Warn("OPEN MODE: no key is configured, so anyone who can reach this relay may subscribe and publish anywhere")
	}
	namespaces, err := loadNamespaces(cfg, open)
	if err != nil {
		return err
	}
	warnCappedRates(cfg, namespaces, log)
	devKey, err := devTokenKey(ctx, cfg, bb, open, log)
	if err != nil {
		return err
	}
	authn, err := newAuthenticator(cfg, cursorKey, devKey)
	if err != nil {
		return err
	}
	proxies, _ := cfg.Proxies()
	hub = rooms.NewHub(backboneForHub, codec, rooms.HubOptions{
		QueueSize:      cfg.QueueSize,
		MaxRooms:       cfg.MaxRooms,
		SessionTTL:     cfg.SessionTTL,
		PollSessionTTL: cfg.PollSessionTTL,
		// Zero means none here, the hub's default there.
		MaxPollSessions: cmp.Or(cfg.MaxPollSessions, -1),
		ReplayLimit:     cfg.HistorySize,
		Observer:        observer(m),
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
	})
	srv := relay.New(hub, relay.Options{
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
		Metrics:           m,
		MetricsToken:      cfg.MetricsToken,
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
	})
	if err := hub.Start(ctx); err != nil {
		return err
	}
	ln, err := relay.Listen(ctx, cfg.Addr, cfg.TCPUserTimeout)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	httpSrv := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		// net/http reads up to 4 KiB beyond MaxHeaderBytes before it
		// answers 431: this caps the request head at 64 KiB.
		MaxHeaderBytes: 64<<10 - 4096,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if cfg.H2C {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		httpSrv.Protocols = &p
		httpSrv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: cfg.H2MaxStreams}
	}
	if cfg.DebugAddr != "" {
		stop, err := serveDebug(ctx, cfg, log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stop()
	}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	srv.SetReady()
	log.Info("roomcast listening", "addr", ln.Addr().String(), "backbone", backboneName(cfg), "version", version,
		"demo", demoURL(ln.Addr(), hosts, srv.AnswersHost))

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("draining", "timeout", cfg.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	srv.Drain(dctx)
	if err := httpSrv.Shutdown(dctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
		_ = httpSrv.Close()
	}
	srv.Close()
	log.Info("stopped")
	return nil
}

// demoURL is where a browser on this machine finds the demo chat served
// at /: the listening address, with an unspecified host (":8080",
// "0.0.0.0") replaced by loopback.
//
// A relay with a Host allow-list answers 421 to a host it does not list:
// the URL then names the first listed host it answers to (a name, not a
// *.domain), or is empty when there is none.
func demoURL(addr net.Addr, hosts []string, answers func(host string) bool) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	candidates := []string{net.JoinHostPort(host, port)}
	for _, h := range hosts {
		if strings.HasPrefix(h, "*.") {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err == nil {
			candidates = append(candidates, h) // behind a proxy on that port
		} else {
			candidates = append(candidates, net.JoinHostPort(strings.Trim(h, "[]"), port))
		}
	}
	for _, c := range candidates {
		if answers(c) {
			return "http://" + c + "/"
		}
	}
	return ""
}

// serveDebug serves net/http/pprof on its own listener, apart from the
// relay's routes, until stop is called. Its reads are bounded as the
// relay's are: headers, bodies (POST /debug/pprof/symbol) and keep-alive.
func serveDebug(ctx context.Context, cfg config.Config, log *slog.Logger) (stop func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.DebugAddr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	bounded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(cfg.ReadBodyTimeout))
		}
		mux.ServeHTTP(w, r)
	})
	dbg := &http.Server{Handler: bounded, ReadHeaderTimeout: cfg.ReadHeaderTimeout, IdleTimeout: cfg.IdleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dbg.Serve(ln)
	}()
	log.Info("debug listener", "addr", ln.Addr().String())
	return func() { _ = dbg.Close(); <-done }, nil
}

// backbone is what serve needs of a backbone beyond rooms.Backbone.
type backbone interface {
	rooms.Backbone
	Close() error
}

func backboneName(cfg config.Config) string {
	if cfg.RedisURL != "" {
		return "redis"
	}
	return "memory"
}

// openBackbone opens the configured backbone and settles the cursor key:
// the configured one, else one shared through Redis by every instance, else
// a random one for this process.
func openBackbone(ctx context.Context, cfg config.Config, log *slog.Logger) (backbone, []byte, error) {
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

// observer returns m as the hub's observer, or nil for none: a nil
// *metrics.Metrics must not become a non-nil interface.
func observer(m *metrics.Metrics) rooms.Observer {
	if m == nil {
		return nil
	}
	return m
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
func devTokenKey(ctx context.Context, cfg config.Config, bb backbone, open bool, log *slog.Logger) ([]byte, error) {
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
