package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(nil, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"addr", c.Addr, "127.0.0.1:8080"},
		{"redis-url", c.RedisURL, ""},
		{"log-level", c.LogLevel, slog.LevelInfo},
		{"log-format", c.LogFormat, "auto"},
		{"max-payload", c.MaxPayload, int64(64 << 10)},
		{"heartbeat", c.Heartbeat, 15 * time.Second},
		{"retry-min", c.RetryMin, time.Second},
		{"retry-max", c.RetryMax, 5 * time.Second},
		{"write-timeout", c.WriteTimeout, 10 * time.Second},
		{"poll-timeout", c.PollTimeout, 25 * time.Second},
		{"poll-max", c.PollMax, 55 * time.Second},
		{"history-size", c.HistorySize, 1000},
		{"history-age", c.HistoryAge, 5 * time.Minute},
		{"queue-size", c.QueueSize, 1024},
		{"max-rooms", c.MaxRooms, 64},
		{"session-ttl", c.SessionTTL, 5 * time.Minute},
		{"drain-timeout", c.DrainTimeout, 10 * time.Second},
		{"cursor-key", c.CursorKey, ""},
		{"tcp-user-timeout", c.TCPUserTimeout, 30 * time.Second},
		{"read-header-timeout", c.ReadHeaderTimeout, 10 * time.Second},
		{"idle-timeout", c.IdleTimeout, 120 * time.Second},
		// Off, so that /metrics is never public by default.
		{"metrics-addr", c.MetricsAddr, ""},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("-%s defaults to %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// Every option is a flag and a ROOMCAST_* variable; the listed defaults are
// the ones Load applies.
func TestOptionsAreConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range Options() {
		if want := "ROOMCAST_" + strings.ToUpper(strings.ReplaceAll(o.Flag, "-", "_")); o.Env != want {
			t.Errorf("-%s is read from %s, want %s", o.Flag, o.Env, want)
		}
		if seen[o.Flag] {
			t.Errorf("-%s is listed twice", o.Flag)
		}
		seen[o.Flag] = true
		if o.Usage == "" {
			t.Errorf("-%s has no usage text", o.Flag)
		}
	}
	if len(seen) < 20 {
		t.Errorf("only %d options listed", len(seen))
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   func(string) string
		check func(Config) bool
	}{
		{"env sets a duration", nil, env("ROOMCAST_HEARTBEAT", "3s"),
			func(c Config) bool { return c.Heartbeat == 3*time.Second }},
		{"env sets an address", nil, env("ROOMCAST_ADDR", "0.0.0.0:9000"),
			func(c Config) bool { return c.Addr == "0.0.0.0:9000" }},
		{"env sets numbers", nil, env("ROOMCAST_MAX_PAYLOAD", "1024", "ROOMCAST_HISTORY_SIZE", "10"),
			func(c Config) bool { return c.MaxPayload == 1024 && c.HistorySize == 10 }},
		{"env sets the log level", nil, env("ROOMCAST_LOG_LEVEL", "debug", "ROOMCAST_LOG_FORMAT", "text"),
			func(c Config) bool { return c.LogLevel == slog.LevelDebug && c.LogFormat == "text" }},
		{"flag sets a value", []string{"-drain-timeout", "3s"}, env(),
			func(c Config) bool { return c.DrainTimeout == 3*time.Second }},
		{"flag with = form", []string{"--max-rooms=8"}, env(),
			func(c Config) bool { return c.MaxRooms == 8 }},
		{"flag overrides env", []string{"-heartbeat", "2s"}, env("ROOMCAST_HEARTBEAT", "3s"),
			func(c Config) bool { return c.Heartbeat == 2*time.Second }},
		{"empty env is unset", nil, env("ROOMCAST_HEARTBEAT", ""),
			func(c Config) bool { return c.Heartbeat == 15*time.Second }},
		{"PORT means every interface", nil, env("PORT", "3000"),
			func(c Config) bool { return c.Addr == ":3000" }},
		{"ROOMCAST_ADDR wins over PORT", nil, env("PORT", "3000", "ROOMCAST_ADDR", "127.0.0.1:4000"),
			func(c Config) bool { return c.Addr == "127.0.0.1:4000" }},
		{"-addr wins over PORT", []string{"-addr", "127.0.0.1:5000"}, env("PORT", "3000"),
			func(c Config) bool { return c.Addr == "127.0.0.1:5000" }},
		{"REDIS_URL alias", nil, env("REDIS_URL", "redis://h:6379/0"),
			func(c Config) bool { return c.RedisURL == "redis://h:6379/0" }},
		{"ROOMCAST_REDIS_URL wins over REDIS_URL", nil, env("REDIS_URL", "redis://a", "ROOMCAST_REDIS_URL", "rediss://b"),
			func(c Config) bool { return c.RedisURL == "rediss://b" }},
		{"retry-max may equal retry-min", []string{"-retry-min", "2s", "-retry-max", "2s"}, env(),
			func(c Config) bool { return c.RetryMin == 2*time.Second && c.RetryMax == 2*time.Second }},
		{"zero disables TCP_USER_TIMEOUT", nil, env("ROOMCAST_TCP_USER_TIMEOUT", "0s"),
			func(c Config) bool { return c.TCPUserTimeout == 0 }},
		{"cursor key of 16 bytes", nil, env("ROOMCAST_CURSOR_KEY", "0123456789abcdef"),
			func(c Config) bool { return c.CursorKey == "0123456789abcdef" }},
		{"sentinel master with the sentinels in the URL", nil,
			env("ROOMCAST_REDIS_SENTINEL_MASTER", "mymaster", "ROOMCAST_REDIS_URL", "redis://s1:26379?addr=s2:26379&addr=s3:26379"),
			func(c Config) bool {
				return c.RedisSentinel == "mymaster" && c.RedisURL == "redis://s1:26379?addr=s2:26379&addr=s3:26379"
			}},
		{"sentinel master also named in the URL", []string{"-redis-sentinel-master", "m"}, env("REDIS_URL", "redis://s1:26379?master_name=m"),
			func(c Config) bool { return c.RedisSentinel == "m" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, tt.env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

// An invalid value is refused with a message naming where it came from.
func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want []string // all in the error
	}{
		{"duration env", nil, env("ROOMCAST_HEARTBEAT", "banana"), []string{"ROOMCAST_HEARTBEAT", "banana", "duration"}},
		{"duration below minimum", nil, env("ROOMCAST_HEARTBEAT", "10ms"), []string{"ROOMCAST_HEARTBEAT", "at least 1s"}},
		{"number env", nil, env("ROOMCAST_MAX_PAYLOAD", "lots"), []string{"ROOMCAST_MAX_PAYLOAD", "whole number"}},
		{"number out of range", nil, env("ROOMCAST_QUEUE_SIZE", "1"), []string{"ROOMCAST_QUEUE_SIZE", "from 2"}},
		{"level env", nil, env("ROOMCAST_LOG_LEVEL", "loud"), []string{"ROOMCAST_LOG_LEVEL"}},
		{"choice env", nil, env("ROOMCAST_LOG_FORMAT", "xml"), []string{"ROOMCAST_LOG_FORMAT", "json, text"}},
		{"duration flag", []string{"-heartbeat", "banana"}, env(), []string{"-heartbeat", "banana"}},
		{"number flag", []string{"-history-size", "0"}, env(), []string{"-history-size"}},
		{"unknown flag", []string{"-nope"}, env(), []string{"-nope"}},
		{"stray argument", []string{"sub"}, env(), []string{`"sub"`}},
		{"PORT not a number", nil, env("PORT", "http"), []string{"PORT", "http"}},
		{"PORT out of range", nil, env("PORT", "70000"), []string{"PORT"}},
		{"bad address", []string{"-addr", "localhost"}, env(), []string{"-addr", "localhost"}},
		{"retry-max below retry-min", []string{"-retry-min", "5s", "-retry-max", "1s"}, env(), []string{"-retry-max", "-retry-min"}},
		{"retry-max below retry-min from env", nil, env("ROOMCAST_RETRY_MIN", "10s"), []string{"-retry-max", "ROOMCAST_RETRY_MIN"}},
		{"poll-timeout above poll-max", []string{"-poll-timeout", "60s"}, env(), []string{"-poll-timeout", "-poll-max"}},
		{"heartbeat beyond the presence lease", []string{"-heartbeat", "60s"}, env("ROOMCAST_REDIS_URL", "redis://h"), []string{"-heartbeat", "-presence-ttl", "two thirds"}},
		{"short cursor key", nil, env("ROOMCAST_CURSOR_KEY", "short"), []string{"ROOMCAST_CURSOR_KEY", "16 bytes"}},
		{"redis URL scheme", nil, env("REDIS_URL", "http://h"), []string{"REDIS_URL", "redis://"}},
		{"port above 65535", []string{"-addr", ":65536"}, env(), []string{"-addr", "0 to 65535"}},
		{"debug port above 65535", nil, env("ROOMCAST_DEBUG_ADDR", "127.0.0.1:70000"), []string{"ROOMCAST_DEBUG_ADDR", "0 to 65535"}},
		{"metrics port above 65535", nil, env("ROOMCAST_METRICS_ADDR", "127.0.0.1:70000"), []string{"ROOMCAST_METRICS_ADDR", "0 to 65535"}},
		{"metrics address without metrics", []string{"-metrics=false"}, env("ROOMCAST_METRICS_ADDR", ":9091"), []string{"ROOMCAST_METRICS_ADDR", "-metrics"}},
		{"address from env named as env", nil, env("ROOMCAST_ADDR", "nonsense"), []string{`ROOMCAST_ADDR "nonsense"`}},
		{"origin with a path", nil, env("ROOMCAST_ALLOWED_ORIGINS", "http://h:8095/"), []string{"ROOMCAST_ALLOWED_ORIGINS", `"http://h:8095"`}},
		{"origin without scheme", nil, env("ROOMCAST_ALLOWED_ORIGINS", "h:8095"), []string{"not an origin"}},
		{"origin upper-case", []string{"-allowed-origins", "HTTPS://A.example"}, env(), []string{"-allowed-origins", `"https://a.example"`}},
		{"origin with query", []string{"-allowed-origins", "https://a.example?x=1"}, env(), []string{"no user, query or fragment"}},
		{"origin with another scheme", []string{"-allowed-origins", "ftp://a.example"}, env(), []string{"http or https"}},
		{"unknown command", []string{"serve"}, env(), []string{`unknown command "serve"`, "roomcast pub"}},
		{"dev-token key file with a JWT secret", nil, env("ROOMCAST_DEV_TOKEN_KEY_FILE", "/tmp/k", "ROOMCAST_JWT_SECRET", strings.Repeat("s", 32)),
			[]string{"ROOMCAST_DEV_TOKEN_KEY_FILE", "open mode"}},
		{"dev-token key file with an API key", []string{"-dev-token-key-file", "/tmp/k", "-api-key", "k"}, env(), []string{"-dev-token-key-file"}},
		{"sentinel master without a URL", nil, env("ROOMCAST_REDIS_SENTINEL_MASTER", "mymaster"),
			[]string{"ROOMCAST_REDIS_SENTINEL_MASTER", "-redis-url", "sentinels"}},
		{"empty sentinel master flag", []string{"-redis-sentinel-master", ""}, env("ROOMCAST_REDIS_URL", "redis://s1:26379"),
			[]string{"-redis-sentinel-master", "name of the primary"}},
		{"sentinel master with a space", nil, env("ROOMCAST_REDIS_SENTINEL_MASTER", "my master", "ROOMCAST_REDIS_URL", "redis://s1:26379"),
			[]string{"ROOMCAST_REDIS_SENTINEL_MASTER", `"my master"`}},
		{"sentinel URL without a host", nil, env("ROOMCAST_REDIS_SENTINEL_MASTER", "m", "ROOMCAST_REDIS_URL", "redis:///0"),
			[]string{"ROOMCAST_REDIS_URL", "sentinel"}},
		{"sentinel addr without a port", nil, env("ROOMCAST_REDIS_SENTINEL_MASTER", "m", "ROOMCAST_REDIS_URL", "redis://s1:26379?addr=s2"),
			[]string{"ROOMCAST_REDIS_URL", `addr="s2"`}},
		{"sentinel URL naming another master", nil, env("ROOMCAST_REDIS_SENTINEL_MASTER", "m", "ROOMCAST_REDIS_URL", "redis://s1:26379?master_name=other"),
			[]string{"ROOMCAST_REDIS_URL", `"other"`, "ROOMCAST_REDIS_SENTINEL_MASTER"}},
		{"master_name without the sentinel setting", nil, env("ROOMCAST_REDIS_URL", "redis://s1:26379?master_name=m"),
			[]string{"ROOMCAST_REDIS_URL", "ROOMCAST_REDIS_SENTINEL_MASTER"}},
		{"dev-token key file with Redis", nil, env("ROOMCAST_DEV_TOKEN_KEY_FILE", "/tmp/k", "ROOMCAST_REDIS_URL", "redis://h"),
			[]string{"ROOMCAST_DEV_TOKEN_KEY_FILE", "Redis"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, tt.env, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadReportsEveryInvalidCombination(t *testing.T) {
	_, err := Load([]string{"-retry-min", "5s", "-retry-max", "1s", "-poll-timeout", "60s"}, env(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-retry-max") || !strings.Contains(err.Error(), "-poll-timeout") {
		t.Errorf("error %v, want both problems named", err)
	}
}

func TestLoadHelp(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"-h"}, env(), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("error %v, want flag.ErrHelp", err)
	}
	for _, o := range Options() {
		if !strings.Contains(out.String(), "-"+o.Flag) || !strings.Contains(out.String(), "$"+o.Env) {
			t.Errorf("help does not show -%s with $%s", o.Flag, o.Env)
		}
	}
}

// TestOperationsDocListsEveryOption: docs/operations.md has a row for
// every option, in the order of Options(), with its variable and default.
func TestOperationsDocListsEveryOption(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	var order []string
	for _, line := range strings.Split(string(doc), "\n") {
		cols := strings.Split(line, "|")
		// The configuration table's rows: | `-flag` | `ROOMCAST_…` …
		if !strings.HasPrefix(line, "| `-") || len(cols) < 3 || !strings.HasPrefix(strings.TrimSpace(cols[2]), "`ROOMCAST_") {
			continue
		}
		flag := strings.Trim(cols[1], " `")
		rows[flag] = line
		order = append(order, flag)
	}
	var want []string
	for _, o := range Options() {
		want = append(want, "-"+o.Flag)
		row, ok := rows["-"+o.Flag]
		if !ok {
			t.Errorf("docs/operations.md has no row for -%s", o.Flag)
			continue
		}
		if !strings.Contains(row, "`"+o.Env+"`") || !strings.Contains(row, "`"+o.Default+"`") && o.Default != "" {
			t.Errorf("row of -%s does not name %s and its default %q:\n%s", o.Flag, o.Env, o.Default, row)
		}
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("rows in docs/operations.md:\n%s\nOptions() order:\n%s", strings.Join(order, " "), strings.Join(want, " "))
	}
}

// TestNumbersMustBeFinite: every numeric setting, as a variable and as a
// flag, refuses NaN, infinities and negative values with an error naming
// the setting; NaN once passed the "above 0" check and turned the publish
// rate limit off.
func TestNumbersMustBeFinite(t *testing.T) {
	var c Config
	numeric := 0
	for _, b := range bindings(&c) {
		var bad []string
		switch b.value.(type) {
		case float64Value, intValue, int64Value:
			bad = []string{"NaN", "nan", "Inf", "+Inf", "-Inf", "infinity", "1e400", "-1", "-0.5"}
		case durationValue:
			bad = []string{"NaN", "Inf", "-1s", "-1ns"}
		default:
			continue
		}
		numeric++
		for _, v := range bad {
			t.Run(b.Env+"="+v, func(t *testing.T) {
				if _, err := Load(nil, env(b.Env, v), io.Discard); err == nil || !strings.Contains(err.Error(), b.Env) {
					t.Errorf("%s=%s: error %v, want a refusal naming %s", b.Env, v, err, b.Env)
				}
				if _, err := Load([]string{"-" + b.Flag + "=" + v}, env(), io.Discard); err == nil || !strings.Contains(err.Error(), "-"+b.Flag) {
					t.Errorf("-%s=%s: error %v, want a refusal naming -%s", b.Flag, v, err, b.Flag)
				}
			})
		}
	}
	if numeric < 25 {
		t.Errorf("only %d numeric settings found", numeric)
	}
}

// Origins in the form browsers send them are accepted as given.
func TestLoadOrigins(t *testing.T) {
	c, err := Load([]string{"-allowed-origins", "https://app.example, http://localhost:3000,*,http://[::1]:8080"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://app.example", "http://localhost:3000", "*", "http://[::1]:8080"}
	if got := c.Origins(); !slices.Equal(got, want) {
		t.Errorf("origins %q, want %q", got, want)
	}
}
