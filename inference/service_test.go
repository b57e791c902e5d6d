package inference_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

func TestCompleteBillsExactlyFromUsage(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 7, PromptTokens: 13})
	resp, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "What is the capital of France?"))
	require.NoError(t, err)

	require.Equal(t, "test/chat", resp.Model, "the catalog ID, never the upstream's name")
	require.Equal(t, "chat.completion", resp.Object)
	require.True(t, strings.HasPrefix(resp.ID, "chatcmpl-"))
	require.NotZero(t, resp.Created)
	require.Equal(t, inferencetest.Text(7), resp.Choices[0].Message.Content)
	require.Equal(t, inference.Usage{PromptTokens: 13, CompletionTokens: 7, TotalTokens: 20}, resp.Usage)

	cost := billing.MicroCents(13*1000 + 7*2000)
	entries := f.ledger.chatEntries(acct)
	require.Len(t, entries, 1)
	require.Equal(t, -cost, entries[0].Amount)
	require.Equal(t, "Chat: test/chat (13 in / 7 out tokens)", entries[0].Description)
	require.Equal(t, &billing.Usage{Model: "test/chat", InputTokens: 13, OutputTokens: 7}, entries[0].Usage)
	require.Equal(t, billing.Dollar-cost, f.ledger.balance(acct))
	require.Zero(t, f.ledger.openHolds())

	c := <-f.charges
	require.Equal(t, acct, c.Account)
	require.Equal(t, cost, c.Amount)
	require.Equal(t, entries[0].ID, c.Entry.ID)
	require.False(t, c.Streamed)

	// The JSON is OpenAI's.
	b, err := json.Marshal(resp)
	require.NoError(t, err)
	var wire map[string]any
	require.NoError(t, json.Unmarshal(b, &wire))
	require.Equal(t, map[string]any{"prompt_tokens": 13.0, "completion_tokens": 7.0, "total_tokens": 20.0}, wire["usage"])
	choice := wire["choices"].([]any)[0].(map[string]any)
	require.Equal(t, "stop", choice["finish_reason"])
	require.Equal(t, map[string]any{"role": "assistant", "content": inferencetest.Text(7)}, choice["message"])
}

func TestDefaultsAndPassThrough(t *testing.T) {
	f := newFixture(t, inferencetest.Config{})
	_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	up := f.lastUpstream(t)
	require.Equal(t, "fake-upstream", up["model"])
	require.Equal(t, json.Number("0.7"), up["temperature"])
	require.Equal(t, json.Number("0.9"), up["top_p"])
	require.Equal(t, json.Number("0.1"), up["frequency_penalty"])
	require.Equal(t, json.Number("1024"), up["max_tokens"], "max_tokens is always sent, so the hold bounds the cost")
	for _, k := range []string{"presence_penalty", "top_k", "stop", "seed", "n", "tools", "tool_choice", "stream_options", "max_completion_tokens", "user"} {
		require.NotContains(t, up, k)
	}

	req := userRequest("test/chat", "hi")
	req.Temperature, req.TopP, req.FrequencyPenalty, req.PresencePenalty = new(0.0), new(1.0), new(0.0), new(-0.5)
	req.TopK, req.Stop, req.Seed, req.N = json.RawMessage(`40`), json.RawMessage(`["\n\n","END"]`), json.RawMessage(`12345`), json.RawMessage(`1`)
	req.MaxCompletionTokens, req.User = 50, "agent-7"
	req.ResponseFormat = json.RawMessage(`{"type":"json_object"}`)
	_, err = f.svc.Complete(context.Background(), acct, req)
	require.NoError(t, err)
	r, _ := f.fake.LastRequest()
	require.JSONEq(t, `{"model":"fake-upstream","messages":[{"role":"user","content":"hi"}],
		"temperature":0,"top_p":1,"frequency_penalty":0,"presence_penalty":-0.5,
		"max_completion_tokens":50,"top_k":40,"stop":["\n\n","END"],"seed":12345,"n":1,
		"response_format":{"type":"json_object"},"user":"agent-7"}`, string(r.Body))
}

