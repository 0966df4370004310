package redis

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/roomcast/roomcast/rooms/redis/redistest"
)

// BenchmarkRoundTrips sends one small command per operation from 64
// goroutines at once (the relay's publishes in flight), through the
// pipe, through go-redis's AutoPipeliner and one by one; "cmds/pipeline"
// is how many shared a write. Run: go test -run '^$' -bench RoundTrips
// -cpu 1 ./rooms/redis/ (the relay's one core).
func BenchmarkRoundTrips(b *testing.B) {
	ctx := context.Background()
	key := redistest.Prefix(b) + "rt"
	newClient := func(b *testing.B) *goredis.Client {
		ro, err := goredis.ParseURL(redistest.SharedURL(b))
		if err != nil {
			b.Fatal(err)
		}
		ro.ContextTimeoutEnabled = true
		rdb := goredis.NewClient(ro)
		b.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	run := func(b *testing.B, send func(ctx context.Context, cmd goredis.Cmder) error) {
		b.SetParallelism(64)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				cmd := onceCmd{goredis.NewCmd(ctx, "incr", key)}
				if err := send(ctx, cmd); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("pipe", func(b *testing.B) {
		rdb := newClient(b)
		p := newPipe(rdb, pipeFlushers, pipeMaxBatch, pipeMaxBytes, 10*time.Second)
		defer p.Close()
		log := watchFlushes(p)
		run(b, func(ctx context.Context, cmd goredis.Cmder) error { return p.do(ctx, cmd, nil) })
		if n := len(log.snapshot()); n > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "cmds/pipeline")
		}
	})
	b.Run("autopipeliner", func(b *testing.B) {
		rdb := newClient(b)
		var rt pipelineCount
		rdb.AddHook(&rt)
		ap, err := rdb.AutoPipeline()
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = ap.Close() }()
		run(b, func(ctx context.Context, cmd goredis.Cmder) error { return ap.Process(ctx, cmd) })
		if n := len(rt.snapshot()); n > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "cmds/pipeline")
		}
	})
	b.Run("single", func(b *testing.B) {
		rdb := newClient(b)
		run(b, func(ctx context.Context, cmd goredis.Cmder) error { return rdb.Process(ctx, cmd) })
	})
}
