package relay

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/roomcast/roomcast/rooms"
)

// Limits configure rate and connection limits. Zero values take the defaults.
type Limits struct {
	// PublishRate and PublishBurst limit publishes per user, or per client
	// IP for anonymous callers (default 20/s, burst 40); namespaces may
	// override them.
	PublishRate  float64
	PublishBurst int
	// PublishCallerRate and PublishCallerBurst limit all the publishes of
	// one user (or anonymous address) together, whatever namespaces they
	// go to (default 50/s, burst 100).
	PublishCallerRate  float64
	PublishCallerBurst int
	// RequestRate and RequestBurst limit joins, tickets and token
	// refreshes the same way (default 10/s, burst 20).
	RequestRate  float64
	RequestBurst int
	// MaxConnsPerUser and MaxConnsPerIP bound concurrent streams and held
	// polls (default 50 and 500).
	MaxConnsPerUser int
	MaxConnsPerIP   int
	// MaxIdempotencyKeysPerCaller and MaxIdempotencyKeys bound the
	// Idempotency-Key values remembered for callers' publishes, per caller
	// and in all on this instance (default 1,000 and 1,000,000); a publish
	// with a new key past them is refused with 429 limit_exceeded. Keys
	// sent with the API key count only against the global bound.
	MaxIdempotencyKeysPerCaller int
	MaxIdempotencyKeys          int
	// MaxTicketsPerUser and MaxTickets bound the tickets issued and not
	// yet expired, per user and in all on this instance (default 100 and
	// 100,000).
	MaxTicketsPerUser int
	MaxTickets        int
	// MaxRateBuckets bounds the rate-limit buckets this instance keeps in
	// memory (default 1,000,000, ~250 bytes each): one per caller and
	// kind of request, and per caller and target namespace of a publish
	// (with a backbone that keeps limits, such as Redis, none). Full buckets are forgotten (a new one is the same); when the
	// bound is reached with none full, a request that needs a new bucket
	// is refused with 429 until some refill — an attacker would have to
	// keep every one of them spent.
	MaxRateBuckets int
	// TrustedProxies are the peers whose forwarding headers are believed
	// about the client's address and scheme (X-Forwarded-Proto).
	TrustedProxies []netip.Prefix
	// ClientIPHeader is the header a trusted proxy names the client's
	// address in: HeaderXForwardedFor (default) or HeaderFlyClientIP. Only
	// that one is read: a header the proxy does not manage may be the
	// client's own.
	ClientIPHeader string
}

func (l *Limits) defaults() {
	// "!(x > 0)" and not "x <= 0": NaN, which compares false with
	// everything, would otherwise stay and disable the limit.
	if !(l.PublishRate > 0) {
		l.PublishRate = 20
	}
	if l.PublishBurst <= 0 {
		l.PublishBurst = 40
	}
	if !(l.PublishCallerRate > 0) {
		l.PublishCallerRate = 50
	}
	if l.PublishCallerBurst <= 0 {
		l.PublishCallerBurst = 100
	}
	if !(l.RequestRate > 0) {
		l.RequestRate = 10
	}
	if l.RequestBurst <= 0 {
		l.RequestBurst = 20
	}
	if l.MaxConnsPerUser <= 0 {
		l.MaxConnsPerUser = 50
	}
	if l.MaxConnsPerIP <= 0 {
		l.MaxConnsPerIP = 500
	}
	if l.MaxIdempotencyKeysPerCaller <= 0 {
		l.MaxIdempotencyKeysPerCaller = 1000
	}
	if l.MaxIdempotencyKeys <= 0 {
		l.MaxIdempotencyKeys = 1_000_000
	}
	if l.MaxTicketsPerUser <= 0 {
		l.MaxTicketsPerUser = 100
	}
	if l.MaxTickets <= 0 {
		l.MaxTickets = 100_000
	}
	if l.MaxRateBuckets <= 0 {
		l.MaxRateBuckets = 1_000_000
	}
}

