package inference_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

func newServer(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// readAll reads a session to its end and returns the streamed text.
func readAll(s *inference.StreamSession) (string, []*inference.ChatChunk, error) {
	var text strings.Builder
	var chunks []*inference.ChatChunk
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return text.String(), chunks, nil
		}
		if err != nil {
			return text.String(), chunks, err
		}
		chunks = append(chunks, c)
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
}

func sse(t *testing.T, v any) string {
	t.Helper()
	b, err := inference.AppendSSE(nil, v)
	require.NoError(t, err)
	return string(b)
}

func TestStreamPassesChunksAndEndsWithUsage(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 12, Chunks: 4, PromptTokens: 10})
	s, err := f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	defer s.Close()
	text, chunks, err := readAll(s)
	require.NoError(t, err)
	require.Equal(t, inferencetest.Text(12), text)
	require.Len(t, chunks, 5, "4 content chunks, then the finishing chunk carrying usage")
	for _, c := range chunks {
		require.Equal(t, s.ID(), c.ID)
		require.Equal(t, "chat.completion.chunk", c.Object)
		require.Equal(t, "test/chat", c.Model)
	}
	require.Equal(t, "assistant", chunks[0].Choices[0].Delta.Role)
	last := chunks[4]
	require.Equal(t, "stop", *last.Choices[0].FinishReason)
	require.Equal(t, &inference.Usage{PromptTokens: 10, CompletionTokens: 12, TotalTokens: 22}, last.Usage)
	_, err = s.Recv()
	require.ErrorIs(t, err, io.EOF)

	// SSE framing, as the API reference shows it.
	ev := sse(t, chunks[1])
	require.True(t, strings.HasPrefix(ev, `data: {"id":"`+s.ID()+`","object":"chat.completion.chunk","created":`))
	require.True(t, strings.HasSuffix(ev, `"choices":[{"index":0,"delta":{"content":"`+chunks[1].Choices[0].Delta.Content+`"},"finish_reason":null}]}`+"\n\n"))
	require.Contains(t, sse(t, last), `"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":12,"total_tokens":22}}`)

	up := f.lastUpstream(t)
	require.Equal(t, true, up["stream"])
	require.Equal(t, map[string]any{"include_usage": true}, up["stream_options"])

	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, 1)
	require.Equal(t, -chatModel().Cost(10, 12), entries[0].Amount)
	require.True(t, (<-f.charges).Streamed)
	require.NoError(t, s.Close())
	require.Len(t, f.ledger.chatEntries(acct), 1, "Close after the end bills nothing more")
	require.Zero(t, f.ledger.openHolds())
}

func TestStreamWithoutUpstreamUsage(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 12, Chunks: 3, NoUsage: true})
	s, err := f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi there"))
	require.NoError(t, err)
	defer s.Close()
	_, chunks, err := readAll(s)
	require.NoError(t, err)
	p := promptTokens("hi there")
	require.Equal(t, &inference.Usage{PromptTokens: p, CompletionTokens: 12, TotalTokens: p + 12}, chunks[len(chunks)-1].Usage)
	require.Equal(t, -chatModel().Cost(p, 12), f.ledger.chatEntries(acct)[0].Amount)
}

func TestStreamToolCalls(t *testing.T) {
	f := newFixture(t, inferencetest.Config{ToolCall: &inferencetest.ToolCall{Name: "lookup", Arguments: `{"q":"go"}`}})
	req := userRequest("test/tools", "search")
	req.Tools = json.RawMessage(`[{"type":"function","function":{"name":"lookup"}}]`)
	s, err := f.svc.Stream(context.Background(), acct, req)
	require.NoError(t, err)
	defer s.Close()
	_, chunks, err := readAll(s)
	require.NoError(t, err)
	require.Contains(t, sse(t, chunks[0]), `"tool_calls":[{"index":0,"id":"call_fake_1","type":"function","function":{"name":"lookup","arguments":""}}]`)
	require.Equal(t, `{"q":"go"}`, chunks[1].Choices[0].Delta.ToolCalls[0].Function.Arguments)
	last := chunks[len(chunks)-1]
	require.Equal(t, "tool_calls", *last.Choices[0].FinishReason)
	require.NotNil(t, last.Usage)
}