func TestMaxTokensClamping(t *testing.T) {
	t.Run("to the model's max output", func(t *testing.T) {
		f := newFixture(t, inferencetest.Config{})
		req := userRequest("test/chat", "hi")
		req.MaxTokens = 100000
		_, err := f.svc.Complete(context.Background(), acct, req)
		require.NoError(t, err)
		require.Equal(t, json.Number("1024"), f.lastUpstream(t)["max_tokens"])

		req.MaxTokens, req.MaxCompletionTokens = 300, 200
		_, err = f.svc.Complete(context.Background(), acct, req)
		require.NoError(t, err)
		up := f.lastUpstream(t)
		require.Equal(t, json.Number("200"), up["max_tokens"], "max_completion_tokens wins; both fields get it")
		require.Equal(t, json.Number("200"), up["max_completion_tokens"])
	})

	t.Run("to the context left after the prompt", func(t *testing.T) {
		m := chatModel()
		m.ContextLength, m.MaxOutputTokens = 300, 200
		f := newFixture(t, inferencetest.Config{}, m)
		text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20)
		p := promptTokens(text)
		require.Greater(t, p, int64(150))
		_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", text))
		require.NoError(t, err)
		want := 300 - p - p/20
		require.Equal(t, json.Number(itoa(want)), f.lastUpstream(t)["max_tokens"])

		_, err = f.svc.Complete(context.Background(), acct, userRequest("test/chat", strings.Repeat(text, 2)))
		require.ErrorIs(t, err, fault.Invalid)
		require.Contains(t, fault.MessageOf(err), "prompt is too long for model 'test/chat'")
		require.EqualValues(t, 1, f.fake.Served())
	})

	t.Run("to what the balance pays for", func(t *testing.T) {
		m := chatModel()
		m.OutputCentsPer1M = 100_000 // 0.1 cent per output token
		f := newFixture(t, inferencetest.Config{CompletionTokens: 5, PromptTokens: 10}, m)
		f.ledger.credit(acct, 6*billing.Cent-billing.Dollar) // $0.06 left
		req := userRequest("test/chat", "hi")
		req.MaxTokens = 1000
		resp, err := f.svc.Complete(context.Background(), acct, req)
		require.NoError(t, err, "a large max_tokens never refuses a request that can pay $0.05")
		p := promptTokens("hi")
		want := (6_000_000 - p*1000) / 100_000
		require.Equal(t, json.Number(itoa(want)), f.lastUpstream(t)["max_tokens"])
		require.Equal(t, 6*billing.Cent-m.Cost(10, 5), f.ledger.balance(acct))
		require.Equal(t, int64(5), resp.Usage.CompletionTokens)
	})
}