// buckets holds one token bucket per key, forgetting keys unused for a
// while, and at most max of them.
type buckets struct {
	max     int // set before first use
	mu      sync.Mutex
	m       map[string]*bucket
	checked time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

// idleBucket is how long an unused bucket is kept; it is full again by then.
const idleBucket = 10 * time.Minute

// fullSweepEvery bounds how often reaching max sweeps every bucket.
const fullSweepEvery = time.Second

// take spends one token of key's bucket, created with r and burst, and
// says how long to wait when there is none.
func (b *buckets) take(key string, r float64, burst int, now time.Time) (bool, time.Duration) {
	return b.takeAll([]rooms.RateLimit{{Key: key, Rate: r, Burst: burst}}, "", now)
}

// takeAll spends one token of each limit's bucket (under the limit's key
// with suffix appended), or none when one has none left; it then says
// how long to wait for all of them. Buckets it would have to create past
// max are refused like a spent bucket, creating none.
func (b *buckets) takeAll(limits []rooms.RateLimit, suffix string, now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	if !b.room(limits, suffix, now) {
		return false, fullSweepEvery
	}
	taken := make([]*rate.Reservation, 0, len(limits))
	var wait time.Duration
	for _, l := range limits {
		res := b.bucket(l.Key+suffix, l.Rate, l.Burst, now).ReserveN(now, 1)
		if !res.OK() {
			wait = max(wait, time.Second)
			continue
		}
		taken = append(taken, res)
		wait = max(wait, res.DelayFrom(now))
	}
	if wait == 0 {
		return true, 0
	}
	for _, res := range taken {
		res.CancelAt(now)
	}
	return false, wait
}

// room reports whether the buckets of limits that do not exist yet fit
// under max, sweeping full buckets (at most every fullSweepEvery) to make
// room; b.mu is held.
func (b *buckets) room(limits []rooms.RateLimit, suffix string, now time.Time) bool {
	if b.max <= 0 {
		return true
	}
	fits := func() bool {
		n := len(b.m)
		for _, l := range limits {
			if _, ok := b.m[l.Key+suffix]; !ok {
				n++
			}
		}
		return n <= b.max
	}
	if fits() {
		return true
	}
	if now.Sub(b.checked) < fullSweepEvery {
		return false
	}
	b.forget(now)
	return fits()
}

// bucket returns key's limiter, made anew when its settings changed; b.mu
// is held.
func (b *buckets) bucket(key string, r float64, burst int, now time.Time) *rate.Limiter {
	e := b.m[key]
	if e == nil || e.lim.Limit() != rate.Limit(r) || e.lim.Burst() != burst {
		e = &bucket{lim: rate.NewLimiter(rate.Limit(r), burst)}
		b.m[key] = e
	}
	e.used = now
	return e.lim
}

// sweep forgets buckets unused for idleBucket, at most once a minute; b.mu
// is held.
func (b *buckets) sweep(now time.Time) {
	if b.m == nil {
		b.m = make(map[string]*bucket)
	}
	if now.Sub(b.checked) > time.Minute {
		b.forget(now)
	}
}

// forget drops the buckets that are full or unused for idleBucket; b.mu is
// held.
func (b *buckets) forget(now time.Time) {
	for k, v := range b.m {
		// A full bucket is what a new one would be: forgetting it
		// changes nothing, and keeps the map to the callers active in
		// the last minute or so.
		if now.Sub(v.used) > idleBucket || v.lim.TokensAt(now) >= float64(v.lim.Burst()) {
			delete(b.m, k)
		}
	}
	b.checked = now
}

// len is how many buckets are kept.
func (b *buckets) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// counters count open connections per key.
type counters struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counters) acquire(key string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]int)
	}
	if c.m[key] >= limit {
		return false
	}
	c.m[key]++
	return true
}

func (c *counters) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key]--; c.m[key] <= 0 {
		delete(c.m, key)
	}
}

