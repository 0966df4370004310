package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/app"
	"github.com/roomcast/roomcast/relay/auth"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

// apiKey is the server API key of the relays these tests start.
const apiKey = "bench test server API key"

// testKey signs the cursors and tickets of the relays these tests start.
var testKey = []byte("bench test cursor key, 32 bytes!")

// relayOptions configure serveRelay.
type relayOptions struct {
	Relay relay.Options
	// H2C also serves HTTP/2 without TLS, H2CMaxStreams streams per
	// connection at most.
	H2C           bool
	H2CMaxStreams int
}

// serveRelay serves, until the test ends, a relay over bb assembled as
// main assembles one (app.Assemble, metrics included), with apiKey, the
// limits opts leaves unset lifted, and logs dropped. The tests sit beside
// the load generator, outside relay/, so relay/internal/relaytest is not
// theirs to use.
func serveRelay(t *testing.T, bb app.Backbone, opts relayOptions) string {
	t.Helper()
	a, err := auth.New(auth.Config{APIKey: apiKey, TicketKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	ro := opts.Relay
	ro.Auth = a
	ro.Logger = slog.New(slog.DiscardHandler)
	lim := &ro.Limits
	if lim.PublishRate == 0 && lim.PublishBurst == 0 {
		lim.PublishRate, lim.PublishBurst = 1e6, 1e6
	}
	if lim.PublishCallerRate == 0 && lim.PublishCallerBurst == 0 {
		lim.PublishCallerRate, lim.PublishCallerBurst = 1e6, 1e6
	}
	if lim.RequestRate == 0 && lim.RequestBurst == 0 {
		lim.RequestRate, lim.RequestBurst = 1e6, 1e6
	}
	if ro.Limits.MaxConnsPerIP == 0 {
		ro.Limits.MaxConnsPerIP = 1e6
	}
	if ro.Limits.MaxConnsPerUser == 0 {
		ro.Limits.MaxConnsPerUser = 1e6
	}
	r, err := app.Assemble(app.Parts{Backbone: bb, CursorKey: testKey, Relay: ro,
		Hub: rooms.HubOptions{Namespaces: ro.Namespaces}, Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Hub.Start(context.Background()); err != nil {
		r.Close()
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(r.Server)
	if opts.H2C {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		ts.Config.Protocols = &p
		ts.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: opts.H2CMaxStreams}
	}
	ts.Start()
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		r.Close()
	})
	r.Server.SetReady()
	return ts.URL
}

// closeLater keeps bb open while several relays share it, and closes it
// when the test ends.
type closeLater struct{ *memory.Backbone }

func (closeLater) Close() error { return nil }