// TestOneHoldUpTo checks how the hold is asked for: one "hold up to"
// request per call, for what the request may cost at most, at least
// MinimumHold; and that a hold too small for one output token is released
// and refused before any upstream call.
func TestOneHoldUpTo(t *testing.T) {
	t.Run("sized by the request", func(t *testing.T) {
		m := chatModel()
		m.OutputCentsPer1M = 10_000 // 0.01 cent per output token
		f := newFixture(t, inferencetest.Config{CompletionTokens: 5, PromptTokens: 10}, m)
		req := userRequest("test/chat", "hi")
		req.MaxTokens = 1000
		_, err := f.svc.Complete(context.Background(), acct, req)
		require.NoError(t, err)
		require.Len(t, f.ledger.holdRequests, 1, "one ledger call places the hold")
		r := f.ledger.holdRequests[0]
		require.Equal(t, inference.MinimumHold, r.MinAmount)
		require.Equal(t, acct, r.Account)
		// The prompt's byte bound at the input price plus 1000 tokens at the
		// output price: more than $0.05 here, so not raised.
		require.Greater(t, r.Amount, billing.MicroCents(1000*10_000))
		require.Less(t, r.Amount, billing.MicroCents(1000*10_000+100*1000))
		require.Equal(t, json.Number("1000"), f.lastUpstream(t)["max_tokens"])

		req.MaxTokens = 10 // a small request still holds $0.05
		_, err = f.svc.Complete(context.Background(), acct, req)
		require.NoError(t, err)
		require.Len(t, f.ledger.holdRequests, 2)
		require.Equal(t, inference.MinimumHold, f.ledger.holdRequests[1].Amount)
		require.Equal(t, inference.MinimumHold, f.ledger.holdRequests[1].MinAmount)
	})

	t.Run("a partial hold that pays for no output", func(t *testing.T) {
		m := chatModel()
		m.InputCentsPer1M = 1_000_000 // one cent per prompt token: the prompt alone costs more than $0.06
		f := newFixture(t, inferencetest.Config{}, m)
		f.ledger.credit(acct, 6*billing.Cent-billing.Dollar)
		_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
		require.ErrorIs(t, err, fault.InsufficientFunds)
		require.Equal(t, inference.MsgInsufficientCredits, fault.MessageOf(err))
		_, err = f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
		require.ErrorIs(t, err, fault.InsufficientFunds)
		require.Equal(t, inference.MsgInsufficientCredits, fault.MessageOf(err))
		require.Len(t, f.ledger.holdRequests, 2, "the holds were placed")
		require.Zero(t, f.ledger.openHolds(), "and released")
		require.Zero(t, f.fake.Served(), "refused before any upstream call")
		require.Empty(t, f.ledger.chatEntries(acct))
		require.Equal(t, 6*billing.Cent, f.ledger.balance(acct))
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestInsufficientCredits(t *testing.T) {
	f := newFixture(t, inferencetest.Config{})
	f.ledger.credit(acct, 5*billing.Cent-1-billing.Dollar) // one micro-cent short of $0.05
	_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
	require.ErrorIs(t, err, fault.InsufficientFunds)
	require.Equal(t, "insufficient credits (need at least $0.05 for this request)", fault.MessageOf(err))
	_, err = f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
	require.ErrorIs(t, err, fault.InsufficientFunds)
	require.Zero(t, f.fake.Served())

	f.ledger.credit(acct, 1)
	_, err = f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err, "exactly $0.05 is enough")
}

func TestToolsAcceptedOnFunctionCallingModels(t *testing.T) {
	f := newFixture(t, inferencetest.Config{ToolCall: &inferencetest.ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}})
	req := userRequest("test/tools", "weather in Paris?")
	req.Tools = json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`)
	req.ToolChoice = json.RawMessage(`"auto"`)
	resp, err := f.svc.Complete(context.Background(), acct, req)
	require.NoError(t, err)
	require.Equal(t, "tool_calls", resp.Choices[0].FinishReason)
	require.Equal(t, "get_weather", resp.Choices[0].Message.ToolCalls[0].Function.Name)
	b, err := json.Marshal(resp.Choices[0].Message)
	require.NoError(t, err)
	require.JSONEq(t, `{"role":"assistant","content":null,"tool_calls":[{"id":"call_fake_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}`, string(b))
	up := f.lastUpstream(t)
	require.Equal(t, "auto", up["tool_choice"])
	require.Len(t, up["tools"], 1)

	// The conversation continues with the tool's answer.
	req.Messages = append(req.Messages, resp.Choices[0].Message,
		inference.Message{Role: inference.RoleTool, ToolCallID: "call_fake_1", Content: `{"temp":21}`})
	f.fake.SetConfig(inferencetest.Config{})
	_, err = f.svc.Complete(context.Background(), acct, req)
	require.NoError(t, err)
}

func TestUpstreamFailuresReleaseTheHold(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   fault.Code
		msg    string
	}{
		{503, fault.Unavailable, "inference service unavailable"},
		{400, fault.Upstream, "inference request failed"},
	} {
		f := newFixture(t, inferencetest.Config{Status: tc.status})
		_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
		require.ErrorIs(t, err, tc.code)
		require.Equal(t, tc.msg, fault.MessageOf(err))
		_, err = f.svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
		require.ErrorIs(t, err, tc.code)
		require.Equal(t, tc.msg, fault.MessageOf(err))
		require.Zero(t, f.ledger.openHolds())
		require.Empty(t, f.ledger.chatEntries(acct))
		require.Equal(t, billing.Dollar, f.ledger.balance(acct))
	}
}

func TestNoUpstreamUsageIsCounted(t *testing.T) {
	f := newFixture(t, inferencetest.Config{CompletionTokens: 9, NoUsage: true})
	resp, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "count me"))
	require.NoError(t, err)
	p := promptTokens("count me")
	require.Equal(t, inference.Usage{PromptTokens: p, CompletionTokens: 9, TotalTokens: p + 9}, resp.Usage)
	require.Equal(t, -chatModel().Cost(p, 9), f.ledger.chatEntries(acct)[0].Amount)
}

func TestFallbackToSecondProvider(t *testing.T) {
	down := inferencetest.New(inferencetest.Config{Status: 502})
	up := inferencetest.New(inferencetest.Config{CompletionTokens: 3, PromptTokens: 4})
	var providers []inference.ModelProvider
	for name, h := range map[string]*inferencetest.Upstream{"primary": down, "backup": up} {
		srv := newServer(t, h)
		p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: name, BaseURL: srv + "/v1"})
		require.NoError(t, err)
		providers = append(providers, p)
	}
	m := chatModel()
	m.Providers = []string{"primary", "backup"}
	cat, err := inference.NewCatalog(m)
	require.NoError(t, err)
	router, err := inference.NewRouter(providers, inference.RouterOptions{BackoffBase: time.Millisecond})
	require.NoError(t, err)
	ledger := newLedger()
	ledger.credit(acct, billing.Dollar)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Router: router, Ledger: ledger, Tokens: testTokenizer})
	require.NoError(t, err)

	resp, err := svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	require.Equal(t, inferencetest.Text(3), resp.Choices[0].Message.Content)
	require.EqualValues(t, 2, down.Served(), "the primary is retried once")
	require.EqualValues(t, 1, up.Served())

	s, err := svc.Stream(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	text, _, err := readAll(s)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, inferencetest.Text(3), text)
	require.Len(t, ledger.chatEntries(acct), 2)
}