// rateKey is who a limit applies to: the user, else the caller's address
// (clientIP). A development token's user is the address's too: the relay
// hands those to anyone who asks, so a caller minting one per publish
// would otherwise get a fresh allowance with each.
func (s *Server) rateKey(r *http.Request, id rooms.Identity) string {
	if id.User != "" && !s.mintedForAnyone(r, id) {
		return "user:" + id.User
	}
	return "ip:" + s.clientIP(r)
}

// mintedForAnyone reports whether id is a development user this relay
// minted, proven by r's bearer token (renewals keep the user, and with it
// the address's limits).
func (s *Server) mintedForAnyone(r *http.Request, id rooms.Identity) bool {
	if len(s.opts.DevTokenKey) == 0 || !strings.HasPrefix(id.User, devUserPrefix) {
		return false
	}
	claims := s.ownDevToken(bearerToken(r))
	return claims != nil && claims["sub"] == id.User
}

// limitRequest applies the request rate limit of kind to the caller.
func (s *Server) limitRequest(r *http.Request, id rooms.Identity, kind string) error {
	if id.Server {
		return nil
	}
	l := s.opts.Limits
	return s.takeToken(r, id, kind, l.RequestRate, l.RequestBurst)
}

// publishLimits spends a publish's allowances (rooms.RateSpender) from the
// caller's buckets: shared by every instance when the backbone keeps rate
// limits.
type publishLimits struct{ s *Server }

// SpendAll implements rooms.RateSpender.
func (p publishLimits) SpendAll(ctx context.Context, caller string, charges []rooms.RateLimit) error {
	s := p.s
	if len(charges) == 0 {
		return nil
	}
	// The caller in a hash tag: every key of one call lands in one Redis
	// Cluster slot, as one script needs.
	suffix := "|{" + caller + "}"
	var ok bool
	var wait time.Duration
	if shared := s.hub.Limiter(); shared != nil {
		keyed := make([]rooms.RateLimit, len(charges))
		for i, c := range charges {
			keyed[i] = c
			keyed[i].Key += suffix
		}
		var err error
		if ok, wait, err = shared.TakeAll(ctx, keyed); err != nil {
			// As takeToken: a limit that cannot be checked refuses.
			return err
		}
	} else {
		ok, wait = s.buckets.takeAll(charges, suffix, time.Now())
	}
	if ok {
		return nil
	}
	if m := s.opts.Metrics; m != nil {
		m.RateLimited.WithLabelValues("publish").Inc()
	}
	return &rateLimitError{retryAfter: wait, code: codeRateLimited}
}

func (s *Server) takeToken(r *http.Request, id rooms.Identity, kind string, rt float64, burst int) error {
	key := kind + "|" + s.rateKey(r, id)
	var ok bool
	var wait time.Duration
	if shared := s.hub.Limiter(); shared != nil {
		// Limits hold across every instance. If the backbone cannot
		// answer, the request is refused (503): this instance's own
		// bucket, full, would let a burst through on every instance
		// whenever Redis stalls, and the requests limited here need
		// Redis to succeed anyway (publishes, joins, refreshes,
		// tickets' redemption).
		var err error
		if ok, wait, err = shared.Take(r.Context(), key, rt, burst); err != nil {
			return err
		}
	} else {
		ok, wait = s.buckets.take(key, rt, burst, time.Now())
	}
	if ok {
		return nil
	}
	if m := s.opts.Metrics; m != nil {
		m.RateLimited.WithLabelValues(strings.SplitN(kind, ":", 2)[0]).Inc()
	}
	return &rateLimitError{retryAfter: wait, code: codeRateLimited}
}

// rateLimitError is a 429 that says when to retry.
type rateLimitError struct {
	retryAfter time.Duration
	code       errCode
	msg        string // "" for the code's default message
}

func (e *rateLimitError) Error() string { return "rate limited" }

func (e *rateLimitError) header() string {
	return strconv.Itoa(int(math.Ceil(max(e.retryAfter.Seconds(), 1))))
}

