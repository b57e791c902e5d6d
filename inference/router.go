package inference

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
)

// RouterOptions configures a [Router]. The zero value is usable.
type RouterOptions struct {
	// MaxAttempts is how many times one provider is tried for one
	// request before falling back to the next; default 2.
	MaxAttempts int
	// BackoffBase is the delay before the first retry; it doubles per
	// retry up to BackoffMax, with jitter (a uniform draw from the upper
	// half). Defaults 100ms and 2s.
	BackoffBase, BackoffMax time.Duration
	// FailureThreshold is how many consecutive failures open a provider's
	// circuit breaker; default 5.
	FailureThreshold int
	// Cooldown is how long an open breaker refuses requests before it lets
	// one probe through (half-open); default 30s.
	Cooldown time.Duration
	// Timeouts are the default time-to-first-byte limits.
	Timeouts Timeouts
	// ProviderTimeouts override Timeouts per provider name; zero fields
	// keep the default.
	ProviderTimeouts map[string]Timeouts
	// Now is the breakers' clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives retries and breaker changes. Nil discards them.
	Logger *slog.Logger
	// STTProviders are the speech-to-text providers, routed as chat
	// providers are (retries, fallbacks, breakers, Timeouts.Response per
	// attempt). One named as a chat provider is taken to be the same
	// upstream and shares its circuit breaker: an outage seen by either
	// kind of request opens it for both.
	STTProviders []STTProvider
}

// Timeouts bound how long a provider may take before the first byte of its
// answer can reach the caller. Past them the attempt counts as a failure
// and the router moves on.
type Timeouts struct {
	// FirstChunk bounds a stream's first chunk; default 30s.
	FirstChunk time.Duration
	// Response bounds a whole non-streamed answer, which is its first
	// byte; default 5m.
	Response time.Duration
}

// Breaker states.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Router sends each request to the providers of its model in order: the
// primary first, then the fallbacks. It retries a provider with jittered
// backoff, only before the first byte of an answer reached the caller and
// only for failures that may pass (fault.Unavailable); it skips providers
// whose circuit breaker is open. It is safe for concurrent use.
type Router struct {
	providers map[string]*routedProvider
	opts      RouterOptions
	log       *slog.Logger
}

type routedProvider struct {
	name     string
	p        ModelProvider // nil for a speech-to-text provider only
	stt      STTProvider   // nil for a chat provider only
	timeouts Timeouts
	b        breaker
}

