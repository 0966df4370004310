package config

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// flyConfig is the part of fly.toml the relay's settings must agree with.
type flyConfig struct {
	KillTimeout int `toml:"kill_timeout"`
	Deploy      struct {
		Strategy       string `toml:"strategy"`
		MaxUnavailable any    `toml:"max_unavailable"`
	} `toml:"deploy"`
	Env     map[string]string `toml:"env"`
	Metrics struct {
		Port int    `toml:"port"`
		Path string `toml:"path"`
	} `toml:"metrics"`
	HTTPService struct {
		InternalPort int `toml:"internal_port"`
	} `toml:"http_service"`
	Checks map[string]struct {
		Port int `toml:"port"`
	} `toml:"checks"`
	VM []struct {
		Memory string `toml:"memory"`
	} `toml:"vm"`
}

// readPlatform reads fly.toml and the ENV lines of the Dockerfile at the
// module's root.
func readPlatform(t *testing.T) (flyConfig, map[string][]string) {
	t.Helper()
	root := filepath.Join("..", "..")
	var fly flyConfig
	md, err := toml.DecodeFile(filepath.Join(root, "fly.toml"), &fly)
	if err != nil {
		t.Fatalf("fly.toml: %v", err)
	}
	if !md.IsDefined("deploy", "strategy") {
		t.Error("fly.toml: no [deploy] strategy")
	}
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string][]string{}
	envLine := regexp.MustCompile(`^ENV\s+([A-Z0-9_]+)=(\S*)\s*$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := envLine.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			env[m[1]] = append(env[m[1]], m[2])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fly, env
}

func port(t *testing.T, what, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	return n
}

// TestPlatformConfig: fly.toml and the Dockerfile describe one deployment.
// The relay's address is set once (the image's ENV) and every port fly
// routes or probes is that one; /metrics is on its own port, the one fly's
// scraper reads; machines are replaced one at a time; the Go runtime has a
// memory limit below the machine's; and the relay accepts the settings.
func TestPlatformConfig(t *testing.T) {
	fly, dockerEnv := readPlatform(t)

	if fly.Deploy.Strategy != "rolling" {
		t.Errorf("fly.toml [deploy] strategy = %q, want rolling: one machine drains at a time while the others take its clients", fly.Deploy.Strategy)
	}
	if n, ok := fly.Deploy.MaxUnavailable.(int64); !ok || n != 1 {
		t.Errorf("fly.toml [deploy] max_unavailable = %v, want 1", fly.Deploy.MaxUnavailable)
	}

	if addrs := dockerEnv["ROOMCAST_ADDR"]; len(addrs) != 1 {
		t.Fatalf("Dockerfile sets ROOMCAST_ADDR %d times (%q), want once", len(addrs), addrs)
	}
	if v, ok := fly.Env["ROOMCAST_ADDR"]; ok {
		t.Errorf("fly.toml [env] sets ROOMCAST_ADDR = %q: the Dockerfile's ENV is the one place it is set", v)
	}
	if v, ok := fly.Env["PORT"]; ok {
		t.Errorf("fly.toml [env] sets PORT = %q, which ROOMCAST_ADDR overrides", v)
	}
	addr := dockerEnv["ROOMCAST_ADDR"][0]
	relayPort := port(t, "Dockerfile ROOMCAST_ADDR", addr)
	if fly.HTTPService.InternalPort != relayPort {
		t.Errorf("fly.toml internal_port = %d, want ROOMCAST_ADDR's port %d", fly.HTTPService.InternalPort, relayPort)
	}
	for name, c := range fly.Checks {
		if c.Port != relayPort {
			t.Errorf("fly.toml [checks.%s] port = %d, want ROOMCAST_ADDR's port %d", name, c.Port, relayPort)
		}
	}

	metricsAddr := fly.Env["ROOMCAST_METRICS_ADDR"]
	if metricsAddr == "" {
		t.Fatal("fly.toml [env] has no ROOMCAST_METRICS_ADDR: fly's [metrics] scraper would find nothing")
	}
	if p := port(t, "fly.toml ROOMCAST_METRICS_ADDR", metricsAddr); p != fly.Metrics.Port || p == relayPort {
		t.Errorf("fly.toml [metrics] port = %d, ROOMCAST_METRICS_ADDR %q: want the same port, not the relay's %d", fly.Metrics.Port, metricsAddr, relayPort)
	}
	if fly.Metrics.Path != "/metrics" {
		t.Errorf("fly.toml [metrics] path = %q, want /metrics", fly.Metrics.Path)
	}

	limit, err := parseGoMemLimit(fly.Env["GOMEMLIMIT"])
	if err != nil {
		t.Errorf("fly.toml [env] GOMEMLIMIT: %v", err)
	}
	if len(fly.VM) != 1 {
		t.Fatalf("fly.toml has %d [[vm]] sections, want 1", len(fly.VM))
	}
	memory, err := parseFlyMemory(fly.VM[0].Memory)
	if err != nil {
		t.Fatalf("fly.toml [[vm]] memory: %v", err)
	}
	if limit <= memory/2 || limit >= memory {
		t.Errorf("GOMEMLIMIT %s against a %s machine: want it below the machine's memory (the kernel's socket buffers need the rest) and above half of it", fly.Env["GOMEMLIMIT"], fly.VM[0].Memory)
	}

	// What the machine runs with: the image's environment, fly's on top.
	env := map[string]string{}
	for k, vs := range dockerEnv {
		env[k] = vs[len(vs)-1]
	}
	for k, v := range fly.Env {
		env[k] = v
	}
	c, err := Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the relay refuses the deployment's settings: %v", err)
	}
	if c.Addr != addr || c.MetricsAddr != metricsAddr || !c.Metrics {
		t.Errorf("loaded address %q, metrics %v on %q; want %q and metrics on %q", c.Addr, c.Metrics, c.MetricsAddr, addr, metricsAddr)
	}
	if kill := time.Duration(fly.KillTimeout) * time.Second; c.DrainTimeout >= kill {
		t.Errorf("drain timeout %s is not below fly.toml's kill_timeout %s: machines would be killed mid-drain", c.DrainTimeout, kill)
	}
}

// parseGoMemLimit parses GOMEMLIMIT as the Go runtime does: bytes, or a
// number with one of the suffixes B, KiB, MiB, GiB, TiB.
func parseGoMemLimit(s string) (int64, error) {
	return parseSize(s, map[string]int64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "": 1})
}

// parseFlyMemory parses a [[vm]] memory such as "512mb" or "1gb" (fly
// counts them in MiB).
func parseFlyMemory(s string) (int64, error) {
	return parseSize(strings.ToLower(s), map[string]int64{"mb": 1 << 20, "gb": 1 << 30})
}

func parseSize(s string, units map[string]int64) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	unit, ok := units[s[i:]]
	if !ok || i == 0 {
		return 0, &strconv.NumError{Func: "parseSize", Num: s, Err: strconv.ErrSyntax}
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, err
	}
	return n * unit, nil
}