// pricey is a model whose output costs 0.1 cent per token.
func pricey() inference.Model {
	m := chatModel()
	m.OutputCentsPer1M = 100_000
	return m
}

func TestStreamCreditExhaustion(t *testing.T) {
	// An upstream that ignores max_tokens, and $0.06 of credit.
	f := newFixture(t, inferencetest.Config{CompletionTokens: 400, Chunks: 100, IgnoreMaxTokens: true, ChunkDelay: 5 * time.Millisecond}, pricey())
	f.ledger.credit(acct, 6*billing.Cent-billing.Dollar)
	req := userRequest("test/chat", "tell me everything")
	s, err := f.svc.Stream(context.Background(), acct, req)
	require.NoError(t, err)
	defer s.Close()

	p := promptTokens("tell me everything")
	maxTokens := (6_000_000 - p*1000) / 100_000
	held := billing.MicroCents(p*1000 + maxTokens*100_000)
	require.Equal(t, json.Number(itoa(maxTokens)), f.lastUpstream(t)["max_tokens"])

	text, _, err := readAll(s)
	var se *inference.StreamError
	require.ErrorAs(t, err, &se)
	require.ErrorIs(t, err, fault.InsufficientFunds)
	require.Equal(t, `data: {"error":{"message":"credit limit reached","type":"insufficient_credits"},"credits_exhausted":true}`+"\n\n", sse(t, se))
	delivered := int64(len(strings.Fields(text)))
	t.Logf("delivered %d of %d", delivered, maxTokens)
	require.LessOrEqual(t, delivered, maxTokens, "never delivers more than the hold pays for")
	require.Greater(t, delivered, maxTokens*3/4)
	_, again := s.Recv()
	require.Equal(t, err, again)

	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, 1)
	require.Equal(t, -held, entries[0].Amount, "the hold is billed")
	require.GreaterOrEqual(t, f.ledger.balance(acct), billing.MicroCents(0))
	require.Zero(t, f.ledger.openHolds())
	require.Eventually(t, func() bool { return f.fake.Canceled() == 1 }, 5*time.Second, 5*time.Millisecond, "the upstream is cancelled")
}

func TestStreamCloseBillsWhatWasGenerated(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 40, Chunks: 20, PromptTokens: 10, ChunkDelay: 100 * time.Millisecond})
	s, err := f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	for range 3 {
		_, err := s.Recv()
		require.NoError(t, err)
	}
	require.NoError(t, s.Close()) // the client went away
	require.NoError(t, s.Close())
	_, err = s.Recv()
	require.ErrorIs(t, err, fault.Canceled)

	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, 1)
	p := promptTokens("hi")
	require.Equal(t, &billing.Usage{Model: "test/chat", InputTokens: p, OutputTokens: 6}, entries[0].Usage)
	require.Equal(t, -chatModel().Cost(p, 6), entries[0].Amount)
	require.Zero(t, f.ledger.openHolds())
	require.Eventually(t, func() bool { return f.fake.Canceled() == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestStreamCallerCancelBillsWhatWasGenerated(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 40, Chunks: 20, ChunkDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := f.svc.Stream(ctx, acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	defer s.Close()
	for range 2 {
		_, err := s.Recv()
		require.NoError(t, err)
	}
	cancel()
	_, err = s.Recv()
	require.ErrorIs(t, err, fault.Canceled)
	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, 1)
	require.EqualValues(t, 4, entries[0].Usage.OutputTokens)
}

func TestStreamUpstreamFailureAfterFirstByte(t *testing.T) {
	for name, cfg := range map[string]inferencetest.Config{
		"connection dropped": {CompletionTokens: 8, Chunks: 4, BreakAfter: 2},
		"error event":        {CompletionTokens: 8, Chunks: 4, ErrorEventAfter: 2},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, cfg)
			s, err := f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
			require.NoError(t, err, "the first byte came, so the stream started")
			defer s.Close()
			text, chunks, err := readAll(s)
			require.Len(t, chunks, 2)
			var se *inference.StreamError
			require.ErrorAs(t, err, &se)
			require.False(t, se.CreditsExhausted)
			require.Contains(t, sse(t, se), `"error":{"message":"inference`)
			require.NotContains(t, sse(t, se), "credits_exhausted")

			entries := f.ledger.chatEntries(acct)
			require.Len(t, entries, 1, "what was delivered is billed")
			require.Equal(t, int64(len(strings.Fields(text))), entries[0].Usage.OutputTokens)
			require.EqualValues(t, 4, entries[0].Usage.OutputTokens)
		})
	}
}

