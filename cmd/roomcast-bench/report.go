package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run, as the JSON output shows it. Times are
// in the unit their name says; latencies are receive time minus send time
// on this machine's clock.
type Report struct {
	Label   string       `json:"label,omitempty"`
	Started time.Time    `json:"started"`
	Config  ReportConfig `json:"config"`

	Connect    ConnectReport  `json:"connect"`
	Publish    PublishReport  `json:"publish"`
	Deliveries DeliveryReport `json:"deliveries"`
	// Latency covers every delivery; ByKind splits SSE from polls and
	// ByTarget splits the targets, when there is more than one of either.
	Latency  LatencyReport            `json:"latency_ms"`
	ByKind   map[string]LatencyReport `json:"latency_ms_by_kind,omitempty"`
	ByTarget []LatencyReport          `json:"latency_ms_by_target,omitempty"`
	// LastDelivery is, over the events, the latency of each event's
	// slowest delivery: how long its fan-out took to reach everyone.
	LastDelivery LatencyReport `json:"last_delivery_ms"`

	Servers []ServerReport `json:"servers,omitempty"`
	// Server CPU over the publish window per delivery, all servers
	// together; memory per connection is idle RSS minus RSS before
	// connecting, over the connections.
	ServerCPUSecPer1kDeliveries float64 `json:"server_cpu_sec_per_1k_deliveries,omitempty"`
	ServerCPUMicrosPerDelivery  float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerRSSPerConnKB          float64 `json:"server_rss_per_conn_kb,omitempty"`

	LoadGenerator LoadGenReport `json:"load_generator"`
	Machine       MachineReport `json:"machine"`

	// Complete says every connected subscriber got every accepted
	// message; OK adds that nothing was lost, duplicated or reordered
	// (losses of volatile events aside) and no stream ended early.
	Complete    bool     `json:"complete"`
	OK          bool     `json:"ok"`
	DeadlineHit bool     `json:"deadline_hit,omitempty"`
	FileLimit   uint64   `json:"file_limit"`
	Errors      []string `json:"errors,omitempty"`
}

// ReportConfig is the workload.
type ReportConfig struct {
	Targets       []string `json:"targets"`
	PublishSpread bool     `json:"publish_spread,omitempty"`
	Room          string   `json:"room"`
	Event         string   `json:"event"`
	Subscribers   int      `json:"subscribers"`
	Polls         int      `json:"polls"`
	Publishers    int      `json:"publishers"`
	Rate          float64  `json:"rate"`
	Messages      int      `json:"messages"`
	Size          int      `json:"size"`
	Volatile      bool     `json:"volatile,omitempty"`
	Sources       int      `json:"sources"`
	WarmupSec     float64  `json:"warmup_sec"`
	ServerPIDs    []int    `json:"server_pids,omitempty"`
	Reader        string   `json:"reader"`
	H2C           bool     `json:"h2c,omitempty"`
}

