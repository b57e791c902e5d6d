package inference

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
)

// TestProviderReadsAsGoOpenAI sends the same upstream answers to the
// provider and to go-openai, an independent client of the protocol: where
// both accept an answer, they read the same text, tool calls, finish
// reasons and usage from it.
func TestProviderReadsAsGoOpenAI(t *testing.T) {
	var current string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, current)
	}))
	defer srv.Close()
	p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL + "/v1/", APIKey: "sk"})
	require.NoError(t, err)
	cfg := openai.DefaultConfig("sk")
	cfg.BaseURL = srv.URL + "/v1/"
	client := openai.NewClientWithConfig(cfg)
	both := 0
	for i, body := range upstreamCorpus {
		current = body
		got, gerr := p.complete(context.Background(), []byte(`{"model":"m"}`))
		r, werr := client.CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{Model: "m"})
		if gerr != nil || werr != nil {
			continue
		}
		both++
		name := strconv.Itoa(i) + " " + body
		require.Equal(t, r.ID, got.ID, name)
		require.Equal(t, r.Model, got.Model, name)
		require.Equal(t, r.Created, got.Created, name)
		require.Equal(t, int64(r.Usage.PromptTokens), got.Usage.PromptTokens, name)
		require.Equal(t, int64(r.Usage.CompletionTokens), got.Usage.CompletionTokens, name)
		require.Equal(t, int64(r.Usage.TotalTokens), got.Usage.TotalTokens, name)
		require.Len(t, got.Choices, len(r.Choices), name)
		for j, c := range r.Choices {
			g := got.Choices[j]
			content := c.Message.Content
			for _, part := range c.Message.MultiContent {
				content += part.Text
			}
			require.Equal(t, content, g.Message.Content, name)
			require.Equal(t, c.Message.ReasoningContent, g.Message.ReasoningContent, name)
			require.Equal(t, c.Index, g.Index, name)
			require.Len(t, g.Message.ToolCalls, len(c.Message.ToolCalls), name)
			for k, tc := range c.Message.ToolCalls {
				require.Equal(t, ToolCall{ID: tc.ID, Type: string(tc.Type), Function: FunctionCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments}}, g.Message.ToolCalls[k], name)
			}
			if c.FinishReason != "" && c.FinishReason != openai.FinishReasonNull {
				require.Equal(t, string(c.FinishReason), g.FinishReason, name)
			} else {
				require.Equal(t, FinishStop, g.FinishReason, name)
			}
		}
	}
	require.Greater(t, both, len(upstreamCorpus)/2, "answers both clients read")
}

// Refusals are UpstreamErrors with the error object's fields, and classify
// as the router needs: overloaded or broken upstreams are Unavailable (so
// the next route is tried), other refusals Upstream.
func TestProviderRefusals(t *testing.T) {
	type answer struct {
		status int
		ctype  string
		body   string
	}
	for _, c := range []struct {
		answer
		want UpstreamError
		code fault.Code
	}{
		{answer{400, "application/json", `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":"bad"}}`},
			UpstreamError{Status: 400, Message: "bad request", Type: "invalid_request_error", Code: "bad"}, fault.Upstream},
		{answer{401, "application/json", `{"error":{"message":["a","b"],"type":"auth","code":401}}`},
			UpstreamError{Status: 401, Message: "a, b", Type: "auth", Code: "401"}, fault.Upstream},
		{answer{404, "application/json", `{"error":"model 'x' not found"}`},
			UpstreamError{Status: 404, Message: "model 'x' not found"}, fault.Upstream},
		{answer{429, "application/json", `{"error":{"message":"slow down","code":"429","param":"model"}}`},
			UpstreamError{Status: 429, Message: "slow down", Code: "429", Param: "model"}, fault.Unavailable},
		{answer{500, "text/plain", `upstream exploded`},
			UpstreamError{Status: 500, Body: []byte("upstream exploded")}, fault.Unavailable},
		{answer{502, "application/json", `{"error":null}`},
			UpstreamError{Status: 502, Body: []byte(`{"error":null}`)}, fault.Unavailable},
		{answer{408, "application/json", ``},
			UpstreamError{Status: 408, Body: []byte{}}, fault.Unavailable},
		{answer{304, "application/json", ``},
			UpstreamError{Status: 304, Body: []byte{}}, fault.Upstream},
		{answer{413, "text/html", strings.Repeat("x", MaxErrorBodyBytes+10)},
			UpstreamError{Status: 413, Body: bytes.Repeat([]byte("x"), MaxErrorBodyBytes)}, fault.Upstream},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", c.ctype)
			w.WriteHeader(c.status)
			io.WriteString(w, c.body)
		}))
		p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL})
		require.NoError(t, err)
		for _, stream := range []bool{false, true} {
			var err error
			if stream {
				_, err = p.ChatCompletionStream(context.Background(), &ChatRequest{Model: "m"})
			} else {
				_, err = p.ChatCompletion(context.Background(), &ChatRequest{Model: "m"})
			}
			var ue *UpstreamError
			require.ErrorAs(t, err, &ue, "%d %s", c.status, c.body)
			if len(c.want.Body) == 0 {
				require.Empty(t, ue.Body)
				ue.Body = c.want.Body
			}
			require.Equal(t, c.want, *ue)
			require.Equal(t, c.code, fault.CodeOf(err), "%d %s", c.status, c.body)
		}
		srv.Close()
	}
}

