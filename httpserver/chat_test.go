package httpserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/dev"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// Test prices in cents per million tokens, that is micro-cents per token:
// 0.1 cent per prompt token and 0.3 cent per output token, so that a few
// requests add up to whole cents in the balance and the metrics.
const (
	priceIn  = 100_000
	priceOut = 300_000
)

// chatCost is the exact price of a test/... model request.
func chatCost(in, out int64) int64 { return in*priceIn + out*priceOut }

// chatModel is a catalog entry served by provider under an upstream name
// that differs from its ID.
func chatModel(id, provider string, tools bool) inference.Model {
	return inference.Model{
		ID: id, Name: "Model " + id, Created: 1748000000,
		ContextLength: 16384, MaxOutputTokens: 1024, FrontierRank: 5,
		InputCentsPer1M: priceIn, OutputCentsPer1M: priceOut,
		FunctionCalling: tools, Providers: []string{provider}, UpstreamModel: "upstream/" + id + "-v1",
	}
}

// fakeProvider serves a fake OpenAI-compatible upstream on loopback and
// returns it with a provider pointed at it. The fake requires the
// provider's API key.
func fakeProvider(t *testing.T, name string, cfg inferencetest.Config) (*inferencetest.Upstream, inference.ModelProvider) {
	t.Helper()
	cfg.APIKey = "sk-upstream-" + name
	fake := inferencetest.New(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: name, BaseURL: srv.URL + "/v1", APIKey: cfg.APIKey})
	require.NoError(t, err)
	return fake, p
}

// downProvider is a provider whose upstream refuses connections.
func downProvider(t *testing.T, name string) inference.ModelProvider {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: name, BaseURL: "http://" + addr + "/v1"})
	require.NoError(t, err)
	return p
}

func newChatEnv(t *testing.T, models []inference.Model, providers ...inference.ModelProvider) *env {
	return newEnv(t, perceptron.Config{Inference: perceptron.InferenceConfig{Models: models, Providers: providers}})
}

// agent is a logged-in wallet with a client key.
type agent struct {
	master, key, account string
}

// newAgent logs a new wallet in, makes it a client key and credits funds
// to its ledger directly (no chain needed).
func (e *env) newAgent(t *testing.T, funds billing.MicroCents) agent {
	t.Helper()
	w := newWallet(t)
	master := e.login(w)
	st, k := e.call("POST", "/api/keys/generate", master, map[string]string{"label": "agent"})
	require.Equal(t, 200, st, "%v", k)
	a := agent{master: master, key: k["key"].(string), account: strings.ToLower(w.addr)}
	if funds > 0 {
		_, err := e.p.Billing.Ledger().Credit(context.Background(), billing.Posting{
			Account: a.account, Type: billing.Purchase, Amount: funds, Description: "test", At: e.clock.Now(),
		})
		require.NoError(t, err)
	}
	return a
}

// raw sends a request and returns the response with its whole body. body
// is nil, a string sent as is, or a value sent as JSON.
func (e *env) raw(method, path, token string, body any, header http.Header) (*http.Response, string) {
	e.t.Helper()
	resp, err := e.send(context.Background(), method, path, token, body, header)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp, string(b)
}

// send starts a request; the caller reads and closes the body. It does not
// use e.t, so other goroutines may call it.
func (e *env) send(ctx context.Context, method, path, token string, body any, header http.Header) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = strings.NewReader(string(buf))
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

// openAI is a go-openai client of the platform under base ("/api/v1" or
// "/api").
func (e *env) openAI(token, base string) *openai.Client {
	cfg := openai.DefaultConfig(token)
	cfg.BaseURL = e.url + base
	return openai.NewClientWithConfig(cfg)
}

// apiError asserts that go-openai parsed err as the API's error.
func apiError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var ae *openai.APIError
	require.ErrorAs(t, err, &ae, "%v", err)
	require.Equal(t, status, ae.HTTPStatusCode, "%v", err)
	require.Equal(t, msg, ae.Message)
	require.NotEmpty(t, ae.Type)
}

func chatBody(model, content string, stream bool, extra ...any) map[string]any {
	b := map[string]any{"model": model, "messages": []map[string]any{{"role": "user", "content": content}}, "stream": stream}
	for i := 0; i+1 < len(extra); i += 2 {
		b[extra[i].(string)] = extra[i+1]
	}
	return b
}

// sseEvents checks the framing of a complete SSE body (each event exactly
// "data: <payload>\n\n", the last one [DONE], once) and returns the
// payloads before [DONE].
func sseEvents(t *testing.T, body string) []string {
	t.Helper()
	require.True(t, strings.HasSuffix(body, "data: [DONE]\n\n"), "body: %q", body)
	require.Equal(t, 1, strings.Count(body, "[DONE]"), "body: %q", body)
	var out []string
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		require.True(t, strings.HasPrefix(ev, "data: "), "event %q in %q", ev, body)
		require.NotContains(t, ev, "\n")
		out = append(out, strings.TrimPrefix(ev, "data: "))
	}
	require.Equal(t, "[DONE]", out[len(out)-1])
	return out[:len(out)-1]
}

// wireChunk is a chat.completion.chunk as it goes over the wire.
type wireChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *inference.Usage `json:"usage"`
	Error any              `json:"error"`
}

// streamed is a successful stream, checked: every chunk has the same ID,
// the model asked for, and no usage; the last has a finish_reason and the
// usage; content chunks have finish_reason null.
type streamed struct {
	ID, Content, Finish string
	Chunks              int
	Usage               inference.Usage
}