// ConnectReport is the connect phase: until roomcast:connected for
// streams, until the first answer for pollers.
type ConnectReport struct {
	Subscribers int     `json:"subscribers"`
	Connected   int     `json:"connected"`
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

// PublishReport is what the publishers did.
type PublishReport struct {
	Messages int   `json:"messages"`
	Accepted int64 `json:"accepted"`
	Failed   int64 `json:"failed"`
	// Unsent messages were given up on: publishers fell too far behind
	// their schedule (the relay did not sustain the rate).
	Unsent   int64   `json:"unsent,omitempty"`
	SpanSec  float64 `json:"span_sec"`
	Rate     float64 `json:"rate"`
	MaxLagMs float64 `json:"max_lag_ms"`
	RTTP50ms float64 `json:"rtt_p50_ms"`
	RTTP99ms float64 `json:"rtt_p99_ms"`
	// Refused counts the publishes the relay answered with an error, by
	// status and code ("429 rate_limited"); Failed counts them too.
	Refused   map[string]int64 `json:"refused,omitempty"`
	LastError string           `json:"last_error,omitempty"`
}

// DeliveryReport counts deliveries of the benchmark event to connected
// subscribers. Expected is accepted messages × connected subscribers.
type DeliveryReport struct {
	Expected            int64   `json:"expected"`
	Received            int64   `json:"received"`
	Lost                int64   `json:"lost"`
	Duplicated          int64   `json:"duplicated"`
	OutOfOrder          int64   `json:"out_of_order"`
	Invalid             int64   `json:"invalid,omitempty"`
	Unexpected          int64   `json:"unexpected,omitempty"`
	SubscribersWithLoss int     `json:"subscribers_with_loss"`
	StreamsEnded        int     `json:"streams_ended"`
	WindowSec           float64 `json:"window_sec"`
	PerSec              float64 `json:"per_sec"`
	PollRequests        int64   `json:"poll_requests,omitempty"`
	PollResets          int64   `json:"poll_resets,omitempty"`
	PerPoll             float64 `json:"deliveries_per_poll,omitempty"`
}

// LatencyReport summarises latencies in milliseconds.
type LatencyReport struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// ServerReport is one relay process.
type ServerReport struct {
	PID           int     `json:"pid"`
	CPUSec        float64 `json:"cpu_sec"`
	RSSBeforeKB   int64   `json:"rss_before_kb"`
	RSSIdleKB     int64   `json:"rss_idle_kb"`
	RSSPeakKB     int64   `json:"rss_peak_kb"`
	IdleCPUPerSec float64 `json:"idle_cpu_per_sec"`
}

// LoadGenReport is this process.
type LoadGenReport struct {
	CPUSec float64 `json:"cpu_sec"`
	RSSKB  int64   `json:"rss_kb"`
}

// MachineReport describes where the run happened.
type MachineReport struct {
	CPUs       int     `json:"cpus"`
	GoVersion  string  `json:"go_version"`
	BusyCPUSec float64 `json:"busy_cpu_sec"`
	// OtherCPUSec is the machine's busy time in the window not spent by
	// the servers or this process: other tenants, the kernel's own work.
	OtherCPUSec float64 `json:"other_cpu_sec"`
}

func (rep *Report) setConfig(cfg *Config, targets []target) {
	c := &rep.Config
	for _, t := range targets {
		c.Targets = append(c.Targets, t.base)
	}
	c.PublishSpread = cfg.PublishSpread
	c.Room, c.Event = cfg.Room, cfg.Event
	c.Subscribers, c.Polls, c.Publishers = cfg.Subscribers, cfg.Polls, cfg.Publishers
	c.Rate, c.Messages, c.Size, c.Volatile = cfg.Rate, cfg.Messages, cfg.Size, cfg.Volatile
	c.Sources, c.WarmupSec, c.ServerPIDs, c.Reader = cfg.Sources, cfg.Warmup.Seconds(), cfg.ServerPIDs, cfg.Reader
	c.H2C = cfg.H2C
	for _, pid := range cfg.ServerPIDs {
		rep.Servers = append(rep.Servers, ServerReport{PID: pid})
	}
}

func (r *run) connectReport(took time.Duration) ConnectReport {
	c := ConnectReport{Subscribers: len(r.subs), Seconds: round3(took.Seconds())}
	var h histogram
	for _, s := range r.subs {
		if !s.ready.Load() || s.failed.Load() {
			c.Failed++
			if c.FirstError == "" && s.err != nil {
				c.FirstError = s.err.Error()
			}
			continue
		}
		c.Connected++
		h.add(s.connectTime.Microseconds())
	}
	c.P50ms, c.P99ms, c.MaxMs = ms(h.percentile(50)), ms(h.percentile(99)), ms(h.max)
	return c
}

// remedy says what to change for the usual reasons subscribers are
// refused, "" for others.
func (c ConnectReport) remedy() string {
	switch e := c.FirstError; {
	case strings.Contains(e, "too_many_connections"):
		return " (the relay allows 500 streams per client address and 50 per user by default: start it with " +
			"ROOMCAST_MAX_CONNS_PER_IP, and ROOMCAST_MAX_CONNS_PER_USER with -subscriber-token, above -n + -polls)"
	case strings.Contains(e, "unauthenticated") || strings.Contains(e, "invalid_token"):
		return " (the room needs a token to subscribe: give one with -subscriber-token)"
	case strings.Contains(e, "overloaded"):
		return " (the relay's admission control: lower -connect-concurrency)"
	}
	return ""
}

func ms(us int64) float64 { return round3(float64(us) / 1000) }

func latencyReport(h *histogram) LatencyReport {
	return LatencyReport{Count: int64(h.n), P50: ms(h.percentile(50)), P90: ms(h.percentile(90)),
		P99: ms(h.percentile(99)), P999: ms(h.percentile(99.9)), Max: ms(h.max), Mean: round3(h.mean() / 1000)}
}

// fill completes the report once every subscriber has stopped.
func (rep *Report) fill(r *run, win *window, t0, sendEnd time.Time, complete bool, peaks []int64) {
	cfg := &r.cfg
	rep.Errors = append(rep.Errors, win.sampleFailures...)
	p := &rep.Publish
	p.Messages, p.Accepted, p.Failed, p.Unsent = cfg.Messages, r.acceptedN.Load(), r.failedN.Load(), r.unsentN.Load()
	if p.Unsent > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("publishers fell behind: %d of %d messages not sent", p.Unsent, cfg.Messages))
	}
	p.SpanSec = round3(sendEnd.Sub(t0).Seconds())
	if p.SpanSec > 0 {
		p.Rate = round3(float64(p.Accepted) / sendEnd.Sub(t0).Seconds())
	}
	p.MaxLagMs = round3(float64(r.maxLag.Load()) / 1e6)
	rtt := r.pubRTT.snapshot()
	p.RTTP50ms, p.RTTP99ms = ms(rtt.percentile(50)), ms(rtt.percentile(99))
	if e, ok := r.pubErr.Load().(string); ok {
		p.LastError = e
	}
	r.refusedMu.Lock()
	refusals := make([]refusal, 0, len(r.refused))
	for f, n := range r.refused {
		if p.Refused == nil {
			p.Refused = map[string]int64{}
		}
		p.Refused[f.String()] = n
		refusals = append(refusals, f)
	}
	r.refusedMu.Unlock()
	slices.SortFunc(refusals, func(a, b refusal) int { return cmp.Compare(a.String(), b.String()) })
	for _, f := range refusals {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d of %d publishes refused with %s: %s", p.Refused[f.String()], cfg.Messages, f, f.remedy(cfg)))
	}

	accepted := r.acceptedBits()
	d := &rep.Deliveries
	var lastRecv int64
	var firstEnd string
	for _, s := range r.subs {
		if !s.ready.Load() || s.failed.Load() {
			continue
		}
		d.Expected += p.Accepted
		d.Received += s.received
		d.Duplicated += s.dups
		d.OutOfOrder += s.reorder
		d.Invalid += s.invalid
		d.PollRequests += s.polls
		d.PollResets += s.resets
		var lost, unexpected int64
		for i, w := range s.seen {
			lost += int64(popcount([]uint64{accepted[i] &^ w}))
			unexpected += int64(popcount([]uint64{w &^ accepted[i]}))
		}
		d.Lost += lost
		d.Unexpected += unexpected
		if lost > 0 {
			d.SubscribersWithLoss++
		}
		if s.ended {
			d.StreamsEnded++
			if firstEnd == "" && s.err != nil {
				firstEnd = fmt.Sprintf("subscriber %d: %v", s.index, s.err)
			}
		}
		lastRecv = max(lastRecv, s.lastRecv)
	}
	if firstEnd != "" {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d stream(s) or poller(s) ended early; first: %s", d.StreamsEnded, firstEnd))
	}
	if lastRecv > 0 {
		w := time.Unix(0, lastRecv).Sub(t0).Seconds()
		d.WindowSec = round3(w)
		if w > 0 {
			d.PerSec = float64(int64(float64(d.Received) / w))
		}
	}
	if d.PollRequests > 0 {
		var polled int64
		for _, s := range r.subs {
			if s.kind == kindPoll && s.ready.Load() && !s.failed.Load() {
				polled += s.received
			}
		}
		d.PerPoll = round3(float64(polled) / float64(d.PollRequests))
	}

	all := new(histogram)
	for k := range numKinds {
		kind := new(histogram)
		for t := range r.targets {
			kind.merge(r.latency[k][t].snapshot())
		}
		all.merge(kind)
		if cfg.Subscribers > 0 && cfg.Polls > 0 {
			if rep.ByKind == nil {
				rep.ByKind = map[string]LatencyReport{}
			}
			rep.ByKind[kindNames[k]] = latencyReport(kind)
		}
	}
	rep.Latency = latencyReport(all)
	last := new(histogram)
	for g := range r.lastDelivery {
		if v := r.lastDelivery[g].Load(); v > 0 {
			last.add(v)
		}
	}
	rep.LastDelivery = latencyReport(last)
	if len(r.targets) > 1 {
		for t := range r.targets {
			h := new(histogram)
			for k := range numKinds {
				h.merge(r.latency[k][t].snapshot())
			}
			rep.ByTarget = append(rep.ByTarget, latencyReport(h))
		}
	}

	var serverCPU time.Duration
	var before, idle int64
	for i := range rep.Servers {
		s := &rep.Servers[i]
		cpu := win.server(i)
		serverCPU += cpu
		s.CPUSec = round3(cpu.Seconds())
		s.RSSPeakKB = max(peaks[i], s.RSSIdleKB)
		before += s.RSSBeforeKB
		idle += s.RSSIdleKB
	}
	if len(rep.Servers) > 0 && d.Received > 0 {
		rep.ServerCPUSecPer1kDeliveries = round6(serverCPU.Seconds() / (float64(d.Received) / 1000))
		rep.ServerCPUMicrosPerDelivery = round3(float64(serverCPU.Microseconds()) / float64(d.Received))
	}
	if len(rep.Servers) > 0 && rep.Connect.Connected > 0 {
		rep.ServerRSSPerConnKB = round3(float64(idle-before) / float64(rep.Connect.Connected))
	}
	rep.LoadGenerator.CPUSec = round3(win.loadGenerator().Seconds())
	if s, err := sampleProc(os.Getpid()); err == nil {
		rep.LoadGenerator.RSSKB = s.rssKB
	}
	rep.Machine = MachineReport{CPUs: machineCPUs(), GoVersion: runtime.Version(),
		BusyCPUSec: round3(win.machineBusy().Seconds())}
	if len(rep.Servers) > 0 {
		rep.Machine.OtherCPUSec = round3((win.machineBusy() - serverCPU - win.loadGenerator()).Seconds())
	}

	rep.Complete = complete && d.Expected > 0
	integrity := d.Duplicated == 0 && d.OutOfOrder == 0 && d.Invalid == 0 && d.StreamsEnded == 0
	rep.OK = integrity && (d.Lost == 0 || cfg.Volatile) && p.Failed == 0 && p.Unsent == 0 && rep.Connect.Failed == 0 && (rep.Complete || cfg.Volatile) && !rep.DeadlineHit
}

