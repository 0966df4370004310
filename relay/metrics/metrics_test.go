package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/relay"
	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/rooms"
	"github.com/roomcast/roomcast/rooms/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// flakyBackbone fails publishes while fail is set, so that the backbone's
// health can be watched going down and up again.
type flakyBackbone struct {
	*memory.Backbone
	fail atomic.Bool
}

func (f *flakyBackbone) Unwrap() rooms.Backbone { return f.Backbone }

func (f *flakyBackbone) Publish(ctx context.Context, msg rooms.Message, key string) (rooms.Published, error) {
	if f.fail.Load() {
		return rooms.Published{}, fmt.Errorf("%w: down (test)", rooms.ErrBackboneDown)
	}
	return f.Backbone.Publish(ctx, msg, key)
}

// instrumented is a relay wired as main wires it (relaytest.Start
// assembles through app.Assemble): the hub reports to the metrics, its
// backbone is timed by them, and /metrics is served on a listener of its
// own.
type instrumented struct {
	*relaytest.Relay
	flaky *flakyBackbone
	token string
}

func start(t *testing.T, opts relay.Options, hub rooms.HubOptions) *instrumented {
	t.Helper()
	return startToken(t, opts, hub, "")
}

// startToken is start with /metrics requiring token (none when empty).
func startToken(t *testing.T, opts relay.Options, hub rooms.HubOptions, token string) *instrumented {
	t.Helper()
	bb := memory.New(memory.Options{})
	flaky := &flakyBackbone{Backbone: bb}
	r := relaytest.Start(t, relaytest.Options{Relay: opts, Hub: hub, Backbone: flaky, MetricsToken: token})
	r.Backbone = bb
	return &instrumented{Relay: r, flaky: flaky, token: token}
}

type families map[string]*dto.MetricFamily

// scrape reads /metrics as Prometheus does, in the text format.
func (r *instrumented) scrape(t *testing.T) families {
	t.Helper()
	var header http.Header
	if r.token != "" {
		header = relaytest.Bearer(r.token)
	}
	resp := r.Scrape(t, header)
	if resp.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", resp.Status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(resp.Body)))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v\n%s", err, resp.Body)
	}
	return fams
}

// value is the metric's value (a histogram's sample count) for the label
// pairs given, and whether it exists.
func (f families) value(name string, labels ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	if len(m.Label) != len(pairs)/2 {
		return false
	}
	for i := 0; i < len(pairs); i += 2 {
		if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool {
			return l.GetName() == pairs[i] && l.GetValue() == pairs[i+1]
		}) {
			return false
		}
	}
	return true
}

// metric names a series: a metric name and at most one label pair.
type metric struct {
	name  string
	label [2]string
}

func series(name string, label ...string) metric {
	x := metric{name: name}
	copy(x.label[:], label)
	return x
}

func (x metric) labels() []string {
	if x.label[0] == "" {
		return nil
	}
	return x.label[:]
}

func (x metric) String() string {
	if x.label[0] == "" {
		return x.name
	}
	return x.name + "{" + x.label[0] + `="` + x.label[1] + `"}`
}

// expect scrapes until every series has its value, failing after
// relaytest.Wait with the values last seen: counters move on the delivery
// path, a moment after the client saw what caused them.
func (r *instrumented) expect(t *testing.T, want map[metric]float64) {
	t.Helper()
	relaytest.EventuallyOK(t, "the metrics have their values", func() error {
		fams := r.scrape(t)
		var wrong []string
		for x, v := range want {
			got, ok := fams.value(x.name, x.labels()...)
			switch {
			case !ok:
				wrong = append(wrong, x.String()+" is missing")
			case got != v:
				wrong = append(wrong, x.String()+" = "+model.SampleValue(got).String()+", want "+model.SampleValue(v).String())
			}
		}
		if len(wrong) == 0 {
			return nil
		}
		slices.Sort(wrong)
		return errors.New("\n" + strings.Join(wrong, "\n"))
	})
}

// atLeast scrapes until the series is at least min and returns its value.
func (r *instrumented) atLeast(t *testing.T, x metric, min float64) float64 {
	t.Helper()
	var got float64
	relaytest.EventuallyOK(t, fmt.Sprintf("%s is at least %g", x, min), func() error {
		var ok bool
		if got, ok = r.scrape(t).value(x.name, x.labels()...); !ok || got < min {
			return fmt.Errorf("%s = %g (present %v)", x, got, ok)
		}
		return nil
	})
	return got
}