// slotTTL is how long a connection slot counts against a shared limit
// without renewal; streams renew theirs well within it.
const slotTTL = 90 * time.Second

// connSlots is what a stream or held poll counts against the connection
// limits of its user and address.
type connSlots struct {
	s         *Server
	shared    rooms.SlotCounter // nil: counted by this instance alone
	id        string
	keys      []string
	limits    []int
	renewedAt time.Time
	// An address and a user at most: keys and limits need no allocation
	// of their own.
	keyBuf   [2]string
	limitBuf [2]int
}

// acquireConnection counts a new stream or held poll against the caller's
// user and address limits, across instances when the backbone can count.
func (s *Server) acquireConnection(r *http.Request, id rooms.Identity) (*connSlots, error) {
	c := &connSlots{s: s, renewedAt: time.Now()}
	if id.Server {
		return c, nil
	}
	c.shared = s.hub.SlotCounter()
	if c.shared != nil {
		// Shared slots are held by name, in the backbone; local ones are
		// counts and need none (a random id costs a system call).
		c.id = rooms.NewClientID()
	}
	c.keys, c.limits = c.keyBuf[:0], c.limitBuf[:0]
	c.keys = append(c.keys, "ip:"+s.clientIP(r))
	c.limits = append(c.limits, s.opts.Limits.MaxConnsPerIP)
	if id.User != "" {
		c.keys = append(c.keys, "user:"+id.User)
		c.limits = append(c.limits, s.opts.Limits.MaxConnsPerUser)
	}
	for i, key := range c.keys {
		ok, err := c.take(r.Context(), key, c.limits[i])
		if err != nil || !ok {
			c.keys = c.keys[:i]
			c.release()
			if err != nil {
				return nil, err
			}
			per := "address"
			if strings.HasPrefix(key, "user:") {
				per = "user"
			}
			return nil, s.connLimitError(per)
		}
	}
	return c, nil
}

func (c *connSlots) take(ctx context.Context, key string, limit int) (bool, error) {
	if c.shared != nil {
		return c.shared.AcquireSlot(ctx, key, c.id, limit, slotTTL)
	}
	counter := &c.s.connsByIP
	if strings.HasPrefix(key, "user:") {
		counter = &c.s.connsByUser
	}
	return counter.acquire(key, limit), nil
}

// renew keeps shared slots alive; streams call it as they run.
func (c *connSlots) renew(ctx context.Context) {
	if c.shared == nil || time.Since(c.renewedAt) < slotTTL/3 {
		return
	}
	c.renewedAt = time.Now()
	for i, key := range c.keys {
		_, _ = c.shared.AcquireSlot(ctx, key, c.id, c.limits[i]+1, slotTTL)
	}
}

// release gives the slots back.
func (c *connSlots) release() {
	for _, key := range c.keys {
		if c.shared != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.shared.ReleaseSlot(ctx, key, c.id)
			cancel()
			continue
		}
		if strings.HasPrefix(key, "user:") {
			c.s.connsByUser.release(key)
		} else {
			c.s.connsByIP.release(key)
		}
	}
}

func (s *Server) connLimitError(per string) error {
	if m := s.opts.Metrics; m != nil {
		m.RateLimited.WithLabelValues("connections").Inc()
	}
	return &rateLimitError{retryAfter: 5 * time.Second, code: codeTooManyConnections,
		msg: "too many open connections for this " + per}
}

// clientIP is the client's address as limits count it (see clientAddr):
// an IPv4 address, or an IPv6 address's /64. A /64 is the least one network
// is handed (a home, a cloud machine), and its hosts pick addresses in it
// freely: counted one by one, a single client could rotate through 2^64
// fresh allowances.
func (s *Server) clientIP(r *http.Request) string {
	if a, ok := s.clientAddr(r); ok {
		if a.Is6() {
			p, _ := a.Prefix(64)
			return p.String()
		}
		return a.String()
	}
	return r.RemoteAddr
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.Limits.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
