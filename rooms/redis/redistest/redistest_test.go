package redistest

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// outcome records how a test helper ended a test.
type outcome struct {
	testing.TB
	fatal, skip string
}

func (o *outcome) Helper() {}

func (o *outcome) Logf(string, ...any) {}

func (o *outcome) Fatalf(format string, args ...any) {
	o.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (o *outcome) Skipf(format string, args ...any) {
	o.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with o on a goroutine of its own, as Goexit requires.
func (o *outcome) run(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(o)
	}()
	<-done
}

func TestUnavailableFailsUnderCI(t *testing.T) {
	cases := []struct {
		ci        string
		wantFatal bool
	}{
		{"true", true},
		{"", false},
		{"false", false},
	}
	for _, c := range cases {
		t.Setenv("CI", c.ci)
		o := &outcome{TB: t}
		o.run(func(tb testing.TB) { Unavailable(tb, "no redis at %s", "nowhere") })
		if c.wantFatal && (o.fatal == "" || o.skip != "") || !c.wantFatal && (o.skip == "" || o.fatal != "") {
			t.Errorf("CI=%q: fatal %q, skip %q; want fatal=%v", c.ci, o.fatal, o.skip, c.wantFatal)
		}
	}
}

func TestServerStopsAndStarts(t *testing.T) {
	srv := NewServer(t)
	rdb := srv.Client()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	srv.Stop()
	srv.Stop() // stopping twice is harmless
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := rdb.Ping(short).Err(); err == nil {
		t.Fatal("PING answered by a stopped server")
	}
	srv.Start()
	if srv.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", srv.Addr(), addr)
	}
	if err := rdb.Get(ctx, "k").Err(); err != goredis.Nil {
		t.Fatalf("GET after a restart: %v, want no key (no persistence)", err)
	}
	if err := rdb.Set(ctx, "k", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	if err := rdb.Get(ctx, "k").Err(); err != goredis.Nil {
		t.Fatalf("GET after Restart: %v, want no key", err)
	}
}

func TestPrefixIsCleanedUp(t *testing.T) {
	url := SharedURL(t)
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	var prefix string
	t.Run("user", func(t *testing.T) {
		prefix = Prefix(t)
		if other := Prefix(t); other == prefix {
			t.Fatalf("two calls returned prefix %q", prefix)
		}
		for i := range 3 {
			if err := rdb.Set(ctx, fmt.Sprint(prefix, i), "v", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys left under %s: %v, %v", prefix, keys, err)
	}
}