func TestSettleRetriesTransientLedgerFailures(t *testing.T) {
	f := newFixture(t, inferencetest.Config{})
	f.ledger.failSettles = 2
	_, err := f.svc.Complete(context.Background(), acct, userRequest("test/chat", "hi"))
	require.NoError(t, err)
	require.Len(t, f.ledger.chatEntries(acct), 1)
}

func TestDevModel(t *testing.T) {
	cat, err := inference.NewCatalog(inference.DevModel())
	require.NoError(t, err)
	ledger := newLedger()
	ledger.credit(acct, billing.Dollar)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: ledger, Tokens: testTokenizer,
		Providers: []inference.ModelProvider{inference.NewDevProvider()}})
	require.NoError(t, err)
	ctx := context.Background()

	req := userRequest(inference.DevModelID, "What is the capital of France?")
	a, err := svc.Complete(ctx, acct, req)
	require.NoError(t, err)
	b, err := svc.Complete(ctx, acct, req)
	require.NoError(t, err)
	require.Equal(t, a.Choices, b.Choices, "deterministic")
	require.Equal(t, a.Usage, b.Usage)
	require.Contains(t, a.Choices[0].Message.Content, "What is the capital of France?")
	require.Equal(t, "stop", a.Choices[0].FinishReason)
	require.Equal(t, inference.DevModelID, a.Model)

	other, err := svc.Complete(ctx, acct, userRequest(inference.DevModelID, "Something else"))
	require.NoError(t, err)
	require.NotEqual(t, a.Choices[0].Message.Content, other.Choices[0].Message.Content)

	req.MaxTokens = 5
	short, err := svc.Complete(ctx, acct, req)
	require.NoError(t, err)
	require.Len(t, strings.Fields(short.Choices[0].Message.Content), 5)
	require.Equal(t, "length", short.Choices[0].FinishReason)
	require.EqualValues(t, 5, short.Usage.CompletionTokens)

	req.MaxTokens = 0
	s, err := svc.Stream(ctx, acct, req)
	require.NoError(t, err)
	text, chunks, err := readAll(s)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, a.Choices[0].Message.Content, text)
	require.GreaterOrEqual(t, len(chunks), 4)
	last := chunks[len(chunks)-1]
	require.Equal(t, &a.Usage, last.Usage)
	require.Equal(t, "stop", *last.Choices[0].FinishReason)

	entries := ledger.chatEntries(acct)
	require.Len(t, entries, 5)
	dev := inference.DevModel()
	require.Equal(t, -dev.Cost(a.Usage.PromptTokens, a.Usage.CompletionTokens), entries[0].Amount)
}

