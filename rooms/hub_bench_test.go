package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// BenchmarkFanout publishes one event to a room with n single-room
// subscribers and measures until every subscriber's queue holds it. The
// in-memory backbone hands the event to the hub before Publish returns, so
// the timed part is the whole fan-out: stamping, encoding the envelope once,
// and queueing it for each connection. Taking the queues (the writers' part)
// is not timed. Setup stays cheap enough for -benchtime=1x.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			ctx := context.Background()
			bb := memory.New(memory.Options{})
			defer bb.Close()
			codec, err := rooms.NewCursorCodec([]byte("benchmark-cursor-key-0123456789"))
			if err != nil {
				b.Fatal(err)
			}
			hub := rooms.NewHub(bb, codec, rooms.HubOptions{})
			conns := make([]*rooms.Connection, n)
			for i := range conns {
				if conns[i], err = hub.Connect(ctx, rooms.ConnectRequest{Channels: []string{"bench"}}); err != nil {
					b.Fatal(err)
				}
			}
			defer func() {
				for _, c := range conns {
					hub.Disconnect(c)
				}
			}()
			for _, c := range conns {
				for range c.Drain() { // the connect bookkeeping
				}
			}
			msg := rooms.Message{
				Channels: []string{"bench"},
				Event:    "message",
				Data:     json.RawMessage(`{"text":"hello, world","n":42}`),
			}
			iterations := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bb.Publish(ctx, msg, ""); err != nil {
					b.Fatal(err)
				}
				iterations++
				b.StopTimer()
				for _, c := range conns {
					n := 0
					for d := range c.Drain() {
						if n++; d.Kind != rooms.KindEvent {
							b.Fatalf("a subscriber's queue holds a %v; want the event alone", d.Kind)
						}
					}
					if n != 1 {
						b.Fatalf("a subscriber's queue holds %d deliveries; want the event", n)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(iterations*n), "ns/delivery")
		})
	}
}
