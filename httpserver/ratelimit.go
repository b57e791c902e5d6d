package httpserver

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/perceptron-cloud/perceptron/fault"
)

// RateLimiter decides whether a request may run now. Keys name a route
// class and a client ("auth:203.0.113.7/32"); a limiter shared by several
// server processes (a later release keeps buckets in PostgreSQL) or one
// keyed by API key implements the same interface.
type RateLimiter interface {
	// Allow takes one request of key. When the key is over its limit it
	// returns false and how long until a request would be allowed.
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// Rate is a token bucket: PerSecond requests a second on average, in
// bursts of up to Burst.
type Rate struct {
	PerSecond float64
	Burst     int
}

// The default limit per client address of the unauthenticated routes
// that make the server work or write (challenge, verify, faucet): 5 a
// second, in bursts of 60. A person or an agent logging in never meets
// it; a flood from one address does.
const (
	DefaultRatePerSecond = 5
	DefaultRateBurst     = 60
)

// maxRateKeys bounds the buckets a [NewRateLimiter] limiter keeps.
const maxRateKeys = 100_000

// NoRateLimit is a [RateLimiter] that allows everything.
type NoRateLimit struct{}

// Allow always allows.
func (NoRateLimit) Allow(context.Context, string) (bool, time.Duration, error) { return true, 0, nil }

// NewRateLimiter returns an in-process limiter: a token bucket per key
// (golang.org/x/time/rate), in memory bounded to 100,000 keys (buckets
// that have refilled are dropped first; past that, about half of the
// rest). Zero fields of r mean [DefaultRatePerSecond] and
// [DefaultRateBurst]. It suits one server process; its state is lost on
// restart.
func NewRateLimiter(r Rate) RateLimiter {
	if r.PerSecond <= 0 {
		r.PerSecond = DefaultRatePerSecond
	}
	if r.Burst <= 0 {
		r.Burst = DefaultRateBurst
	}
	return &memLimiter{r: r, buckets: map[string]*bucket{}, now: time.Now}
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

type memLimiter struct {
	r       Rate
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

func (m *memLimiter) Allow(_ context.Context, key string) (bool, time.Duration, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.buckets[key]
	if b == nil {
		if len(m.buckets) >= maxRateKeys {
			m.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Limit(m.r.PerSecond), m.r.Burst)}
		m.buckets[key] = b
	}
	b.last = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d, nil
	}
	return true, 0, nil
}

// evict drops buckets that have refilled (they are as good as new), and
// if that frees too little, about half of the rest. m.mu is held.
func (m *memLimiter) evict(now time.Time) {
	full := time.Duration(float64(m.r.Burst) / m.r.PerSecond * float64(time.Second))
	for k, b := range m.buckets {
		if now.Sub(b.last) > full {
			delete(m.buckets, k)
		}
	}
	if len(m.buckets) < maxRateKeys*9/10 {
		return
	}
	i := 0
	for k := range m.buckets {
		if i++; i%2 == 0 {
			delete(m.buckets, k)
		}
	}
}

// clientAddr is the key part of the request's client: its IPv4 address,
// or its IPv6 /64. Forwarded headers are not trusted.
func clientAddr(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return prefixOf(ap.Addr()).String()
}

// limited wraps h so that it runs only while the client address is within
// the rate of class; otherwise it answers 429 with Retry-After.
func (s *server) limited(class string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, after, err := s.rl.Allow(r.Context(), class+":"+clientAddr(r))
		if err != nil {
			// A limiter that cannot answer lets the request through: it
			// guards capacity, not money.
			s.log.WarnContext(r.Context(), "rate limiter failed", "request_id", requestID(r.Context()), "err", err)
		} else if !ok {
			secs := int64((after + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			s.writeError(w, r, fault.New(fault.RateLimited, "too many requests, retry later"))
			return
		}
		h(w, r)
	}
}