// TestMetricsAtRest: a fresh relay exports every family, with the labelled
// ones it knows the labels of at zero, so that rate() sees their first
// increment.
func TestMetricsAtRest(t *testing.T) {
	r := start(t, relay.Options{}, rooms.HubOptions{})
	r.expect(t, map[metric]float64{
		series("roomcast_connections", "transport", "sse"):            0,
		series("roomcast_connections", "transport", "poll"):           0,
		series("roomcast_rooms"):                                      0,
		series("roomcast_poll_sessions"):                              0,
		series("roomcast_events_published_total", "kind", "retained"): 0,
		series("roomcast_events_published_total", "kind", "volatile"): 0,
		series("roomcast_events_delivered_total"):                     0,
		series("roomcast_events_dropped_total"):                       0,
		series("roomcast_slow_consumer_disconnects_total"):            0,
		series("roomcast_resumes_total", "outcome", "replayed"):       0,
		series("roomcast_resumes_total", "outcome", "reset"):          0,
		series("roomcast_publish_duration_seconds"):                   0,
		series("roomcast_backbone_up"):                                1,
		series("roomcast_rate_limited_total", "limit", "publish"):     0,
		series("roomcast_rate_limited_total", "limit", "connections"): 0,
	})
	fams := r.scrape(t)
	for name, fam := range fams {
		if !strings.HasPrefix(name, "roomcast_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s is not prefixed roomcast_", name)
		}
		if strings.HasPrefix(name, "roomcast_") && fam.GetHelp() == "" {
			t.Errorf("metric %s has no help", name)
		}
	}
	if _, ok := fams.value("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}
}

// TestMetricsPollSessions: a long-poller that names itself keeps its place
// for its next poll, and the gauge shows it until it expires.
func TestMetricsPollSessions(t *testing.T) {
	r := start(t, relay.Options{}, rooms.HubOptions{PollSessionTTL: time.Second})
	var named struct{ Cursor, Connection string }
	r.Get(t, "/v1/rooms/quiet/poll?timeout=0&client=named-poller").JSON(t, &named)
	r.PublishJSON(t, "quiet", map[string]any{"data": "for the named poller"})
	r.Get(t, "/v1/rooms/quiet/poll?timeout=30&client=named-poller&proof="+named.Connection+"&cursor="+named.Cursor).JSON(t, &named)
	r.expect(t, map[metric]float64{series("roomcast_poll_sessions"): 1, series("roomcast_rooms"): 1,
		series("roomcast_client_bindings"): 1})
	r.expect(t, map[metric]float64{series("roomcast_poll_sessions"): 0, series("roomcast_rooms"): 0})
}