func checkStream(t *testing.T, body, model string) streamed {
	t.Helper()
	events := sseEvents(t, body)
	require.GreaterOrEqual(t, len(events), 2, "body: %q", body)
	var s streamed
	for i, ev := range events {
		var c wireChunk
		require.NoError(t, json.Unmarshal([]byte(ev), &c), ev)
		require.Nil(t, c.Error, ev)
		require.Equal(t, "chat.completion.chunk", c.Object, ev)
		require.Equal(t, model, c.Model, "the catalog ID, never the upstream's name")
		require.Regexp(t, `^chatcmpl-[0-9a-f]{32}$`, c.ID)
		if i == 0 {
			s.ID = c.ID
			require.Equal(t, "assistant", c.Choices[0].Delta.Role)
		}
		require.Equal(t, s.ID, c.ID, "one ID for every chunk")
		require.Len(t, c.Choices, 1, ev)
		s.Content += c.Choices[0].Delta.Content
		last := i == len(events)-1
		if !last {
			require.Nil(t, c.Usage, ev)
			require.Nil(t, c.Choices[0].FinishReason, ev)
			require.Contains(t, ev, `"finish_reason":null`)
			continue
		}
		require.NotNil(t, c.Usage, "the final chunk carries usage: %s", ev)
		require.NotNil(t, c.Choices[0].FinishReason, ev)
		s.Finish, s.Usage = *c.Choices[0].FinishReason, *c.Usage
	}
	s.Chunks = len(events)
	require.Equal(t, s.Usage.PromptTokens+s.Usage.CompletionTokens, s.Usage.TotalTokens)
	return s
}

// historyTx is an entry of GET /api/credits/history.
type historyTx struct {
	ID                     string `json:"id"`
	TxType                 string `json:"tx_type"`
	Amount                 int64  `json:"amount"`
	BalanceAfter           int64  `json:"balance_after"`
	Description            string `json:"description"`
	Timestamp              int64  `json:"timestamp"`
	Status                 string `json:"status"`
	AmountMicroCents       int64  `json:"amount_micro_cents"`
	BalanceAfterMicroCents int64  `json:"balance_after_micro_cents"`
}

func (e *env) history(token string) []historyTx {
	e.t.Helper()
	resp, body := e.raw("GET", "/api/credits/history", token, nil, nil)
	require.Equal(e.t, 200, resp.StatusCode, body)
	var h struct {
		Transactions []historyTx `json:"transactions"`
	}
	require.NoError(e.t, json.Unmarshal([]byte(body), &h))
	return h.Transactions
}

func chatEntries(h []historyTx) []historyTx {
	var out []historyTx
	for _, tx := range h {
		if tx.TxType == string(billing.ChatInference) {
			out = append(out, tx)
		}
	}
	return out
}

var chatDescription = regexp.MustCompile(`^Chat: (\S+) \((\d+) in / (\d+) out tokens\)$`)

// parseChatDescription returns the model and token counts of a
// ChatInference entry's description.
func parseChatDescription(t *testing.T, d string) (model string, in, out int64) {
	t.Helper()
	m := chatDescription.FindStringSubmatch(d)
	require.NotNil(t, m, "description %q", d)
	in, _ = strconv.ParseInt(m[2], 10, 64)
	out, _ = strconv.ParseInt(m[3], 10, 64)
	return m[1], in, out
}

func (e *env) balanceCents(token string) int64 {
	e.t.Helper()
	st, out := e.call("GET", "/api/credits/balance", token, nil)
	require.Equal(e.t, 200, st, "%v", out)
	require.Equal(e.t, "USD_CENTS", out["currency"])
	return int64(out["balance"].(float64))
}

func (e *env) ledgerBalance(account string) billing.Balance {
	e.t.Helper()
	b, err := e.p.Billing.Balance(context.Background(), account)
	require.NoError(e.t, err)
	return b
}

// checkLedgerAddsUp asserts that the history's exact amounts add up to the
// balance, that nothing is held and that the balance is not negative.
func (e *env) checkLedgerAddsUp(a agent) []historyTx {
	e.t.Helper()
	h := e.history(a.key)
	var sum int64
	for _, tx := range h {
		sum += tx.AmountMicroCents
	}
	b := e.ledgerBalance(a.account)
	require.Equal(e.t, int64(b.Total), sum, "history adds up to the balance")
	require.Zero(e.t, b.Held, "no hold left open")
	require.GreaterOrEqual(e.t, int64(b.Total), int64(0))
	require.Equal(e.t, b.Total.FloorCents(), e.balanceCents(a.key))
	return h
}

