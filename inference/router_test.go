package inference_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// funcProvider is a scripted provider: n is the 1-based call number.
type funcProvider struct {
	name     string
	calls    atomic.Int64
	complete func(ctx context.Context, n int64) (*inference.ChatResponse, error)
	stream   func(ctx context.Context, n int64) (inference.Stream, error)
}

func (p *funcProvider) Name() string { return p.name }

func (p *funcProvider) ChatCompletion(ctx context.Context, _ *inference.ChatRequest) (*inference.ChatResponse, error) {
	return p.complete(ctx, p.calls.Add(1))
}

func (p *funcProvider) ChatCompletionStream(ctx context.Context, _ *inference.ChatRequest) (inference.Stream, error) {
	return p.stream(ctx, p.calls.Add(1))
}

var errDown = fault.New(fault.Unavailable, inference.MsgUnavailable)

func answer(text string) *inference.ChatResponse {
	return &inference.ChatResponse{Choices: []inference.Choice{{Message: inference.Message{Role: "assistant", Content: text}, FinishReason: "stop"}}}
}

// okProvider answers with its name; failing answers fail with err for the
// calls where it returns true.
func scripted(name string, fail func(n int64) error) *funcProvider {
	return &funcProvider{
		name: name,
		complete: func(_ context.Context, n int64) (*inference.ChatResponse, error) {
			if err := fail(n); err != nil {
				return nil, err
			}
			return answer(name), nil
		},
		stream: func(ctx context.Context, n int64) (inference.Stream, error) {
			if err := fail(n); err != nil {
				return nil, err
			}
			return &sliceStream{ctx: ctx, chunks: textChunks(name, "!")}, nil
		},
	}
}

func never(int64) error  { return nil }
func always(int64) error { return errDown }

func textChunks(texts ...string) []*inference.ChatChunk {
	var out []*inference.ChatChunk
	for _, s := range texts {
		out = append(out, &inference.ChatChunk{Choices: []inference.ChunkChoice{{Delta: inference.Delta{Content: s}}}})
	}
	stop := "stop"
	return append(out, &inference.ChatChunk{Choices: []inference.ChunkChoice{{FinishReason: &stop}}})
}

// sliceStream yields chunks, then err (io.EOF if nil). With block, the
// first Recv waits for the context to end.
type sliceStream struct {
	ctx    context.Context
	chunks []*inference.ChatChunk
	err    error
	block  bool
}