// TestMetricsMove drives streams, polls, publishes and resumes over HTTP
// and watches each counter and gauge move by what they did.
func TestMetricsMove(t *testing.T) {
	r := start(t, relay.Options{}, rooms.HubOptions{})

	s := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{})
	s.Connected(t)
	r.expect(t, map[metric]float64{
		series("roomcast_connections", "transport", "sse"): 1,
		series("roomcast_rooms"):                           1,
	})
	r.atLeast(t, series("roomcast_backbone_duration_seconds", "op", "subscribe"), 1)

	id := r.PublishJSON(t, "lobby", map[string]any{"data": 1})
	if got := s.NextEvent(t).EventID(t); got != id {
		t.Fatalf("stream got %s, want %s", got, id)
	}
	r.PublishJSON(t, "lobby", map[string]any{"data": "gone", "volatile": true})
	s.Expect(t, "message")
	r.expect(t, map[metric]float64{
		series("roomcast_events_published_total", "kind", "retained"): 1,
		series("roomcast_events_published_total", "kind", "volatile"): 1,
		series("roomcast_events_delivered_total"):                     2,
		series("roomcast_publish_duration_seconds"):                   2,
		series("roomcast_backbone_duration_seconds", "op", "publish"): 2,
	})

	// A poll is a connection while it is held: at the tail of its room.
	var tail struct{ Cursor string }
	r.Get(t, "/v1/rooms/quiet/poll").JSON(t, &tail)
	polled := make(chan int, 1)
	go func() {
		resp, err := r.Client().Get(r.URL + "/v1/rooms/quiet/poll?timeout=30&cursor=" + tail.Cursor)
		if err != nil {
			polled <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	r.expect(t, map[metric]float64{
		series("roomcast_connections", "transport", "poll"): 1,
		series("roomcast_connections", "transport", "sse"):  1,
	})
	r.PublishJSON(t, "quiet", map[string]any{"data": "wake up"})
	if code := <-polled; code != http.StatusOK {
		t.Fatalf("held poll: status %d", code)
	}
	// That poller gave no client id: nothing waits for its next poll.
	r.expect(t, map[metric]float64{
		series("roomcast_connections", "transport", "poll"): 0,
		series("roomcast_poll_sessions"):                    0,
	})

	// Resumes: from a good cursor, and from one that is not.
	last := s.LastEventID()
	s.Close()
	r.expect(t, map[metric]float64{
		series("roomcast_connections", "transport", "sse"): 0,
		series("roomcast_rooms"):                           0,
	})
	missed := r.PublishJSON(t, "lobby", map[string]any{"data": 2})
	resumed := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{LastEventID: last})
	resumed.Connected(t)
	if got := resumed.NextEvent(t).EventID(t); got != missed {
		t.Fatalf("resumed stream got %s, want %s", got, missed)
	}
	bad := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{LastEventID: relaytest.Tamper(last)})
	bad.Connected(t)
	bad.Expect(t, "roomcast:reset")
	fresh := r.Subscribe(t, "/v1/rooms/lobby/events", relaytest.StreamOptions{})
	fresh.Connected(t)
	r.expect(t, map[metric]float64{
		series("roomcast_resumes_total", "outcome", "replayed"):       1,
		series("roomcast_resumes_total", "outcome", "reset"):          1,
		series("roomcast_connections", "transport", "sse"):            3,
		series("roomcast_rooms"):                                      1,
		series("roomcast_events_published_total", "kind", "retained"): 3,
	})
	r.atLeast(t, series("roomcast_backbone_duration_seconds", "op", "since"), 1)

	// The backbone's health follows its last answer.
	r.flaky.fail.Store(true)
	if resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events", Body: []byte("x")}); resp.Status < 500 {
		t.Fatalf("publish to a failing backbone: status %d: %s", resp.Status, resp.Body)
	}
	r.expect(t, map[metric]float64{series("roomcast_backbone_up"): 0})
	r.flaky.fail.Store(false)
	r.PublishJSON(t, "lobby", map[string]any{"data": 3})
	r.expect(t, map[metric]float64{
		series("roomcast_backbone_up"):                                1,
		series("roomcast_events_published_total", "kind", "retained"): 4,
	})
	// A refusal of what a caller sent is no failure of the backbone: an
	// expired publish token, which anyone can send, took it "down".
	old := rooms.NewPublishToken(time.Now().Add(-rooms.PublishTokenWindow - time.Minute)).String()
	resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/lobby/events",
		Header: http.Header{"Idempotency-Key": {old}}, Body: []byte("x")})
	if resp.Status != http.StatusConflict {
		t.Fatalf("publish with an expired token: status %d: %s", resp.Status, resp.Body)
	}
	r.expect(t, map[metric]float64{series("roomcast_backbone_up"): 1})
}

// TestMetricsSlowConsumer stalls a reader until its queue overflows: the
// volatile events it cannot take are dropped first, then it is dropped.
func TestMetricsSlowConsumer(t *testing.T) {
	r := start(t, relay.Options{WriteTimeout: time.Minute}, rooms.HubOptions{QueueSize: 8})
	_, id := r.Relay.OpenStalled(t, "/v1/rooms/stall/events")
	conn, err := r.Hub.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`{"data":"` + strings.Repeat("x", 32<<10) + `"}`)
	small := []byte(`{"data":"v","volatile":true}`)
	for n := 0; ; n++ {
		if n == 5000 {
			t.Fatal("the stalled connection is still served after 5000 events")
		}
		r.Publish(t, "/v1/rooms/stall/events", "application/json", big, nil)
		r.Publish(t, "/v1/rooms/stall/events", "application/json", small, nil)
		select {
		case <-conn.Done():
		default:
			continue
		}
		break
	}
	if reason := conn.Reason(); reason.Code != rooms.CloseSlowConsumer {
		t.Fatalf("stalled connection closed for %+v, want slow_consumer", reason)
	}
	r.expect(t, map[metric]float64{series("roomcast_slow_consumer_disconnects_total"): 1})
	if v, _ := r.scrape(t).value("roomcast_events_dropped_total"); v < 1 {
		t.Errorf("roomcast_events_dropped_total = %g, want volatile events dropped before the disconnect", v)
	}
}