func TestStreamFirstByteTimeoutIsAPlainError(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{Latency: 2 * time.Second})
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: newServer(t, fake) + "/v1"})
	require.NoError(t, err)
	router, err := inference.NewRouter([]inference.ModelProvider{p}, inference.RouterOptions{
		MaxAttempts: 1, Timeouts: inference.Timeouts{FirstChunk: 50 * time.Millisecond}})
	require.NoError(t, err)
	cat, err := inference.NewCatalog(chatModel())
	require.NoError(t, err)
	ledger := newLedger()
	ledger.credit(acct, billing.Dollar)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Router: router, Ledger: ledger, Tokens: testTokenizer})
	require.NoError(t, err)
	_, err = svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
	require.ErrorIs(t, err, fault.Unavailable)
	require.Equal(t, "inference service unavailable", fault.MessageOf(err))
	require.Zero(t, ledger.openHolds())
	require.Equal(t, billing.Dollar, ledger.balance(acct))
}

func TestConcurrentStreamsNeverOverdraw(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 20, Chunks: 5, PromptTokens: 10, ChunkDelay: 2 * time.Millisecond}, pricey())
	const initial = 20 * billing.Cent
	f.ledger.credit(acct, initial-billing.Dollar)

	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for range 32 {
		wg.Go(func() {
			req := userRequest("test/chat", "hi")
			req.MaxTokens = 30 // a $0.03 output bound: holds are raised to the $0.05 minimum
			outcome := "ok"
			s, err := f.svc.Stream(context.Background(), acct, req)
			if err != nil {
				outcome = fault.MessageOf(err)
			} else {
				if _, _, err := readAll(s); err != nil {
					outcome = err.Error()
				}
				_ = s.Close()
			}
			mu.Lock()
			outcomes[outcome]++
			mu.Unlock()
		})
	}
	wg.Wait()

	t.Logf("outcomes: %v", outcomes)
	require.Equal(t, 32, outcomes["ok"]+outcomes[inference.MsgInsufficientCredits], "%v", outcomes)
	require.Positive(t, outcomes["ok"])
	require.Positive(t, outcomes[inference.MsgInsufficientCredits])
	require.False(t, f.ledger.overdrawn)
	require.Zero(t, f.ledger.openHolds())

	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, outcomes["ok"], "one entry per request")
	var spent billing.MicroCents
	for _, e := range entries {
		require.Equal(t, -pricey().Cost(e.Usage.InputTokens, e.Usage.OutputTokens), e.Amount)
		require.EqualValues(t, 20, e.Usage.OutputTokens)
		spent -= e.Amount
	}
	require.Equal(t, initial-spent, f.ledger.balance(acct))
	require.Equal(t, f.ledger.balance(acct), f.ledger.sumEntries(acct))
	require.GreaterOrEqual(t, f.ledger.balance(acct), billing.MicroCents(0))
}

// A stream that ends normally leaves its upstream connection for the next
// request, also when the end of the body comes a little after [DONE]: the
// session closes the upstream before it cancels it.
func TestStreamsReuseTheUpstreamConnection(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{CompletionTokens: 6, Chunks: 3})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake.ServeHTTP(w, r)
		if w.Header().Get("Content-Type") == "text/event-stream" {
			http.NewResponseController(w).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: srv.URL + "/v1"})
	require.NoError(t, err)
	cat, err := inference.NewCatalog(chatModel())
	require.NoError(t, err)
	ledger := newLedger()
	ledger.credit(acct, billing.Dollar)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Providers: []inference.ModelProvider{p}, Ledger: ledger, Tokens: testTokenizer})
	require.NoError(t, err)
	for range 5 {
		s, err := svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
		require.NoError(t, err)
		text, _, err := readAll(s)
		require.NoError(t, err)
		require.Equal(t, inferencetest.Text(6), text)
		require.NoError(t, s.Close())
	}
	require.Equal(t, int64(1), conns.Load(), "connections opened to the upstream for 5 streams")
	require.Len(t, ledger.chatEntries(acct), 5)
}