// NewRouter returns a router over providers, which must have distinct,
// non-empty names (as must opts.STTProviders).
func NewRouter(providers []ModelProvider, opts RouterOptions) (*Router, error) {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 2
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 100 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 2 * time.Second
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = 5
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = 30 * time.Second
	}
	if opts.Timeouts.FirstChunk <= 0 {
		opts.Timeouts.FirstChunk = 30 * time.Second
	}
	if opts.Timeouts.Response <= 0 {
		opts.Timeouts.Response = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Router{providers: make(map[string]*routedProvider, len(providers)), opts: opts, log: opts.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	add := func(name string) (*routedProvider, error) {
		if name == "" {
			return nil, errors.New("inference: a provider has an empty name")
		}
		if rp, ok := r.providers[name]; ok {
			return rp, nil
		}
		t := opts.Timeouts
		if o, ok := opts.ProviderTimeouts[name]; ok {
			if o.FirstChunk > 0 {
				t.FirstChunk = o.FirstChunk
			}
			if o.Response > 0 {
				t.Response = o.Response
			}
		}
		rp := &routedProvider{name: name, timeouts: t, b: breaker{threshold: opts.FailureThreshold, cooldown: opts.Cooldown}}
		r.providers[name] = rp
		return rp, nil
	}
	for _, p := range providers {
		rp, err := add(p.Name())
		if err != nil {
			return nil, err
		}
		if rp.p != nil {
			return nil, fmt.Errorf("inference: two providers are named %q", rp.name)
		}
		rp.p = p
	}
	for _, p := range opts.STTProviders {
		rp, err := add(p.Name())
		if err != nil {
			return nil, err
		}
		if rp.stt != nil {
			return nil, fmt.Errorf("inference: two speech-to-text providers are named %q", rp.name)
		}
		rp.stt = p
	}
	return r, nil
}

// Has reports whether a chat provider of that name is configured.
func (r *Router) Has(name string) bool {
	rp, ok := r.providers[name]
	return ok && rp.p != nil
}

// HasSTT reports whether a speech-to-text provider of that name is
// configured.
func (r *Router) HasSTT(name string) bool {
	rp, ok := r.providers[name]
	return ok && rp.stt != nil
}

// BreakerState returns the state of the named provider's circuit breaker:
// [BreakerClosed], [BreakerOpen] or [BreakerHalfOpen]; "" for an unknown
// provider.
func (r *Router) BreakerState(name string) string {
	rp, ok := r.providers[name]
	if !ok {
		return ""
	}
	return rp.b.state(r.opts.Now())
}

var (
	errFirstByteTimeout = errors.New("no first byte before the provider's timeout")
	errNoProvider       = errors.New("every provider of the model is unavailable")
)

// ChatCompletion sends req along route (provider names, primary first).
func (r *Router) ChatCompletion(ctx context.Context, route []string, req *ChatRequest) (*ChatResponse, error) {
	var resp *ChatResponse
	err := r.try(ctx, route, isChat, func(ctx context.Context, rp *routedProvider) error {
		actx, cancel := context.WithTimeoutCause(ctx, rp.timeouts.Response, errFirstByteTimeout)
		defer cancel()
		res, err := rp.p.ChatCompletion(actx, req)
		if err != nil {
			return attemptError(ctx, actx, err)
		}
		resp = res
		return nil
	})
	return resp, err
}

// ChatCompletionStream starts a stream along route. It returns once the
// first chunk has arrived, so every failure before the first byte is
// retried or returned here; the returned stream yields that chunk first.
func (r *Router) ChatCompletionStream(ctx context.Context, route []string, req *ChatRequest) (Stream, error) {
	var out Stream
	err := r.try(ctx, route, isChat, func(ctx context.Context, rp *routedProvider) error {
		actx, cancel := context.WithCancelCause(ctx)
		timer := time.AfterFunc(rp.timeouts.FirstChunk, func() { cancel(errFirstByteTimeout) })
		s, err := rp.p.ChatCompletionStream(actx, req)
		if err != nil {
			timer.Stop()
			cancel(nil)
			return attemptError(ctx, actx, err)
		}
		first, err := s.Recv()
		if !timer.Stop() && err == nil {
			// The timeout fired as the chunk came: the attempt is
			// cancelled, so drop it; nothing reached the caller yet.
			err = fault.Wrap(errFirstByteTimeout, fault.Unavailable, MsgUnavailable)
		}
		if err != nil {
			_ = s.Close()
			cancel(nil)
			if errors.Is(err, io.EOF) {
				err = fault.Wrap(io.ErrUnexpectedEOF, fault.Unavailable, MsgUnavailable)
			}
			var m *MidStreamError
			if errors.As(err, &m) {
				err = m.Err
			}
			return attemptError(ctx, actx, err)
		}
		out = &routedStream{r: r, rp: rp, s: s, cancel: cancel, first: first}
		return nil
	})
	return out, err
}

// Transcribe sends req along route (provider names, primary first). Each
// attempt reads the audio afresh from its start: a copy of req whose
// Audio reads audio and whose Size is its length.
func (r *Router) Transcribe(ctx context.Context, route []string, req *TranscriptionRequest, audio io.ReaderAt, size int64) (*Transcription, error) {
	var out *Transcription
	err := r.try(ctx, route, isSTT, func(ctx context.Context, rp *routedProvider) error {
		actx, cancel := context.WithTimeoutCause(ctx, rp.timeouts.Response, errFirstByteTimeout)
		defer cancel()
		up := *req
		up.Audio, up.Size = io.NewSectionReader(audio, 0, size), size
		res, err := rp.stt.Transcribe(actx, &up)
		if err != nil {
			return attemptError(ctx, actx, err)
		}
		out = res
		return nil
	})
	return out, err
}

func isChat(rp *routedProvider) bool { return rp.p != nil }
func isSTT(rp *routedProvider) bool  { return rp.stt != nil }

// attemptError classifies an attempt's failure: the caller's cancellation,
// the router's first-byte timeout, or the provider's own error.
func attemptError(parent, actx context.Context, err error) error {
	if parent.Err() != nil {
		return fault.Wrap(context.Cause(parent), fault.Canceled, MsgCanceled)
	}
	if errors.Is(context.Cause(actx), errFirstByteTimeout) {
		return fault.Wrap(errFirstByteTimeout, fault.Unavailable, MsgUnavailable)
	}
	if c := fault.CodeOf(err); c == fault.Unknown || c == fault.Canceled || c == fault.Timeout {
		return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
	}
	return err
}

// try runs attempt along route with retries, fallbacks and breakers.
func (r *Router) try(ctx context.Context, route []string, serves func(*routedProvider) bool, attempt func(context.Context, *routedProvider) error) error {
	var last error
	for _, name := range route {
		rp, ok := r.providers[name]
		if !ok || !serves(rp) {
			continue
		}
	attempts:
		for i := 0; i < r.opts.MaxAttempts; i++ {
			if i > 0 {
				if err := r.sleep(ctx, i-1); err != nil {
					return fault.Wrap(err, fault.Canceled, MsgCanceled)
				}
			}
			if !rp.b.allow(r.opts.Now()) {
				r.log.Debug("inference: breaker open, skipping provider", "provider", name)
				break
			}
			err := attempt(ctx, rp)
			if err == nil {
				rp.b.success()
				return nil
			}
			switch fault.CodeOf(err) {
			case fault.Canceled:
				rp.b.abandon()
				return err
			case fault.Unavailable:
				last = err
				r.log.Info("inference: provider attempt failed", "provider", name, "attempt", i+1, "err", err)
				if rp.b.failure(r.opts.Now()) {
					r.log.Warn("inference: circuit breaker opened", "provider", name)
					break attempts
				}
			default:
				// It answered, so it is up; another provider may accept
				// what this one refused, but retrying it would not help.
				last = err
				rp.b.success()
				r.log.Info("inference: provider refused the request", "provider", name, "err", err)
				break attempts
			}
		}
	}
	if last == nil {
		last = fault.Wrap(errNoProvider, fault.Unavailable, MsgUnavailable)
	}
	return last
}

// sleep waits the jittered backoff before retry number i+1.
func (r *Router) sleep(ctx context.Context, i int) error {
	d := r.opts.BackoffBase << i
	if d > r.opts.BackoffMax || d <= 0 {
		d = r.opts.BackoffMax
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// routedStream yields the first chunk the router already read, then the
// rest; its failures are mid-stream and count against the breaker.
type routedStream struct {
	r      *Router
	rp     *routedProvider
	s      Stream
	cancel context.CancelCauseFunc
	first  *ChatChunk
}

func (st *routedStream) Recv() (*ChatChunk, error) {
	if c := st.first; c != nil {
		st.first = nil
		return c, nil
	}
	c, err := st.s.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		if fault.CodeOf(err) == fault.Unavailable {
			if st.rp.b.failure(st.r.opts.Now()) {
				st.r.log.Warn("inference: circuit breaker opened", "provider", st.rp.name)
			}
		}
		return nil, midStream(st.rp.name, err)
	}
	return c, err
}

// Buffered reports whether Recv can return without waiting for the
// upstream, if the provider's stream can tell.
func (st *routedStream) Buffered() bool {
	if st.first != nil {
		return true
	}
	b, ok := st.s.(interface{ Buffered() bool })
	return ok && b.Buffered()
}

func (st *routedStream) Close() error {
	err := st.s.Close()
	st.cancel(nil)
	return err
}

// breaker is a consecutive-failure circuit breaker.
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu       sync.Mutex
	failures int       // consecutive failures
	openedAt time.Time // zero when closed
	probing  bool      // half-open and a probe is in flight
}

func (b *breaker) state(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openedAt.IsZero():
		return BreakerClosed
	case now.Sub(b.openedAt) < b.cooldown:
		return BreakerOpen
	}
	return BreakerHalfOpen
}

// allow reports whether a request may go to the provider now. Half-open,
// it lets exactly one probe through until that probe resolves.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openedAt.IsZero():
		return true
	case now.Sub(b.openedAt) < b.cooldown || b.probing:
		return false
	}
	b.probing = true
	return true
}

// success closes the breaker.
func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.openedAt, b.probing = 0, time.Time{}, false
}

// failure counts a failure and reports whether it opened the breaker. A
// failed probe reopens it for another cooldown.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.probing || (b.openedAt.IsZero() && b.failures >= b.threshold) {
		opened := b.openedAt.IsZero()
		b.openedAt, b.probing = now, false
		return opened
	}
	return false
}

// abandon frees the probe slot of an attempt that ended without a verdict
// (the caller went away).
func (b *breaker) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}
