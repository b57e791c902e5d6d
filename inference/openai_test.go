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
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

func newProvider(t *testing.T, cfg inferencetest.Config) (*inference.OpenAIProvider, *inferencetest.Upstream) {
	t.Helper()
	fake := inferencetest.New(cfg)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: srv.URL + "/v1", APIKey: "sk-test"})
	require.NoError(t, err)
	return p, fake
}

func upstreamReq() *inference.ChatRequest {
	return &inference.ChatRequest{
		Model:       "fake-upstream",
		Messages:    []inference.Message{{Role: "user", Content: "one two three"}},
		Temperature: new(0.0), TopP: new(1.0), FrequencyPenalty: new(0.0),
		MaxTokens: 20, TopK: json.RawMessage(`40`), Stop: json.RawMessage(`"END"`), Seed: json.RawMessage(`7`),
	}
}

// drain reads a stream to its end.
func drain(t *testing.T, s inference.Stream) ([]*inference.ChatChunk, error) {
	t.Helper()
	var chunks []*inference.ChatChunk
	for {
		c, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return chunks, nil
			}
			return chunks, err
		}
		chunks = append(chunks, c)
	}
}

func TestOpenAIProviderJSON(t *testing.T) {
	p, fake := newProvider(t, inferencetest.Config{CompletionTokens: 5, PromptTokens: 11})
	resp, err := p.ChatCompletion(context.Background(), upstreamReq())
	require.NoError(t, err)
	require.Equal(t, inferencetest.Text(5), resp.Choices[0].Message.Content)
	require.Equal(t, "assistant", resp.Choices[0].Message.Role)
	require.Equal(t, "stop", resp.Choices[0].FinishReason)
	require.Equal(t, inference.Usage{PromptTokens: 11, CompletionTokens: 5, TotalTokens: 16}, resp.Usage)

	// The body is exactly ours: zero floats kept, top_k, raw stop and seed.
	r, _ := fake.LastRequest()
	require.Equal(t, "/v1/chat/completions", r.Path)
	require.Equal(t, "Bearer sk-test", r.Header.Get("Authorization"))
	require.JSONEq(t, `{"model":"fake-upstream","messages":[{"role":"user","content":"one two three"}],
		"temperature":0,"top_p":1,"frequency_penalty":0,"max_tokens":20,"top_k":40,"stop":"END","seed":7}`, string(r.Body))
}

func TestOpenAIProviderStream(t *testing.T) {
	p, fake := newProvider(t, inferencetest.Config{CompletionTokens: 12, Chunks: 3, PromptTokens: 9})
	s, err := p.ChatCompletionStream(context.Background(), upstreamReq())
	require.NoError(t, err)
	defer s.Close()
	chunks, err := drain(t, s)
	require.NoError(t, err)
	require.Len(t, chunks, 5, "3 content chunks, the finishing chunk, the usage chunk")
	var text strings.Builder
	for _, c := range chunks[:3] {
		require.Nil(t, c.Choices[0].FinishReason)
		text.WriteString(c.Choices[0].Delta.Content)
	}
	require.Equal(t, "assistant", chunks[0].Choices[0].Delta.Role)
	require.Equal(t, inferencetest.Text(12), text.String())
	require.Equal(t, "stop", *chunks[3].Choices[0].FinishReason)
	require.Empty(t, chunks[4].Choices)
	require.Equal(t, &inference.Usage{PromptTokens: 9, CompletionTokens: 12, TotalTokens: 21}, chunks[4].Usage)

	body := fake.Requests()[0].JSON()
	require.Equal(t, true, body["stream"])
	require.Equal(t, map[string]any{"include_usage": true}, body["stream_options"])
}

func TestOpenAIProviderToolCalls(t *testing.T) {
	p, _ := newProvider(t, inferencetest.Config{ToolCall: &inferencetest.ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}})
	resp, err := p.ChatCompletion(context.Background(), upstreamReq())
	require.NoError(t, err)
	require.Equal(t, "tool_calls", resp.Choices[0].FinishReason)
	require.Equal(t, []inference.ToolCall{{ID: "call_fake_1", Type: "function",
		Function: inference.FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}, resp.Choices[0].Message.ToolCalls)

	s, err := p.ChatCompletionStream(context.Background(), upstreamReq())
	require.NoError(t, err)
	defer s.Close()
	chunks, err := drain(t, s)
	require.NoError(t, err)
	first := chunks[0].Choices[0].Delta.ToolCalls[0]
	require.Equal(t, "call_fake_1", first.ID)
	require.Equal(t, "get_weather", first.Function.Name)
	require.Equal(t, `{"city":"Paris"}`, chunks[1].Choices[0].Delta.ToolCalls[0].Function.Arguments)
	require.Equal(t, "tool_calls", *chunks[2].Choices[0].FinishReason)
}