// A success that is not a chat completion fails as Upstream, a cut
// connection as Unavailable, an answer over MaxAnswerBytes as Upstream
// without reading it all.
func TestProviderBadAnswers(t *testing.T) {
	var mode string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "json":
			io.WriteString(w, `{"id":"x","choices":[{"message":{"role":"assistant","content":"cut`)
		case "cut":
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, `{"id":"x",`)
		case "huge":
			chunk := bytes.Repeat([]byte(" "), 1<<20)
			for range MaxAnswerBytes>>20 + 2 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "created":
			io.WriteString(w, `{"id":"x","created":"soon"}`)
		}
	}))
	defer srv.Close()
	p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL})
	require.NoError(t, err)
	for m, code := range map[string]fault.Code{"json": fault.Upstream, "cut": fault.Unavailable, "huge": fault.Upstream, "created": fault.Upstream} {
		mode = m
		_, err := p.ChatCompletion(context.Background(), &ChatRequest{Model: "m"})
		require.Equal(t, code, fault.CodeOf(err), "%s: %v", m, err)
		if m == "huge" {
			require.ErrorIs(t, err, errAnswerTooLarge)
		}
	}
}

// TestProviderSends checks the provider's requests on the wire: URL,
// method, headers (extra ones override) and the body it wrote, for an
// answer and for a stream.
func TestProviderSends(t *testing.T) {
	type seen struct {
		method, path string
		header       http.Header
		body         []byte
	}
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Clone(), b})
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
			return
		}
		io.WriteString(w, upstreamCorpus[0])
	}))
	defer srv.Close()
	temp := 0.0
	req := &ChatRequest{Model: "m", Messages: []Message{{Role: "user", Content: "hi"}}, Temperature: &temp}
	for _, key := range []string{"sk-1", ""} {
		got = nil
		extra := http.Header{"X-Title": {"perceptron"}, "x-extra": {"a", "b"}}
		p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL + "/v1//", APIKey: key, Header: extra})
		require.NoError(t, err)
		_, err = p.ChatCompletion(context.Background(), req)
		require.NoError(t, err)
		s, err := p.ChatCompletionStream(context.Background(), req)
		require.NoError(t, err)
		for {
			if _, err := s.Recv(); err != nil {
				require.ErrorIs(t, err, io.EOF)
				break
			}
		}
		require.NoError(t, s.Close())
		require.Len(t, got, 2)
		for i, accept := range []string{"application/json", "text/event-stream"} {
			g := got[i]
			require.Equal(t, "POST", g.method)
			require.Equal(t, "/v1/chat/completions", g.path)
			require.Equal(t, accept, g.header.Get("Accept"))
			require.Equal(t, "application/json", g.header.Get("Content-Type"))
			require.Equal(t, "perceptron", g.header.Get("X-Title"))
			require.Equal(t, []string{"a", "b"}, g.header.Values("X-Extra"))
			if key != "" {
				require.Equal(t, "Bearer "+key, g.header.Get("Authorization"))
			} else {
				require.Empty(t, g.header.Values("Authorization"))
			}
			want := `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`
			if i == 1 {
				want = `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0}`
			}
			require.JSONEq(t, want, string(g.body))
		}
	}
	// Extra headers override the provider's own.
	got = nil
	p, err := NewOpenAIProvider(OpenAIConfig{Name: "p", BaseURL: srv.URL, APIKey: "k", Header: http.Header{"Accept": {"application/x-custom"}, "Authorization": {"Token t"}}})
	require.NoError(t, err)
	_, err = p.ChatCompletion(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, []string{"application/x-custom"}, got[0].header.Values("Accept"))
	require.Equal(t, []string{"Token t"}, got[0].header.Values("Authorization"))
}