// A prompt of one 10 MB word: refused at once for a wallet that cannot
// pay (nothing is counted), and refused as too long for one that can,
// with the count stopped once it passed the context. Before the bound,
// tiktoken's merge of the one piece ran for hours.
func TestHugeOneWordPromptIsBounded(t *testing.T) {
	m := chatModel()
	m.ContextLength, m.MaxOutputTokens = 262144, 16384
	f := newFixture(t, inferencetest.Config{}, m)
	word := strings.Repeat("a", 10<<20)

	start := time.Now()
	_, err := f.svc.Complete(context.Background(), "0xabc0000000000000000000000000000000000002", userRequest("test/chat", word))
	require.ErrorIs(t, err, fault.InsufficientFunds)
	require.Less(t, time.Since(start), 5*time.Second, "a wallet without credit is refused before any counting")

	start = time.Now()
	_, err = f.svc.Complete(context.Background(), acct, userRequest("test/chat", word))
	require.ErrorIs(t, err, fault.Invalid)
	require.Contains(t, fault.MessageOf(err), "prompt is too long")
	t.Logf("funded wallet refused after %v", time.Since(start).Round(time.Millisecond))
	require.Less(t, time.Since(start), 60*time.Second)
	require.Equal(t, billing.Dollar, f.ledger.balance(acct), "nothing billed")
	require.Zero(t, f.ledger.openHolds(), "the probe hold is released")
	require.Zero(t, f.fake.Served())

	// A caller that leaves stops the count.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = f.svc.Complete(ctx, acct, userRequest("test/chat", strings.Repeat("word ", 2<<20)))
	require.Error(t, err)
	require.Zero(t, f.ledger.openHolds())
}

// FuzzChatRequestPath runs request bodies through the whole chat path
// (parse, validation, the tokenizer when the byte bound does not settle
// the context, the hold, the upstream, the settlement) and checks each
// input ends within a bound, holds nothing afterwards, and never bills
// more than it held. Run it for minutes with
//
//	go test ./inference -run '^$' -fuzz FuzzChatRequestPath -fuzztime 5m -fuzzminimizetime 3s
//
// The short minimization matters: each new interesting input is
// minimized for up to -fuzzminimizetime (60 s by default), and those
// executions are not counted, so with the default the progress line
// shows 0 execs/s for a minute at a time. On 2 cores, 150 s ran 194,885
// inputs, none near the bound (2026-12-04).
func FuzzChatRequestPath(f *testing.F) {
	m := chatModel()
	m.ContextLength, m.MaxOutputTokens = 4096, 512
	fx := newFixture(f, inferencetest.Config{CompletionTokens: 3}, m)
	for _, seed := range []string{
		`{"model":"test/chat","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"test/chat","messages":[{"role":"user","content":"` + strings.Repeat("a", 6<<10) + `"}],"max_tokens":10}`,
		`{"model":"test/chat","messages":[{"role":"system","content":"` + strings.Repeat("  ", 3<<10) + `"},{"role":"user","content":"x"}]}`,
		`{"model":"test/chat","messages":[{"role":"user","content":"` + strings.Repeat("日本", 1<<10) + `"}],"n":2}`,
		`{"model":"test/chat","messages":[]}`,
		`{"model":"nope","messages":[{"role":"user","content":"x"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if fx.ledger.balance(acct) < billing.Dollar/2 {
			fx.ledger.credit(acct, billing.Dollar)
		}
		before := fx.ledger.balance(acct)
		req, err := inference.ParseChatRequest(body)
		if err != nil {
			require.ErrorIs(t, err, fault.Invalid)
			return
		}
		start := time.Now()
		_, err = fx.svc.Complete(context.Background(), acct, req)
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("one input took %v (%d bytes)", d, len(body))
		}
		if err != nil {
			require.NotEqual(t, fault.Unknown, fault.CodeOf(err), "%v", err)
		}
		for len(fx.charges) > 0 {
			<-fx.charges
		}
		require.Zero(t, fx.ledger.openHolds())
		require.LessOrEqual(t, fx.ledger.balance(acct), before)
	})
}