// TestChatWithGoOpenAIClient uses go-openai against the platform's handler:
// the model list, a completion and a stream; then the raw SSE bytes.
func TestChatWithGoOpenAIClient(t *testing.T) {
	fake, prov := fakeProvider(t, "fake", inferencetest.Config{PromptTokens: 13, CompletionTokens: 8, Chunks: 4})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "fake", false), chatModel("test/tools", "fake", true)}, prov)
	a := e.newAgent(t, 100*billing.Dollar)
	ctx := context.Background()
	client := e.openAI(a.key, "/api/v1")

	// models.list() against /api/v1/models.
	models, err := client.ListModels(ctx)
	require.NoError(t, err)
	require.Len(t, models.Models, 2)
	require.Equal(t, "test/chat", models.Models[0].ID)
	require.Equal(t, "test/tools", models.Models[1].ID)
	require.Equal(t, "model", models.Models[0].Object)
	require.Equal(t, "perceptron", models.Models[0].OwnedBy)
	require.Equal(t, int64(1748000000), models.Models[0].CreatedAt)

	// The documented shape, the same at /api/models and /api/v1/models,
	// without auth.
	r1, b1 := e.raw("GET", "/api/models", "", nil, nil)
	r2, b2 := e.raw("GET", "/api/v1/models", "", nil, nil)
	require.Equal(t, 200, r1.StatusCode)
	require.Equal(t, 200, r2.StatusCode)
	require.Equal(t, "application/json", r1.Header.Get("Content-Type"))
	require.Equal(t, b1, b2)
	var list map[string]any
	require.NoError(t, json.Unmarshal([]byte(b1), &list))
	require.Equal(t, "list", list["object"])
	require.Equal(t, map[string]any{
		"id": "test/chat", "name": "Model test/chat", "object": "model", "created": 1748000000.0, "owned_by": "perceptron",
		"context_length": 16384.0, "max_output_tokens": 1024.0, "frontier_rank": 5.0,
		"pricing": map[string]any{"input_cents_per_1m": float64(priceIn), "output_cents_per_1m": float64(priceOut)},
		"type":    "chat",
	}, list["data"].([]any)[0])

	// A completion.
	resp, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
		Model:    "test/chat",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "What is the capital of France?"}},
	})
	require.NoError(t, err)
	require.Equal(t, "test/chat", resp.Model, "the catalog ID, never the upstream's name")
	require.Equal(t, "chat.completion", resp.Object)
	require.Regexp(t, `^chatcmpl-[0-9a-f]{32}$`, resp.ID)
	require.Equal(t, e.clock.Now().Unix(), resp.Created)
	require.Len(t, resp.Choices, 1)
	require.Equal(t, openai.ChatMessageRoleAssistant, resp.Choices[0].Message.Role)
	require.Equal(t, inferencetest.Text(8), resp.Choices[0].Message.Content)
	require.Equal(t, openai.FinishReasonStop, resp.Choices[0].FinishReason)
	require.Equal(t, openai.Usage{PromptTokens: 13, CompletionTokens: 8, TotalTokens: 21}, resp.Usage)
	up, ok := fake.LastRequest()
	require.True(t, ok)
	require.Equal(t, "upstream/test/chat-v1", up.JSON()["model"], "the upstream gets its own name")
	require.Equal(t, "Bearer sk-upstream-fake", up.Header.Get("Authorization"), "the provider's key, not the caller's")

	// A stream, without stream_options: the last chunk still has usage.
	stream, err := client.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Model:    "test/chat",
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "Tell me a story"}},
		Stream:   true,
	})
	require.NoError(t, err)
	var (
		chunks  []openai.ChatCompletionStreamResponse
		content string
	)
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		chunks = append(chunks, c)
		for _, ch := range c.Choices {
			content += ch.Delta.Content
		}
	}
	require.NoError(t, stream.Close())
	require.GreaterOrEqual(t, len(chunks), 4, "chunks are passed through")
	for _, c := range chunks {
		require.Equal(t, "test/chat", c.Model)
		require.Equal(t, chunks[0].ID, c.ID)
	}
	require.Equal(t, inferencetest.Text(8), content)
	last := chunks[len(chunks)-1]
	require.NotNil(t, last.Usage, "the last chunk carries usage")
	require.Equal(t, openai.Usage{PromptTokens: 13, CompletionTokens: 8, TotalTokens: 21}, *last.Usage)
	require.Equal(t, openai.FinishReasonStop, last.Choices[0].FinishReason)
	for _, c := range chunks[:len(chunks)-1] {
		require.Nil(t, c.Usage)
	}
	up, _ = fake.LastRequest()
	require.Equal(t, map[string]any{"include_usage": true}, up.JSON()["stream_options"], "the upstream is asked for usage")

	// The raw bytes over plain net/http.
	r, body := e.raw("POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "hello there", true), nil)
	require.Equal(t, 200, r.StatusCode, body)
	require.Equal(t, "text/event-stream", r.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", r.Header.Get("Cache-Control"))
	require.NotEmpty(t, r.Header.Get("X-Request-Id"))
	s := checkStream(t, body, "test/chat")
	require.Equal(t, 5, s.Chunks, "4 content chunks, then the finishing one with usage")
	require.Equal(t, inferencetest.Text(8), s.Content)
	require.Equal(t, "stop", s.Finish)
	require.Equal(t, inference.Usage{PromptTokens: 13, CompletionTokens: 8, TotalTokens: 21}, s.Usage)
	events := sseEvents(t, body)
	var final map[string]any
	require.NoError(t, json.Unmarshal([]byte(events[len(events)-1]), &final))
	require.Equal(t, map[string]any{"prompt_tokens": 13.0, "completion_tokens": 8.0, "total_tokens": 21.0}, final["usage"])
	require.Equal(t, []any{map[string]any{"index": 0.0, "delta": map[string]any{}, "finish_reason": "stop"}}, final["choices"])

	// Three requests, three charges.
	require.Len(t, chatEntries(e.history(a.key)), 3)
	e.checkLedgerAddsUp(a)
}

// TestChatBothPathsIdentical sends the same requests to
// /api/v1/chat/completions and /api/chat/completions.
func TestChatBothPathsIdentical(t *testing.T) {
	_, prov := fakeProvider(t, "fake", inferencetest.Config{PromptTokens: 11, CompletionTokens: 6, Chunks: 3})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "fake", false)}, prov)
	a := e.newAgent(t, 10*billing.Dollar)
	poor := e.newAgent(t, 0)

	type answer struct {
		plain  map[string]any
		events []map[string]any
	}
	answers := map[string]answer{}
	for _, path := range []string{"/api/v1/chat/completions", "/api/chat/completions"} {
		st, out := e.call("POST", path, a.key, chatBody("test/chat", "hi", false))
		require.Equal(t, 200, st, "%s: %v", path, out)
		require.Regexp(t, `^chatcmpl-[0-9a-f]{32}$`, out["id"])
		delete(out, "id")

		r, body := e.raw("POST", path, a.key, chatBody("test/chat", "hi", true), nil)
		require.Equal(t, 200, r.StatusCode, body)
		require.Equal(t, "text/event-stream", r.Header.Get("Content-Type"))
		checkStream(t, body, "test/chat")
		var evs []map[string]any
		for _, ev := range sseEvents(t, body) {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(ev), &m))
			delete(m, "id")
			evs = append(evs, m)
		}
		answers[path] = answer{plain: out, events: evs}

		// The same errors.
		e.expectError(400, "invalid model 'nope'. Available models: test/chat", "POST", path, a.key, chatBody("nope", "hi", false))
		e.expectError(401, "missing bearer token", "POST", path, "", chatBody("test/chat", "hi", false))
		e.expectError(402, inference.MsgInsufficientCredits, "POST", path, poor.key, chatBody("test/chat", "hi", true))

		// go-openai works on either base URL.
		base := strings.TrimSuffix(path, "/chat/completions")
		resp, err := e.openAI(a.key, base).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
			Model: "test/chat", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
		})
		require.NoError(t, err, base)
		require.Equal(t, inferencetest.Text(6), resp.Choices[0].Message.Content)
		_, err = e.openAI(poor.key, base).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
			Model: "test/chat", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
		})
		apiError(t, err, 402, inference.MsgInsufficientCredits)
	}
	v1, api := answers["/api/v1/chat/completions"], answers["/api/chat/completions"]
	require.Equal(t, v1.plain, api.plain)
	require.Equal(t, v1.events, api.events)
	require.Equal(t, "test/chat", v1.plain["model"])

	// Both bill alike: six requests at the same price.
	entries := chatEntries(e.checkLedgerAddsUp(a))
	require.Len(t, entries, 6)
	for _, tx := range entries {
		require.Equal(t, "Chat: test/chat (11 in / 6 out tokens)", tx.Description)
		require.Equal(t, -chatCost(11, 6), tx.AmountMicroCents)
	}
}

