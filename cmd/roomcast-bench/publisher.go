package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// publish sends publisher p's messages on their schedule and returns when
// the last one was sent. Message g of the run is due at t0 + g/Rate; a
// publisher sends one request at a time, so its messages are accepted in
// the order of their sequence numbers, and when it falls behind it sends
// at once (the lag is reported, and latency counts from the actual send).
// A publisher that has fallen so far behind that the publish window has
// taken twice its planned length and 5 s more stops: the relay does not
// sustain the rate, and what was not sent is reported.
func (r *run) publish(ctx context.Context, p int, t0 time.Time) time.Time {
	cfg := &r.cfg
	t := r.targets[0]
	if cfg.PublishSpread {
		t = r.targets[p%len(r.targets)]
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	u := t.base + "/v1/rooms/" + url.PathEscape(cfg.Room) + "/events?event=" + url.QueryEscape(cfg.Event)
	if cfg.Volatile {
		u += "&volatile=true"
	}
	body := make([]byte, 0, max(cfg.Size, minPayload))
	rd := bytes.NewReader(nil)
	last := t0
	span := time.Duration(float64(cfg.Messages) / cfg.Rate * float64(time.Second))
	giveUp := t0.Add(2*span + 5*time.Second)
	for seq := range r.perPublisher[p] {
		g := seq*cfg.Publishers + p
		due := t0.Add(time.Duration(float64(g) / cfg.Rate * float64(time.Second)))
		if !sleepCtx(ctx, time.Until(due)) {
			return last
		}
		if time.Now().After(giveUp) {
			r.unsentN.Add(int64(r.perPublisher[p] - seq))
			return last
		}
		sent := time.Now()
		lag := int64(sent.Sub(due))
		for m := r.maxLag.Load(); lag > m && !r.maxLag.CompareAndSwap(m, lag); m = r.maxLag.Load() {
		}
		body = appendPayload(body[:0], p, seq, sent.UnixNano(), cfg.Size)
		rd.Reset(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, rd)
		if err != nil {
			r.publishFailed(err)
			continue
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("User-Agent", "roomcast-bench")
		if cfg.APIKey != "" {
			req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
		}
		last = sent
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return last
			}
			r.publishFailed(err)
			continue
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
		r.pubRTT.record(p, time.Since(sent).Microseconds())
		if resp.StatusCode != http.StatusAccepted {
			r.publishRefused(resp.StatusCode, answer)
			r.publishFailed(fmt.Errorf("publish answered %s: %s", resp.Status, strings.TrimSpace(string(answer))))
			continue
		}
		r.markAccepted(g)
	}
	return last
}

// refusal is how the relay refused a publish: its status and error code.
type refusal struct {
	status int
	code   string
}

func (r *run) publishRefused(status int, answer []byte) {
	var body struct {
		Error struct{ Code string }
	}
	_ = json.Unmarshal(answer, &body)
	r.refusedMu.Lock()
	defer r.refusedMu.Unlock()
	if r.refused == nil {
		r.refused = map[refusal]int64{}
	}
	r.refused[refusal{status, body.Error.Code}]++
}

// remedy says what to change when publishes are refused so.
func (f refusal) remedy(cfg *Config) string {
	switch {
	case f.status == http.StatusTooManyRequests:
		return fmt.Sprintf("the relay limits publishes per caller (ROOMCAST_PUBLISH_RATE, 20/s and a burst of 40 by default; "+
			"ROOMCAST_PUBLISH_CALLER_RATE in total) and -rate is %g/s: pass -api-key with the relay's ROOMCAST_API_KEY (exempt from limits), "+
			"lower -rate (15 keeps within the defaults), or start the relay with those rates above -rate", cfg.Rate)
	case f.status == http.StatusUnauthorized || f.status == http.StatusForbidden:
		return "the relay does not let this caller publish to -room: pass -api-key with the relay's ROOMCAST_API_KEY"
	case f.status == http.StatusRequestEntityTooLarge:
		return fmt.Sprintf("-size %d is above the relay's ROOMCAST_MAX_PAYLOAD: lower -size or raise the relay's limit", cfg.Size)
	case f.status == http.StatusServiceUnavailable:
		return "the relay is draining, overloaded or has lost its backbone: see its log"
	}
	return "see the last error below"
}

func (r *run) publishFailed(err error) {
	r.failedN.Add(1)
	r.pubErr.Store(err.Error())
}

// String is "429 rate_limited", or the status alone when the answer had
// no error code.
func (f refusal) String() string {
	if f.code == "" {
		return strconv.Itoa(f.status)
	}
	return strconv.Itoa(f.status) + " " + f.code
}
