// Command roomcast is a realtime relay for the HTTP-only web: rooms over
// Server-Sent Events and plain POST, with a long-poll fallback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/app"
	"github.com/roomcast/roomcast/relay/config"
	"github.com/roomcast/roomcast/relay/healthcheck"
	"github.com/roomcast/roomcast/relay/pub"
	"github.com/roomcast/roomcast/relay/sub"
	"github.com/roomcast/roomcast/relay/sysmon"
	"github.com/roomcast/roomcast/relay/token"
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
			return bench(ctx, args[1:], stdout, stderr)
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
	r, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	// The server is closed after the drain, below.
	defer r.Backbone.Close()
	srv := r.Server
	if err := r.Hub.Start(ctx); err != nil {
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
		stop, err := serveAside(ctx, "debug", cfg.DebugAddr, debugHandler(), cfg, log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stop()
	}
	if h := r.MetricsHandler(); h != nil {
		// Not on the relay's listener: what it reveals (rooms, rates,
		// backbone health) is for the operator, not for every client.
		stop, err := serveAside(ctx, "metrics", cfg.MetricsAddr, h, cfg, log)
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
		"demo", demoURL(ln.Addr(), r.Hosts, srv.AnswersHost))

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

// debugHandler serves net/http/pprof, apart from the relay's routes.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveAside serves h on a listener of its own at addr, apart from the
// relay's, until stop is called, and logs "<name> listener" with the
// address bound (the port chosen when addr's is 0). Its reads are bounded
// as the relay's are: headers, bodies (POST /debug/pprof/symbol) and
// keep-alive.
func serveAside(ctx context.Context, name, addr string, h http.Handler, cfg config.Config, log *slog.Logger) (stop func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	bounded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(cfg.ReadBodyTimeout))
		}
		h.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: bounded, ReadHeaderTimeout: cfg.ReadHeaderTimeout, IdleTimeout: cfg.IdleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info(name+" listener", "addr", ln.Addr().String())
	return func() { _ = srv.Close(); <-done }, nil
}

func backboneName(cfg config.Config) string {
	if cfg.RedisURL != "" {
		return "redis"
	}
	return "memory"
}

// benchBinary is the load generator's binary, built from ./cmd/roomcast-bench.
const benchBinary = "roomcast-bench"

// bench runs the load generator, a binary of its own so that the relay
// carries none of its code: the one beside this binary, else the one on
// PATH, with args and this process's standard streams. Its exit code is
// bench's; without one, bench says where it is and how to build it.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	path, err := findBench()
	if err != nil {
		fmt.Fprintln(stderr, "roomcast bench:", err)
		fmt.Fprintln(stderr, "The load generator is the binary "+benchBinary+": beside roomcast in the container image (/"+benchBinary+"),")
		fmt.Fprintln(stderr, "or build it beside this one from the source: go build -o "+filepath.Join(besideSelf(), benchBinary)+" ./cmd/roomcast-bench")
		fmt.Fprintln(stderr, "(or run it from the source: go run ./cmd/roomcast-bench -h).")
		return 1
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	// A signal to roomcast reaches bench as an interrupt, which ends its
	// run with a report, not as a kill.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	err = cmd.Run()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomcast bench:", err)
		return 1
	}
	return 0
}

// findBench finds the load generator: beside this binary, else on PATH.
func findBench() (string, error) {
	beside := filepath.Join(besideSelf(), benchBinary)
	if fi, err := os.Stat(beside); err == nil && !fi.IsDir() {
		return beside, nil
	}
	path, err := exec.LookPath(benchBinary)
	if err != nil {
		return "", fmt.Errorf("no %s beside this binary (%s) nor on PATH: %w", benchBinary, beside, err)
	}
	return path, nil
}

// besideSelf is the directory of this binary, or "." when unknown.
func besideSelf() string {
	self, err := os.Executable()
	if err != nil {
		return "."
	}
	return filepath.Dir(self)
}
