// Command roomcast-bench is roomcast's load generator (`roomcast bench`
// runs it): it measures relays running on this machine. It is its own
// binary so that the relay carries none of it; the container image ships
// it beside roomcast.
//
// Subscribers are cheap on purpose, so that tens of thousands fit beside
// the relay: each SSE stream is one TCP connection decoded by a small
// state machine (HTTP head, chunked coding, event-stream lines), with no
// HTTP client or SSE library per connection. Once connected, a stream is
// read on Linux by one of a few epoll loops (one per GOMAXPROCS), each
// reading many sockets into one buffer; elsewhere, or with -reader
// goroutine, by a goroutine and a buffer of its own. Subscribers connect
// from several source addresses (127.0.0.1, 127.0.0.2, …) so that their
// number is not bounded by the ~28,000 ephemeral ports of one address.
// Publishers send text/plain bodies that carry the publisher, a sequence
// number and the send time, which every delivery is checked and timed
// against: deliveries, latency, losses, duplicates and reordering per
// subscriber, and, given the relays' pids, their CPU time per delivery and
// memory per connection from /proc.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomcast/roomcast/relay/sysmon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(runCommand(ctx))
}

func runCommand(ctx context.Context) int {
	// The readers wake from idle at every publish, as the relay's writers
	// do: the runtime monitor's wake-ups would preempt them too.
	stop, _, err := sysmon.BatchWhile(ctx)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		fmt.Fprintln(os.Stderr, "roomcast bench: the runtime monitor keeps its scheduling:", err)
	}
	defer stop()
	return Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
}