// TestMetricsRateLimited counts refusals by the limit that refused.
func TestMetricsRateLimited(t *testing.T) {
	r := start(t, relay.Options{Limits: relay.Limits{PublishRate: 0.001, PublishBurst: 1, MaxConnsPerIP: 1}}, rooms.HubOptions{})
	r.PublishJSON(t, "a", map[string]any{"data": 1})
	for range 2 {
		resp := r.Do(t, relaytest.Request{Method: http.MethodPost, Path: "/v1/rooms/a/events", Body: []byte("x")})
		if resp.Status != http.StatusTooManyRequests {
			t.Fatalf("publish beyond the burst: status %d: %s", resp.Status, resp.Body)
		}
	}
	s := r.Subscribe(t, "/v1/rooms/a/events", relaytest.StreamOptions{})
	s.Connected(t)
	if resp := r.Open(t, relaytest.Request{Path: "/v1/rooms/a/events"}); resp.Status != http.StatusTooManyRequests {
		t.Fatalf("second stream from one address: status %d: %s", resp.Status, resp.Body)
	}
	r.expect(t, map[metric]float64{
		series("roomcast_rate_limited_total", "limit", "publish"):     2,
		series("roomcast_rate_limited_total", "limit", "connections"): 1,
		series("roomcast_events_published_total", "kind", "retained"): 1,
	})
}

// TestMetricsNotOnTheRelay: the relay's own listener does not serve
// /metrics, token or not; only the metrics listener does.
func TestMetricsNotOnTheRelay(t *testing.T) {
	r := startToken(t, relay.Options{}, rooms.HubOptions{}, "scrape-me")
	for _, header := range []http.Header{nil, relaytest.Bearer("scrape-me")} {
		if resp := r.Do(t, relaytest.Request{Path: "/metrics", Header: header}); resp.Status != http.StatusNotFound || strings.Contains(string(resp.Body), "roomcast_") {
			t.Errorf("GET /metrics on the relay with %v: status %d, want 404: %.300s", header, resp.Status, resp.Body)
		}
	}
	if resp := r.Scrape(t, relaytest.Bearer("scrape-me")); resp.Status != http.StatusOK || !strings.Contains(string(resp.Body), "roomcast_connections{") {
		t.Errorf("GET /metrics on the metrics listener: status %d: %.300s", resp.Status, resp.Body)
	}
}

// TestMetricsToken: with a token, /metrics answers only to it.
func TestMetricsToken(t *testing.T) {
	r := startToken(t, relay.Options{}, rooms.HubOptions{}, "scrape-me")
	cases := []struct {
		name   string
		header http.Header
		status int
	}{
		{"no header", nil, http.StatusUnauthorized},
		{"wrong token", relaytest.Bearer("scrape-you"), http.StatusUnauthorized},
		{"token prefix", relaytest.Bearer("scrape"), http.StatusUnauthorized},
		{"not bearer", http.Header{"Authorization": {"Basic scrape-me"}}, http.StatusUnauthorized},
		{"token", relaytest.Bearer("scrape-me"), http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := r.Scrape(t, tc.header)
			if resp.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.Status, tc.status, resp.Body)
			}
			if tc.status == http.StatusOK {
				if !strings.Contains(string(resp.Body), "roomcast_connections{") {
					t.Errorf("no metrics in the answer:\n%.500s", resp.Body)
				}
				return
			}
			if resp.Header.Get("WWW-Authenticate") != "Bearer" || strings.Contains(string(resp.Body), "roomcast_") {
				t.Errorf("refusal: headers %v body %s", resp.Header, resp.Body)
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			resp.JSON(t, &e)
			if e.Error.Code != "unauthenticated" || e.Error.Message == "" {
				t.Errorf("refusal body %s", resp.Body)
			}
		})
	}
	r.expect(t, map[metric]float64{series("roomcast_connections", "transport", "sse"): 0})
}