func round6(v float64) float64 { return float64(int64(v*1e6+0.5)) / 1e6 }

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes the report for people.
func (rep *Report) WriteTable(w io.Writer) error {
	c := &rep.Config
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	kind := "events"
	if c.Volatile {
		kind = "volatile events"
	}
	title := fmt.Sprintf("%d SSE + %d poll subscribers, room %q on %s; %d %s of %d B at %g/s from %d publisher(s)",
		c.Subscribers, c.Polls, c.Room, strings.Join(c.Targets, ","), c.Messages, kind, c.Size, c.Rate, c.Publishers)
	if rep.Label != "" {
		title = rep.Label + ": " + title
	}
	fmt.Fprintln(tw, title)
	cn := &rep.Connect
	row("connect", "%d/%d in %.2f s (each: p50 %.1f ms, p99 %.1f ms, max %.1f ms)", cn.Connected, cn.Subscribers, cn.Seconds, cn.P50ms, cn.P99ms, cn.MaxMs)
	p := &rep.Publish
	row("published", "%d/%d accepted in %.2f s (%.1f/s), max lag %.1f ms, round trip p50 %.2f ms p99 %.2f ms", p.Accepted, p.Messages, p.SpanSec, p.Rate, p.MaxLagMs, p.RTTP50ms, p.RTTP99ms)
	d := &rep.Deliveries
	row("deliveries", "%d/%d in %.2f s = %.0f/s", d.Received, d.Expected, d.WindowSec, d.PerSec)
	row("integrity", "lost %d (%d subscribers), duplicated %d, out of order %d, streams ended %d", d.Lost, d.SubscribersWithLoss, d.Duplicated, d.OutOfOrder, d.StreamsEnded)
	if d.PollRequests > 0 {
		row("polls", "%d requests, %.2f deliveries each, %d resets", d.PollRequests, d.PerPoll, d.PollResets)
	}
	lat := func(name string, l LatencyReport) {
		row(name, "p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f  (%d samples)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
	}
	lat("latency ms", rep.Latency)
	for _, k := range kindNames {
		if l, ok := rep.ByKind[k]; ok {
			lat("  "+k, l)
		}
	}
	for i, l := range rep.ByTarget {
		lat("  "+c.Targets[i], l)
	}
	lat("fan-out end ms", rep.LastDelivery)
	for _, s := range rep.Servers {
		row(fmt.Sprintf("server %d", s.PID), "CPU %.2f s; RSS before %.1f MB, idle %.1f MB, peak %.1f MB; idle CPU %.3f s/s",
			s.CPUSec, mb(s.RSSBeforeKB), mb(s.RSSIdleKB), mb(s.RSSPeakKB), s.IdleCPUPerSec)
	}
	if len(rep.Servers) > 0 {
		row("server cost", "%.3f µs CPU per delivery (%.4f s per 1k); %.1f KB RSS per idle connection",
			rep.ServerCPUMicrosPerDelivery, rep.ServerCPUSecPer1kDeliveries, rep.ServerRSSPerConnKB)
	}
	row("load generator", "CPU %.2f s in the window, RSS %.1f MB (%s reader)", rep.LoadGenerator.CPUSec, mb(rep.LoadGenerator.RSSKB), c.Reader)
	row("machine", "%d CPUs, %s; busy %.2f CPU-s in the window (%.2f not ours)", rep.Machine.CPUs, rep.Machine.GoVersion, rep.Machine.BusyCPUSec, rep.Machine.OtherCPUSec)
	verdict := "OK"
	if !rep.OK {
		verdict = "FAILED"
	}
	row("result", "%s (complete: %v)", verdict, rep.Complete)
	for _, e := range rep.Errors {
		row("error", "%s", e)
	}
	return tw.Flush()
}

func mb(kb int64) float64 { return float64(kb) / 1024 }
