// Package healthcheck is the `roomcast healthcheck` command: it asks a
// running relay whether it takes traffic and exits 0 or 1, for container
// images that have no curl (such as the distroless one of the Dockerfile).
package healthcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/roomcast/roomcast/relay/config"
)

const usage = `Usage: roomcast healthcheck [flags]

Asks a running relay whether it takes traffic (GET /readyz) or, with -live,
whether it is alive (GET /healthz). Prints one line and exits 0 when the
relay answers 200 OK, 1 otherwise. Mistakes in flags exit 1 too: Docker's
HEALTHCHECK reserves exit code 2.

The relay is found the way it listens: $ROOMCAST_ADDR, else :$PORT, else
the default address; an unspecified host (":8080", "0.0.0.0:8080") means
127.0.0.1. A relay started with -addr needs -url.

Flags:
`

// Main runs the command with args (after "healthcheck") and returns its
// exit code: 0 when the relay answered 200, 1 otherwise.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, args, os.Getenv, stdout, stderr)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomcast healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "URL to GET; one without a path gets /readyz (/healthz with -live) (default from $ROOMCAST_ADDR)")
	live := fs.Bool("live", false, "check liveness (/healthz) instead of readiness (/readyz)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := config.ParseCommand(fs, args, usage, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "roomcast healthcheck:", err)
		fmt.Fprintln(stderr, config.CommandHint("healthcheck"))
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "roomcast healthcheck: unexpected argument %q\n", fs.Arg(0))
		return 1
	}
	path := "/readyz"
	if *live {
		path = "/healthz"
	}
	target, err := targetURL(*rawURL, path, getenv)
	if err != nil {
		fmt.Fprintln(stderr, "roomcast healthcheck:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	line, err := check(ctx, target)
	if err != nil {
		fmt.Fprintln(stderr, "roomcast healthcheck:", err)
		return 1
	}
	fmt.Fprintln(stdout, "roomcast healthcheck:", line)
	return 0
}

// targetURL is the URL to check: raw, given a path when it has none, or
// the relay's own address as its configuration gives it.
func targetURL(raw, path string, getenv func(string) string) (string, error) {
	if raw == "" {
		addr, err := listenAddr(getenv)
		if err != nil {
			return "", err
		}
		return "http://" + addr + path, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-url %q: must be an http:// or https:// URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = path
	}
	return u.String(), nil
}

// listenAddr is the host:port to reach the relay at, read as the relay
// reads its listen address (see config.Load), with an unspecified host
// replaced by the loopback address.
func listenAddr(getenv func(string) string) (string, error) {
	addr, from := getenv("ROOMCAST_ADDR"), "ROOMCAST_ADDR"
	if addr == "" && getenv("PORT") != "" {
		addr, from = ":"+getenv("PORT"), "PORT"
	}
	if addr == "" {
		for _, o := range config.Options() {
			if o.Env == "ROOMCAST_ADDR" {
				addr, from = o.Default, "default address"
			}
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", from, addr, err)
	}
	if host == "" || net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// maxBody bounds how much of the answer is read and shown.
const maxBody = 512

// check GETs target and describes the answer in one line. Any status but
// 200 is an error; redirects are not followed, and proxies from the
// environment are not used, since the relay is normally on the same host.
func check(ctx context.Context, target string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	line := fmt.Sprintf("GET %s: %s", target, resp.Status)
	if b := strings.Join(strings.Fields(string(body)), " "); b != "" {
		line += " " + b
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(line)
	}
	return line, nil
}
