// Package metrics exposes roomcast's Prometheus metrics, all named
// roomcast_*, from a registry of its own.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roomcast/roomcast/rooms"
)

// Metrics holds every roomcast metric. It implements rooms.Observer.
type Metrics struct {
	reg *prometheus.Registry

	Connections *prometheus.GaugeVec
	// SSEConnections and PollConnections are Connections' two series,
	// looked up once rather than per request.
	SSEConnections, PollConnections prometheus.Gauge
	Published                       *prometheus.CounterVec
	delivered                       prometheus.Counter
	dropped                         prometheus.Counter
	slowConsumers                   prometheus.Counter
	resumes                         *prometheus.CounterVec
	PublishTime                     prometheus.Histogram
	backboneTime                    *prometheus.HistogramVec
	RateLimited                     *prometheus.CounterVec
	BackboneUp                      prometheus.Gauge
}

// New registers every metric. rooms reports how many rooms this instance
// holds subscriptions for, pollSessions how many long-pollers' connections
// it keeps joined between their polls.
func New(rooms, pollSessions func() int) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roomcast_connections", Help: "Open connections by transport (sse, poll).",
		}, []string{"transport"}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_events_published_total", Help: "Events accepted for publishing, by kind (retained, volatile).",
		}, []string{"kind"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_events_delivered_total", Help: "Events queued for delivery to connections.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_events_dropped_total", Help: "Volatile events dropped for slow connections.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_slow_consumer_disconnects_total", Help: "Connections closed because they fell too far behind.",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_resumes_total", Help: "Stream resumes by outcome (replayed, reset).",
		}, []string{"outcome"}),
		PublishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "roomcast_publish_duration_seconds", Help: "Time to accept a publish request, body read to answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		backboneTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roomcast_backbone_duration_seconds", Help: "Backbone call latency by operation.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, []string{"op"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_rate_limited_total", Help: "Requests refused by a rate or connection limit, by limit.",
		}, []string{"limit"}),
		BackboneUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_backbone_up", Help: "1 when the backbone answered its last check, else 0.",
		}),
	}
	reg.MustRegister(m.Connections, m.Published, m.delivered, m.dropped, m.slowConsumers, m.resumes,
		m.PublishTime, m.backboneTime, m.RateLimited, m.BackboneUp,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roomcast_rooms", Help: "Rooms this instance holds subscriptions for."},
			func() float64 { return float64(rooms()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "roomcast_poll_sessions",
			Help: "Long-pollers whose connection this instance keeps joined between their polls."},
			func() float64 { return float64(pollSessions()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.SSEConnections = m.Connections.WithLabelValues("sse")
	m.PollConnections = m.Connections.WithLabelValues("poll")
	for _, o := range []string{"replayed", "reset"} {
		m.resumes.WithLabelValues(o)
	}
	// Known labels start at zero, so that rate() sees their first increment.
	for _, k := range []string{"retained", "volatile"} {
		m.Published.WithLabelValues(k)
	}
	for _, l := range []string{"publish", "connections", "join", "ticket", "token"} {
		m.RateLimited.WithLabelValues(l)
	}
	return m
}

// Gauge registers a gauge read from value at every scrape. A name
// registered already keeps its first reader.
func (m *Metrics) Gauge(name, help string, value func() int) {
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
		func() float64 { return float64(value()) }))
}

// Delivered implements rooms.Observer.
func (m *Metrics) Delivered(n int) { m.delivered.Add(float64(n)) }

// Dropped implements rooms.Observer.
func (m *Metrics) Dropped(n int) { m.dropped.Add(float64(n)) }

// SlowConsumer implements rooms.Observer.
func (m *Metrics) SlowConsumer() { m.slowConsumers.Inc() }

// Resumed implements rooms.Observer.
func (m *Metrics) Resumed(outcome string) { m.resumes.WithLabelValues(outcome).Inc() }

// Handler serves the metrics to anyone: relay.MetricsHandler puts the
// metrics token in front of it, with the API's error answer.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Backbone wraps b so that every call's latency is observed.
func (m *Metrics) Backbone(b rooms.Backbone) rooms.Backbone {
	return &timedBackbone{Backbone: b, m: m}
}

type timedBackbone struct {
	rooms.Backbone
	m *Metrics
}

// Unwrap returns the wrapped backbone, so its optional interfaces stay reachable.
func (t *timedBackbone) Unwrap() rooms.Backbone { return t.Backbone }

func (t *timedBackbone) observe(op string, start time.Time, err error) {
	t.m.backboneTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
	// Only the backbone's own failures say it is down: a refusal of the
	// caller's request (an expired or reused publish token) is an answer,
	// and any client can send one.
	switch {
	case err == nil:
		t.m.BackboneUp.Set(1)
	case errors.Is(err, rooms.ErrBackboneDown):
		t.m.BackboneUp.Set(0)
	}
}

func (t *timedBackbone) Publish(ctx context.Context, msg rooms.Message, key string) (rooms.Published, error) {
	start := time.Now()
	p, err := t.Backbone.Publish(ctx, msg, key)
	t.observe("publish", start, err)
	if err == nil && !p.Duplicate {
		kind := "retained"
		if msg.Volatile {
			kind = "volatile"
		}
		t.m.Published.WithLabelValues(kind).Inc()
	}
	return p, err
}

func (t *timedBackbone) Since(ctx context.Context, ch string, after uint64, limit int) (rooms.History, error) {
	start := time.Now()
	h, err := t.Backbone.Since(ctx, ch, after, limit)
	t.observe("since", start, err)
	return h, err
}

func (t *timedBackbone) Subscribe(ctx context.Context, ch string, r rooms.Receiver) (uint64, error) {
	start := time.Now()
	head, err := t.Backbone.Subscribe(ctx, ch, r)
	t.observe("subscribe", start, err)
	return head, err
}

func (t *timedBackbone) Epoch(ctx context.Context) (string, error) {
	start := time.Now()
	e, err := t.Backbone.Epoch(ctx)
	t.observe("epoch", start, err)
	return e, err
}
