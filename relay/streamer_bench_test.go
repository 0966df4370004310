package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
)

// BenchmarkStreamFanout measures the whole delivery path, publish to bytes
// on 1,000 subscribers' sockets, over loopback: ns/op is per published
// event, ns/delivery per event and subscriber. The subscribers' reading
// shares the CPU, as a load generator on the same machine would.
func BenchmarkStreamFanout(b *testing.B) {
	for _, hijack := range []bool{true, false} {
		name := "hijacked"
		if !hijack {
			name = "net-http"
		}
		b.Run(name, func(b *testing.B) {
			const subscribers = 1000
			r := relaytest.Start(b, relaytest.Options{Relay: relay.Options{DisableHijack: !hijack, Heartbeat: time.Hour}})
			var got atomic.Int64
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); wg.Wait() }()
			for range subscribers {
				c, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
				if err != nil {
					b.Fatal(err)
				}
				go func() { <-ctx.Done(); c.Close() }()
				if _, err := c.Write([]byte("GET /v1/rooms/bench/events HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					b.Fatal(err)
				}
				br := bufio.NewReaderSize(c, 64<<10)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					if strings.HasPrefix(line, "event: roomcast:connected") {
						break
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 64<<10)
					for {
						n, err := br.Read(buf)
						got.Add(int64(bytes.Count(buf[:n], []byte("\ndata: "))))
						if err != nil {
							return
						}
					}
				}()
			}
			data := []byte(`{"n":1}`)
			bb := r.Backbone
			// Publish in bursts of 100, each taken by every subscriber
			// before the next: a burst fits every connection's queue, so
			// no subscriber is dropped as a slow consumer.
			settle := func(want int64) {
				deadline := time.Now().Add(time.Minute)
				for got.Load() < want && time.Now().Before(deadline) {
					time.Sleep(100 * time.Microsecond)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := bb.Publish(context.Background(), rooms.Message{Channels: []string{"bench"}, Event: "m", Data: data}, ""); err != nil {
					b.Fatal(err)
				}
				if (i+1)%100 == 0 {
					settle(int64(i+1) * subscribers)
				}
			}
			want := int64(b.N) * subscribers
			settle(want)
			b.StopTimer()
			if got.Load() < want {
				b.Fatalf("%d of %d deliveries", got.Load(), want)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(want), "ns/delivery")
		})
	}
}