func (s *sliceStream) Recv() (*inference.ChatChunk, error) {
	if s.block {
		<-s.ctx.Done()
		return nil, fault.Wrap(s.ctx.Err(), fault.Canceled, "canceled")
	}
	if len(s.chunks) > 0 {
		c := s.chunks[0]
		s.chunks = s.chunks[1:]
		return c, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

func (s *sliceStream) Close() error { return nil }

// clock is an injectable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newRouter(t *testing.T, opts inference.RouterOptions, ps ...inference.ModelProvider) *inference.Router {
	t.Helper()
	if opts.BackoffBase == 0 {
		opts.BackoffBase = time.Millisecond
	}
	r, err := inference.NewRouter(ps, opts)
	require.NoError(t, err)
	return r
}

var route = []string{"a", "b"}

func TestRouterFallbackAndRetry(t *testing.T) {
	t.Run("fallback after retries", func(t *testing.T) {
		a, b := scripted("a", always), scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 2}, a, b)
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		require.Equal(t, "b", resp.Choices[0].Message.Content)
		require.EqualValues(t, 2, a.calls.Load())
		require.EqualValues(t, 1, b.calls.Load())
	})
	t.Run("retry succeeds", func(t *testing.T) {
		a, b := scripted("a", func(n int64) error {
			if n == 1 {
				return errDown
			}
			return nil
		}), scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 2}, a, b)
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		require.Equal(t, "a", resp.Choices[0].Message.Content)
		require.EqualValues(t, 2, a.calls.Load())
		require.Zero(t, b.calls.Load())
	})
	t.Run("a refusal is not retried but falls back", func(t *testing.T) {
		a := scripted("a", func(int64) error { return fault.New(fault.Upstream, inference.MsgFailed) })
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 3}, a, b)
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		require.Equal(t, "b", resp.Choices[0].Message.Content)
		require.EqualValues(t, 1, a.calls.Load())
		require.Equal(t, inference.BreakerClosed, r.BreakerState("a"), "a refusal is not an outage")
	})
	t.Run("all down", func(t *testing.T) {
		a, b := scripted("a", always), scripted("b", always)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 2}, a, b)
		_, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.ErrorIs(t, err, fault.Unavailable)
		require.EqualValues(t, 2, a.calls.Load())
		require.EqualValues(t, 2, b.calls.Load())
	})
	t.Run("an error without a code is an outage, not a success", func(t *testing.T) {
		a := scripted("a", func(int64) error { return errors.New("connection reset by peer") })
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 2}, a, b)
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		require.Equal(t, "b", resp.Choices[0].Message.Content, "retried, then the fallback answered")
		require.EqualValues(t, 2, a.calls.Load())
		_, err = newRouter(t, inference.RouterOptions{MaxAttempts: 1}, a).ChatCompletion(context.Background(), []string{"a"}, &inference.ChatRequest{})
		require.ErrorIs(t, err, fault.Unavailable)
		require.Equal(t, inference.MsgUnavailable, fault.MessageOf(err))
	})
	t.Run("a provider's own deadline is an outage", func(t *testing.T) {
		a := scripted("a", func(int64) error { return context.DeadlineExceeded })
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 1}, a, b)
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		require.Equal(t, "b", resp.Choices[0].Message.Content)
	})
	t.Run("canceled caller is not retried", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		a := scripted("a", func(int64) error { cancel(); return fault.Wrap(context.Canceled, fault.Canceled, "canceled") })
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 3}, a, b)
		_, err := r.ChatCompletion(ctx, route, &inference.ChatRequest{})
		require.ErrorIs(t, err, fault.Canceled)
		require.EqualValues(t, 1, a.calls.Load())
		require.Zero(t, b.calls.Load())
	})
}

func TestRouterCircuitBreaker(t *testing.T) {
	clk := &clock{now: time.Unix(1748000000, 0)}
	var aFails atomic.Bool
	aFails.Store(true)
	a := scripted("a", func(int64) error {
		if aFails.Load() {
			return errDown
		}
		return nil
	})
	b := scripted("b", never)
	r := newRouter(t, inference.RouterOptions{MaxAttempts: 1, FailureThreshold: 3, Cooldown: 10 * time.Second, Now: clk.Now}, a, b)
	call := func() string {
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		return resp.Choices[0].Message.Content
	}

	for i := 0; i < 3; i++ {
		require.Equal(t, "b", call())
	}
	require.EqualValues(t, 3, a.calls.Load())
	require.Equal(t, inference.BreakerOpen, r.BreakerState("a"))

	// Open: a is skipped.
	require.Equal(t, "b", call())
	clk.Advance(9 * time.Second)
	require.Equal(t, "b", call())
	require.EqualValues(t, 3, a.calls.Load())

	// Half-open: one probe, which fails and reopens for another cooldown.
	clk.Advance(time.Second)
	require.Equal(t, inference.BreakerHalfOpen, r.BreakerState("a"))
	require.Equal(t, "b", call())
	require.EqualValues(t, 4, a.calls.Load())
	require.Equal(t, inference.BreakerOpen, r.BreakerState("a"))
	require.Equal(t, "b", call())
	require.EqualValues(t, 4, a.calls.Load())

	// The next probe succeeds and closes it.
	clk.Advance(10 * time.Second)
	aFails.Store(false)
	require.Equal(t, "a", call())
	require.Equal(t, inference.BreakerClosed, r.BreakerState("a"))
	require.Equal(t, "a", call())
	require.EqualValues(t, 6, a.calls.Load())
}