// TestChatErrors checks every documented error over HTTP, exact status and
// message in the one JSON shape, and as go-openai parses it; tools refused
// and accepted; and that refused requests cost nothing.
func TestChatErrors(t *testing.T) {
	_, chat := fakeProvider(t, "fake", inferencetest.Config{PromptTokens: 9, CompletionTokens: 5})
	toolsFake, tools := fakeProvider(t, "toolsfake", inferencetest.Config{PromptTokens: 20, ToolCall: &inferencetest.ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}})
	busy, busyProv := fakeProvider(t, "busy", inferencetest.Config{Status: 503, ErrorMessage: "overloaded"})
	refuser, refuseProv := fakeProvider(t, "refuser", inferencetest.Config{Status: 400, ErrorMessage: "unsupported parameter: top_k"})
	e := newChatEnv(t, []inference.Model{
		chatModel("test/chat", "fake", false),
		chatModel("test/tools", "toolsfake", true),
		chatModel("test/down", "down", false),
		chatModel("test/busy", "busy", false),
		chatModel("test/refused", "refuser", false),
	}, chat, tools, downProvider(t, "down"), busyProv, refuseProv)
	a := e.newAgent(t, 10*billing.Dollar)
	ctx := context.Background()
	const path = "/api/v1/chat/completions"
	client := e.openAI(a.key, "/api/v1")
	ask := func(model string) openai.ChatCompletionRequest {
		return openai.ChatCompletionRequest{Model: model, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}}
	}
	// both checks a non-streamed and a streamed request, over raw HTTP
	// (e.call checks the JSON shape and request ID) and through go-openai.
	both := func(status int, msg, token, model string, extra ...any) {
		t.Helper()
		e.expectError(status, msg, "POST", path, token, chatBody(model, "hi", false, extra...))
		// A refusal before the upstream answers is a plain HTTP error,
		// also for stream: true (e.call asserts application/json).
		e.expectError(status, msg, "POST", path, token, chatBody(model, "hi", true, extra...))
		if len(extra) > 0 {
			return // go-openai requests with extra fields are built below
		}
		c := e.openAI(token, "/api/v1")
		_, err := c.CreateChatCompletion(ctx, ask(model))
		apiError(t, err, status, msg)
		s, err := c.CreateChatCompletionStream(ctx, ask(model))
		if s != nil {
			s.Close()
		}
		apiError(t, err, status, msg)
	}

	// 400: unknown model, the available IDs joined by ", ".
	both(400, "invalid model 'x'. Available models: test/chat, test/tools, test/down, test/busy, test/refused", a.key, "x")
	st, out := e.call("POST", path, a.key, chatBody("x", "hi", false))
	require.Equal(t, 400, st)
	require.Equal(t, "invalid_request_error", out["error"].(map[string]any)["type"])

	// 401 without a key, or with a wrong one.
	both(401, "missing bearer token", "", "test/chat")
	both(401, "invalid or revoked API key", "pct-"+strings.Repeat("0", 64), "test/chat")

	// 402: nothing, or just under $0.05; plain HTTP also for streams.
	broke := e.newAgent(t, 0)
	both(402, "insufficient credits (need at least $0.05 for this request)", broke.key, "test/chat")
	almost := e.newAgent(t, inference.MinimumHold-1)
	both(402, "insufficient credits (need at least $0.05 for this request)", almost.key, "test/chat")
	st, out = e.call("POST", path, almost.key, chatBody("test/chat", "hi", true))
	require.Equal(t, 402, st)
	require.Equal(t, "insufficient_credits", out["error"].(map[string]any)["type"])
	require.Empty(t, chatEntries(e.history(almost.key)))

	// 502: the upstream refuses connections, or answers 503 every time
	// (retried once before giving up).
	e.expectError(502, "inference service unavailable", "POST", path, a.key, chatBody("test/busy", "hi", false))
	require.Equal(t, int64(2), busy.Served(), "a 503 is retried")
	both(502, "inference service unavailable", a.key, "test/busy")
	both(502, "inference service unavailable", a.key, "test/down")
	st, out = e.call("POST", path, a.key, chatBody("test/down", "hi", false))
	require.Equal(t, 502, st)
	require.Equal(t, "service_unavailable", out["error"].(map[string]any)["type"])

	// 500: the upstream refuses the request (400): not retried.
	e.expectError(500, "inference request failed", "POST", path, a.key, chatBody("test/refused", "hi", false))
	require.Equal(t, int64(1), refuser.Served(), "a refusal is not retried")
	both(500, "inference request failed", a.key, "test/refused")

	// Tools: refused for a model without function calling, before any
	// upstream call, however they come.
	weather := []any{map[string]any{"type": "function", "function": map[string]any{
		"name": "get_weather", "parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
	}}}
	const noTools = "model 'test/chat' does not support function calling: tools and tool_choice are not accepted"
	both(400, noTools, a.key, "test/chat", "tools", weather)
	both(400, noTools, a.key, "test/chat", "tool_choice", "none")
	both(400, noTools, a.key, "test/chat", "tools", weather, "tool_choice", "auto")
	withTools := ask("test/chat")
	withTools.Tools = []openai.Tool{{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
		Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`),
	}}}
	_, err := client.CreateChatCompletion(ctx, withTools)
	apiError(t, err, 400, noTools)
	_, err = client.CreateChatCompletionStream(ctx, withTools)
	apiError(t, err, 400, noTools)

	// Malformed requests: 400 before any money is held.
	e.expectError(400, "invalid request body: malformed JSON at offset 10", "POST", path, a.key, `{"model": `)
	st, out = e.call("POST", path, a.key, `{"model":"test/chat","messages":"hi"}`)
	require.Equal(t, 400, st)
	require.Contains(t, out["error"].(map[string]any)["message"], "invalid request body: field messages has the wrong type (got JSON string, want an array)")
	e.expectError(400, "messages must not be empty", "POST", path, a.key, map[string]any{"model": "test/chat", "messages": []any{}})
	e.expectError(400, `messages[0]: unknown role "function" (use system, user, assistant or tool)`, "POST", path, a.key,
		map[string]any{"model": "test/chat", "messages": []any{map[string]any{"role": "function", "content": "x"}}})
	e.expectError(400, "temperature must be between 0 and 2", "POST", path, a.key, chatBody("test/chat", "hi", true, "temperature", 3))

	// Nothing above cost anything, nor left a hold.
	require.Empty(t, chatEntries(e.history(a.key)))
	require.Equal(t, e.ledgerBalance(a.account), billing.Balance{Total: 10 * billing.Dollar})

	// Accepted for a model with function calling, forwarded as sent.
	withTools.Model = "test/tools"
	withTools.ToolChoice = "auto"
	resp, err := client.CreateChatCompletion(ctx, withTools)
	require.NoError(t, err)
	require.Equal(t, "test/tools", resp.Model)
	require.Equal(t, openai.FinishReasonToolCalls, resp.Choices[0].FinishReason)
	require.Len(t, resp.Choices[0].Message.ToolCalls, 1)
	require.Equal(t, "get_weather", resp.Choices[0].Message.ToolCalls[0].Function.Name)
	require.JSONEq(t, `{"city":"Paris"}`, resp.Choices[0].Message.ToolCalls[0].Function.Arguments)
	up, _ := toolsFake.LastRequest()
	require.Equal(t, "auto", up.JSON()["tool_choice"])
	fwd, err := json.Marshal(up.JSON()["tools"])
	require.NoError(t, err)
	require.JSONEq(t, `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`, string(fwd))

	// Streamed too, over raw HTTP.
	r, body := e.raw("POST", path, a.key, chatBody("test/tools", "weather?", true, "tools", weather), nil)
	require.Equal(t, 200, r.StatusCode, body)
	events := sseEvents(t, body)
	require.Contains(t, events[0], `"get_weather"`)
	var final wireChunk
	require.NoError(t, json.Unmarshal([]byte(events[len(events)-1]), &final))
	require.Equal(t, "tool_calls", *final.Choices[0].FinishReason)
	require.NotNil(t, final.Usage)

	entries := chatEntries(e.checkLedgerAddsUp(a))
	require.Len(t, entries, 2, "only the two tool calls were billed")
	for _, tx := range entries {
		model, in, out := parseChatDescription(t, tx.Description)
		require.Equal(t, "test/tools", model)
		require.Equal(t, int64(20), in)
		require.Positive(t, out)
		require.Equal(t, -chatCost(in, out), tx.AmountMicroCents)
	}
}

// TestChatBillingThroughAPI checks the charges as the API shows them: one
// ChatInference entry per request, its description and exact amount, and
// the balance.
func TestChatBillingThroughAPI(t *testing.T) {
	_, prov := fakeProvider(t, "fake", inferencetest.Config{PromptTokens: 13, CompletionTokens: 8, Chunks: 4})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "fake", false)}, prov)
	a := e.newAgent(t, 100*billing.Dollar)
	require.Equal(t, int64(10000), e.balanceCents(a.key))
	cost := chatCost(13, 8) // 3.7 cents
	require.Equal(t, int64(3_700_000), cost)

	balances := []int64{10000}
	for i, stream := range []bool{false, true, false, true} {
		r, body := e.raw("POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "What is the capital of France?", stream), nil)
		require.Equal(t, 200, r.StatusCode, body)
		n := int64(i + 1)
		h := e.history(a.key)
		entries := chatEntries(h)
		require.Len(t, entries, int(n), "one entry per request")
		newest := entries[0]
		require.Equal(t, "Chat: test/chat (13 in / 8 out tokens)", newest.Description)
		require.Equal(t, -cost, newest.AmountMicroCents, "input*price_in + output*price_out, exactly")
		require.Equal(t, "Completed", newest.Status)
		require.Equal(t, e.clock.Now().Unix(), newest.Timestamp)
		require.Equal(t, int64(100*billing.Dollar)-n*cost, newest.BalanceAfterMicroCents)
		want := (int64(100*billing.Dollar) - n*cost) / int64(billing.Cent)
		require.Equal(t, want, e.balanceCents(a.key), "the balance dropped by the exact cost, shown in whole cents")
		balances = append(balances, want)
	}
	require.Equal(t, []int64{10000, 9996, 9992, 9988, 9985}, balances)
	h := e.checkLedgerAddsUp(a)
	require.Len(t, h, 5)
	// The shown cents add up too.
	var shown int64
	for _, tx := range h {
		shown += tx.Amount
	}
	require.Equal(t, int64(9985), shown)
}

// TestStreamCreditExhaustion streams from an upstream that ignores
// max_tokens against a balance just over $0.05: the stream ends with the
// documented event, the upstream is cancelled, and the balance stays >= 0.
func TestStreamCreditExhaustion(t *testing.T) {
	fake, prov := fakeProvider(t, "runaway", inferencetest.Config{
		IgnoreMaxTokens: true, CompletionTokens: 400, Chunks: 100, ChunkDelay: 2 * time.Millisecond,
	})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "runaway", false)}, prov)
	funds := inference.MinimumHold + 100_000 // $0.051
	a := e.newAgent(t, funds)

	r, body := e.raw("POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "hi", true), nil)
	require.Equal(t, 200, r.StatusCode, body)
	require.Equal(t, "text/event-stream", r.Header.Get("Content-Type"))
	const tail = `data: {"error":{"message":"credit limit reached","type":"insufficient_credits"},"credits_exhausted":true}` + "\n\ndata: [DONE]\n\n"
	require.True(t, strings.HasSuffix(body, tail), "body: %q", body)
	events := sseEvents(t, body)
	require.Greater(t, len(events), 1, "some chunks were delivered first")
	var delivered string
	for _, ev := range events[:len(events)-1] {
		var c wireChunk
		require.NoError(t, json.Unmarshal([]byte(ev), &c), ev)
		require.Nil(t, c.Usage)
		delivered += c.Choices[0].Delta.Content
	}
	require.NotEmpty(t, delivered)
	require.Less(t, len(delivered), len(inferencetest.Text(400)), "the stream was cut short")

	// max_tokens was clamped to what the balance pays for.
	up, _ := fake.LastRequest()
	maxTokens, err := up.JSON()["max_tokens"].(json.Number).Int64()
	require.NoError(t, err)
	require.Less(t, maxTokens, int64(20))
	require.Positive(t, maxTokens)

	// The upstream was cancelled rather than read to the end.
	require.Eventually(t, func() bool { return fake.Canceled() == 1 && fake.Open() == 0 }, 5*time.Second, 5*time.Millisecond)

	h := e.checkLedgerAddsUp(a)
	entries := chatEntries(h)
	require.Len(t, entries, 1)
	model, _, out := parseChatDescription(t, entries[0].Description)
	require.Equal(t, "test/chat", model)
	require.Positive(t, out)
	billed := -entries[0].AmountMicroCents
	require.GreaterOrEqual(t, billed, int64(inference.MinimumHold), "the whole hold is billed")
	require.LessOrEqual(t, billed, int64(funds))
	require.Equal(t, int64(funds)-billed, int64(e.ledgerBalance(a.account).Total))
}

// TestStreamClientDisconnect cancels a request mid-stream over real HTTP:
// the upstream request is cancelled, and what was generated is billed.
func TestStreamClientDisconnect(t *testing.T) {
	// 100 chunks 300ms apart: half a minute unless cancelled.
	fake, prov := fakeProvider(t, "slow", inferencetest.Config{PromptTokens: 12, CompletionTokens: 100, Chunks: 100, ChunkDelay: 300 * time.Millisecond})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "slow", false)}, prov)
	a := e.newAgent(t, 10*billing.Dollar)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	resp, err := e.send(ctx, "POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "write a long essay", true), nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	br := bufio.NewReader(resp.Body)
	for n := 0; n < 3; {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "data: ") {
			require.NotContains(t, line, "[DONE]")
			n++
		}
	}
	// Chunks arrive as the upstream sends them, each flushed: three events
	// take 0.6s; buffered by the server, they came after some 11s.
	require.Less(t, time.Since(start), 4*time.Second, "events are flushed as they arrive")
	require.Equal(t, int64(1), fake.Open(), "the upstream is still streaming")
	require.Zero(t, fake.Canceled())
	cancel()
	resp.Body.Close()

	require.Eventually(t, func() bool { return fake.Canceled() == 1 && fake.Open() == 0 }, 5*time.Second, 5*time.Millisecond,
		"the upstream request is cancelled")
	require.Eventually(t, func() bool {
		es, err := billing.AllEntries(context.Background(), e.p.Billing.Ledger(), a.account, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
		return err == nil && len(es) == 1
	}, 5*time.Second, 5*time.Millisecond, "the request is billed after the disconnect")

	entries := chatEntries(e.checkLedgerAddsUp(a))
	require.Len(t, entries, 1)
	model, in, out := parseChatDescription(t, entries[0].Description)
	require.Equal(t, "test/chat", model)
	require.Positive(t, in)
	require.GreaterOrEqual(t, out, int64(3), "at least what was delivered")
	require.Less(t, out, int64(100), "not what was never generated")
	require.Equal(t, -chatCost(in, out), entries[0].AmountMicroCents)
}

// TestStreamConcurrentSmallBalance runs 32 streams at once against a
// balance that covers a few: each streams fully or gets 402, and the
// ledger adds up without going below zero.
func TestStreamConcurrentSmallBalance(t *testing.T) {
	fake, prov := fakeProvider(t, "fake", inferencetest.Config{CompletionTokens: 20, Chunks: 5, ChunkDelay: 10 * time.Millisecond})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "fake", false)}, prov)
	funds := 25 * billing.Cent
	a := e.newAgent(t, funds)

	type result struct {
		status int
		ctype  string
		body   string
		err    error
	}
	const n = 32
	results := make([]result, n)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.send(context.Background(), "POST", "/api/v1/chat/completions", a.key,
				chatBody("test/chat", "hi", true, "max_tokens", 20), nil)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results[i] = result{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: string(b), err: err}
		}()
	}
	close(start)
	wg.Wait()

	var ok, refused int
	var billed int64
	for _, r := range results {
		require.NoError(t, r.err)
		switch r.status {
		case 200:
			require.Equal(t, "text/event-stream", r.ctype)
			s := checkStream(t, r.body, "test/chat")
			require.Equal(t, inferencetest.Text(int(s.Usage.CompletionTokens)), s.Content, "streamed fully")
			require.Positive(t, s.Usage.CompletionTokens)
			require.LessOrEqual(t, s.Usage.CompletionTokens, int64(20))
			billed += chatCost(s.Usage.PromptTokens, s.Usage.CompletionTokens)
			ok++
		case 402:
			require.Equal(t, "application/json", r.ctype, "a plain HTTP error, not SSE")
			var eb struct {
				Error struct{ Message, Type string } `json:"error"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.body), &eb), r.body)
			require.Equal(t, inference.MsgInsufficientCredits, eb.Error.Message)
			require.Equal(t, "insufficient_credits", eb.Error.Type)
			refused++
		default:
			t.Fatalf("unexpected status %d: %s", r.status, r.body)
		}
	}
	t.Logf("%d streamed, %d refused", ok, refused)
	require.Equal(t, n, ok+refused)
	require.Positive(t, ok)
	require.Positive(t, refused, "the balance covers only a few")
	require.Equal(t, int64(ok), fake.Served(), "refused requests never reached the upstream")

	h := e.checkLedgerAddsUp(a)
	entries := chatEntries(h)
	require.Len(t, entries, ok)
	var sum int64
	for _, tx := range entries {
		sum -= tx.AmountMicroCents
	}
	require.Equal(t, billed, sum, "each stream billed its exact usage")
	require.Equal(t, int64(funds)-billed, int64(e.ledgerBalance(a.account).Total))
}