func TestOpenAIProviderErrors(t *testing.T) {
	cases := []struct {
		status int
		code   fault.Code
	}{
		{500, fault.Unavailable}, {502, fault.Unavailable}, {503, fault.Unavailable}, {429, fault.Unavailable},
		{400, fault.Upstream}, {401, fault.Upstream}, {404, fault.Upstream},
	}
	for _, tc := range cases {
		p, _ := newProvider(t, inferencetest.Config{Status: tc.status})
		_, err := p.ChatCompletion(context.Background(), upstreamReq())
		require.ErrorIs(t, err, tc.code, "status %d", tc.status)
		_, err = p.ChatCompletionStream(context.Background(), upstreamReq())
		require.ErrorIs(t, err, tc.code, "stream, status %d", tc.status)
		require.False(t, inference.AfterFirstByte(err))
	}
	p, _ := newProvider(t, inferencetest.Config{Status: 500})
	_, err := p.ChatCompletion(context.Background(), upstreamReq())
	require.Equal(t, "inference service unavailable", fault.MessageOf(err))
	p, _ = newProvider(t, inferencetest.Config{Status: 400})
	_, err = p.ChatCompletion(context.Background(), upstreamReq())
	require.Equal(t, "inference request failed", fault.MessageOf(err))
}

func TestOpenAIProviderConnectionRefusedAndTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "down", BaseURL: "http://" + addr + "/v1"})
	require.NoError(t, err)
	_, err = p.ChatCompletion(context.Background(), upstreamReq())
	require.ErrorIs(t, err, fault.Unavailable)
	_, err = p.ChatCompletionStream(context.Background(), upstreamReq())
	require.ErrorIs(t, err, fault.Unavailable)

	fake := inferencetest.New(inferencetest.Config{Latency: time.Second})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	p, err = inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "slow", BaseURL: srv.URL + "/v1", Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	_, err = p.ChatCompletion(context.Background(), upstreamReq())
	require.ErrorIs(t, err, fault.Unavailable)

	// The caller's own cancellation is not the provider's fault.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	p, err = inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "slow", BaseURL: srv.URL + "/v1"})
	require.NoError(t, err)
	_, err = p.ChatCompletion(ctx, upstreamReq())
	require.ErrorIs(t, err, fault.Canceled)
}

func TestOpenAIProviderBrokenStreams(t *testing.T) {
	for name, cfg := range map[string]inferencetest.Config{
		"connection dropped": {CompletionTokens: 8, Chunks: 4, BreakAfter: 2},
		"error event":        {CompletionTokens: 8, Chunks: 4, ErrorEventAfter: 2},
	} {
		t.Run(name, func(t *testing.T) {
			p, _ := newProvider(t, cfg)
			s, err := p.ChatCompletionStream(context.Background(), upstreamReq())
			require.NoError(t, err)
			defer s.Close()
			chunks, err := drain(t, s)
			require.Len(t, chunks, 2)
			require.Error(t, err)
			require.True(t, inference.AfterFirstByte(err), "%v", err)
			require.NotEqual(t, fault.Unknown, fault.CodeOf(err))
		})
	}
}

func TestOpenAIProviderWithoutUsage(t *testing.T) {
	p, _ := newProvider(t, inferencetest.Config{CompletionTokens: 3, NoUsage: true})
	resp, err := p.ChatCompletion(context.Background(), upstreamReq())
	require.NoError(t, err)
	require.Equal(t, inferencetest.Text(3), resp.Choices[0].Message.Content)
	require.Equal(t, inference.Usage{}, resp.Usage, "no usage: the service counts")
	require.Equal(t, "chatcmpl-fake", resp.ID)
	require.Equal(t, inference.ObjectCompletion, resp.Object)
}

func TestOpenAIProviderErrorMessage(t *testing.T) {
	p, _ := newProvider(t, inferencetest.Config{Status: 400, ErrorMessage: "bad <input>"})
	_, err := p.ChatCompletion(context.Background(), upstreamReq())
	var upErr *inference.UpstreamError
	require.ErrorAs(t, err, &upErr)
	require.Equal(t, 400, upErr.Status)
	require.Equal(t, "bad <input>", upErr.Message)
	require.Equal(t, "400", upErr.Code)
}

// Streams that end normally give their connection back: sequential
// streams and completions share one connection instead of dialing each.
func TestOpenAIProviderReusesConnections(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{})
	// The end of the body comes a little after [DONE], as it may over a
	// network: the stream must still wait for it before letting go.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake.ServeHTTP(w, r)
		if strings.Contains(r.Header.Get("Accept"), "event-stream") || w.Header().Get("Content-Type") == "text/event-stream" {
			http.NewResponseController(w).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	var mu sync.Mutex
	conns := 0
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: srv.URL + "/v1"})
	require.NoError(t, err)
	ctx := context.Background()
	for range 5 {
		s, err := p.ChatCompletionStream(ctx, upstreamReq())
		require.NoError(t, err)
		for {
			_, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
		}
		require.NoError(t, s.Close())
		_, err = p.ChatCompletion(ctx, upstreamReq())
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, conns, "connections the provider opened for 10 sequential calls")
}