func TestRouterHalfOpenLetsOneProbeThrough(t *testing.T) {
	clk := &clock{now: time.Unix(1748000000, 0)}
	release := make(chan struct{})
	probing := make(chan struct{})
	a := &funcProvider{name: "a", complete: func(ctx context.Context, n int64) (*inference.ChatResponse, error) {
		if n == 1 {
			return nil, errDown
		}
		close(probing)
		<-release
		return answer("a"), nil
	}}
	b := scripted("b", never)
	r := newRouter(t, inference.RouterOptions{MaxAttempts: 1, FailureThreshold: 1, Cooldown: time.Second, Now: clk.Now}, a, b)
	_, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
	require.NoError(t, err)
	require.Equal(t, inference.BreakerOpen, r.BreakerState("a"))
	clk.Advance(time.Second)

	done := make(chan string)
	go func() {
		resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
		if err != nil {
			done <- err.Error()
			return
		}
		done <- resp.Choices[0].Message.Content
	}()
	<-probing
	// While the probe is in flight, everyone else goes to b.
	resp, err := r.ChatCompletion(context.Background(), route, &inference.ChatRequest{})
	require.NoError(t, err)
	require.Equal(t, "b", resp.Choices[0].Message.Content)
	close(release)
	require.Equal(t, "a", <-done)
	require.Equal(t, inference.BreakerClosed, r.BreakerState("a"))
}

func TestRouterStreamRetriesOnlyBeforeFirstByte(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		a := &funcProvider{name: "a", stream: func(ctx context.Context, n int64) (inference.Stream, error) {
			if n == 1 {
				return &sliceStream{ctx: ctx, err: errDown}, nil // fails on its first Recv
			}
			return &sliceStream{ctx: ctx, chunks: textChunks("hello")}, nil
		}}
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 2}, a, b)
		s, err := r.ChatCompletionStream(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		defer s.Close()
		chunks, err := drain(t, s)
		require.NoError(t, err)
		require.Equal(t, "hello", chunks[0].Choices[0].Delta.Content)
		require.EqualValues(t, 2, a.calls.Load())
		require.Zero(t, b.calls.Load())
	})
	t.Run("after", func(t *testing.T) {
		a := &funcProvider{name: "a", stream: func(ctx context.Context, n int64) (inference.Stream, error) {
			return &sliceStream{ctx: ctx, chunks: textChunks("hel")[:1], err: errDown}, nil
		}}
		b := scripted("b", never)
		r := newRouter(t, inference.RouterOptions{MaxAttempts: 3}, a, b)
		s, err := r.ChatCompletionStream(context.Background(), route, &inference.ChatRequest{})
		require.NoError(t, err)
		defer s.Close()
		chunks, err := drain(t, s)
		require.Len(t, chunks, 1)
		require.ErrorIs(t, err, fault.Unavailable)
		require.True(t, inference.AfterFirstByte(err))
		require.EqualValues(t, 1, a.calls.Load())
		require.Zero(t, b.calls.Load())
	})
}

func TestRouterFirstChunkTimeout(t *testing.T) {
	a := &funcProvider{name: "a", stream: func(ctx context.Context, n int64) (inference.Stream, error) {
		return &sliceStream{ctx: ctx, block: true}, nil
	}}
	b := scripted("b", never)
	r := newRouter(t, inference.RouterOptions{MaxAttempts: 1,
		ProviderTimeouts: map[string]inference.Timeouts{"a": {FirstChunk: 30 * time.Millisecond}}}, a, b)
	start := time.Now()
	s, err := r.ChatCompletionStream(context.Background(), route, &inference.ChatRequest{})
	require.NoError(t, err)
	defer s.Close()
	c, err := s.Recv()
	require.NoError(t, err)
	require.Equal(t, "b", c.Choices[0].Delta.Content)
	require.Less(t, time.Since(start), 5*time.Second)
	require.EqualValues(t, 1, a.calls.Load())

	// Non-streamed answers have their own limit.
	slow := &funcProvider{name: "slow", complete: func(ctx context.Context, n int64) (*inference.ChatResponse, error) {
		<-ctx.Done()
		return nil, fault.Wrap(ctx.Err(), fault.Canceled, "canceled")
	}}
	r = newRouter(t, inference.RouterOptions{MaxAttempts: 1, Timeouts: inference.Timeouts{Response: 30 * time.Millisecond}}, slow)
	_, err = r.ChatCompletion(context.Background(), []string{"slow"}, &inference.ChatRequest{})
	require.ErrorIs(t, err, fault.Unavailable)
}