// TestChatDevModel runs the offline dev model alone, with curl-like raw
// requests and with go-openai.
func TestChatDevModel(t *testing.T) {
	e := newEnv(t, dev.Enable(perceptron.Config{}))
	dev := inference.DevModel()

	// Listed, with a price.
	st, list := e.call("GET", "/api/models", "", nil)
	require.Equal(t, 200, st)
	data := list["data"].([]any)
	require.Len(t, data, 2, "the dev chat model and the dev STT model")
	m := data[0].(map[string]any)
	require.Equal(t, "perceptron/dev", m["id"])
	stt := data[1].(map[string]any)
	require.Equal(t, "stt", stt["type"])
	require.Equal(t, 36.0, stt["pricing"].(map[string]any)["cents_per_hour"])
	require.Equal(t, inference.DevModelID, m["id"])
	require.Equal(t, map[string]any{"input_cents_per_1m": 100.0, "output_cents_per_1m": 200.0}, m["pricing"])
	require.Equal(t, float64(dev.ContextLength), m["context_length"])

	a := e.newAgent(t, billing.Dollar)
	// curl https://.../api/v1/chat/completions -H "Authorization: Bearer KEY" -H "Content-Type: application/json" -d '...'
	const plain = `{
    "model": "perceptron/dev",
    "messages": [
      {"role": "user", "content": "What is the capital of France?"}
    ],
    "stream": false
  }`
	r, body := e.raw("POST", "/api/v1/chat/completions", a.key, plain, nil)
	require.Equal(t, 200, r.StatusCode, body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	var resp struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message      struct{ Role, Content string } `json:"message"`
			FinishReason string                         `json:"finish_reason"`
		} `json:"choices"`
		Usage inference.Usage `json:"usage"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &resp))
	require.Equal(t, "perceptron/dev", resp.Model)
	require.Equal(t, "chat.completion", resp.Object)
	require.Equal(t, "assistant", resp.Choices[0].Message.Role)
	require.Contains(t, resp.Choices[0].Message.Content, "What is the capital of France?")
	require.Equal(t, "stop", resp.Choices[0].FinishReason)
	require.Positive(t, resp.Usage.PromptTokens)
	require.Positive(t, resp.Usage.CompletionTokens)

	const streamReq = `{"model":"perceptron/dev","messages":[{"role":"user","content":"What is the capital of France?"}],"stream":true}`
	r, body = e.raw("POST", "/api/chat/completions", a.key, streamReq, nil)
	require.Equal(t, 200, r.StatusCode, body)
	require.Equal(t, "text/event-stream", r.Header.Get("Content-Type"))
	s := checkStream(t, body, "perceptron/dev")
	require.Equal(t, resp.Choices[0].Message.Content, s.Content, "the dev model is deterministic")
	require.Equal(t, resp.Usage, s.Usage)
	require.Greater(t, s.Chunks, 2)

	// An OpenAI client library too.
	cr, err := e.openAI(a.key, "/api/v1").CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: inference.DevModelID, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "What is the capital of France?"}},
	})
	require.NoError(t, err)
	require.Equal(t, resp.Choices[0].Message.Content, cr.Choices[0].Message.Content)

	// Three charges at the dev model's price.
	entries := chatEntries(e.checkLedgerAddsUp(a))
	require.Len(t, entries, 3)
	for _, tx := range entries {
		model, in, out := parseChatDescription(t, tx.Description)
		require.Equal(t, inference.DevModelID, model)
		require.Equal(t, resp.Usage.PromptTokens, in)
		require.Equal(t, resp.Usage.CompletionTokens, out)
		require.Equal(t, -(in*dev.InputCentsPer1M + out*dev.OutputCentsPer1M), tx.AmountMicroCents)
	}
	e.expectError(400, "invalid model 'moonshotai/kimi-k2.6'. Available models: perceptron/dev", "POST", "/api/v1/chat/completions", a.key,
		chatBody("moonshotai/kimi-k2.6", "hi", false))
}

// TestStreamUpstreamFailsMidStream: an upstream that fails after the first
// chunks (the connection drops, or it sends an error event with code 502
// as OpenRouter does) ends the stream with an error event and [DONE], and
// only what was delivered is billed.
func TestStreamUpstreamFailsMidStream(t *testing.T) {
	_, drops := fakeProvider(t, "drops", inferencetest.Config{PromptTokens: 10, CompletionTokens: 8, Chunks: 4, BreakAfter: 2})
	_, errs := fakeProvider(t, "errs", inferencetest.Config{PromptTokens: 10, CompletionTokens: 8, Chunks: 4, ErrorEventAfter: 2})
	e := newChatEnv(t, []inference.Model{chatModel("test/drops", "drops", false), chatModel("test/errs", "errs", false)}, drops, errs)
	const unavailable = `data: {"error":{"message":"inference service unavailable","type":"service_unavailable"}}` + "\n\ndata: [DONE]\n\n"
	for _, model := range []string{"test/drops", "test/errs"} {
		t.Run(model, func(t *testing.T) {
			a := e.newAgent(t, billing.Dollar)
			r, body := e.raw("POST", "/api/v1/chat/completions", a.key, chatBody(model, "hi", true), nil)
			require.Equal(t, 200, r.StatusCode, body)
			events := sseEvents(t, body)
			require.Len(t, events, 3, "two chunks, then the error event")
			var delivered string
			for _, ev := range events[:2] {
				var c wireChunk
				require.NoError(t, json.Unmarshal([]byte(ev), &c), ev)
				delivered += c.Choices[0].Delta.Content
			}
			require.Equal(t, inferencetest.Text(4), delivered)

			entries := chatEntries(e.checkLedgerAddsUp(a))
			require.Len(t, entries, 1)
			_, in, out := parseChatDescription(t, entries[0].Description)
			require.Equal(t, int64(4), out, "what was delivered")
			require.Equal(t, -chatCost(in, out), entries[0].AmountMicroCents)

			// An upstream failure is "unavailable" (5xx): a dropped
			// connection, and an error event whose code is 502.
			require.True(t, strings.HasSuffix(body, unavailable), "body: %q", body)
		})
	}
}

// TestChatClientCancelsNonStreamed: a caller that gives up on a slow
// non-streamed completion cancels the upstream request and pays nothing.
func TestChatClientCancelsNonStreamed(t *testing.T) {
	fake, prov := fakeProvider(t, "slow", inferencetest.Config{Latency: 30 * time.Second})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "slow", false)}, prov)
	// Enough for max tokens: no tokenizer is needed to size the hold.
	a := e.newAgent(t, 10*billing.Dollar)

	// Give up once the upstream is working on it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for fake.Open() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := e.send(ctx, "POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "hi", false), nil)
	require.ErrorIs(t, err, context.Canceled)

	require.Eventually(t, func() bool { return fake.Canceled() == 1 && fake.Open() == 0 }, 5*time.Second, 5*time.Millisecond,
		"the upstream request is cancelled")
	require.Eventually(t, func() bool {
		b, err := e.p.Billing.Balance(context.Background(), a.account)
		return err == nil && b.Held == 0
	}, 5*time.Second, 5*time.Millisecond, "the hold is released")
	require.Empty(t, chatEntries(e.checkLedgerAddsUp(a)))
	require.Equal(t, billing.Balance{Total: 10 * billing.Dollar}, e.ledgerBalance(a.account))
}
