package inferencetest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

func client(t *testing.T, fake *inferencetest.Upstream) *openai.Client {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg := openai.DefaultConfig("sk-test")
	cfg.BaseURL = srv.URL + "/v1"
	return openai.NewClientWithConfig(cfg)
}

// The fake speaks the wire format go-openai, an independent client, reads.
func TestFakeSpeaksOpenAI(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{CompletionTokens: 6, Chunks: 3, PromptTokens: 5})
	c := client(t, fake)
	req := openai.ChatCompletionRequest{Model: "m", MaxTokens: 4, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}}
	resp, err := c.CreateChatCompletion(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, inferencetest.Text(4), resp.Choices[0].Message.Content)
	require.Equal(t, openai.FinishReasonLength, resp.Choices[0].FinishReason)
	require.Equal(t, 4, resp.Usage.CompletionTokens)
	require.Equal(t, 5, resp.Usage.PromptTokens)

	req.MaxTokens = 0
	req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	s, err := c.CreateChatCompletionStream(context.Background(), req)
	require.NoError(t, err)
	defer s.Close()
	var text string
	var usage *openai.Usage
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		for _, ch := range chunk.Choices {
			text += ch.Delta.Content
		}
		if chunk.Usage != nil {
			usage = chunk.Usage
		}
	}
	require.Equal(t, inferencetest.Text(6), text)
	require.Equal(t, 6, usage.CompletionTokens)
	require.Len(t, fake.Requests(), 2)
	require.Equal(t, true, fake.Requests()[1].JSON()["stream"])
}

func TestFakeErrors(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{Status: http.StatusTooManyRequests, ErrorMessage: "slow down"})
	_, err := client(t, fake).CreateChatCompletion(context.Background(),
		openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}})
	var apiErr *openai.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusTooManyRequests, apiErr.HTTPStatusCode)
	require.Equal(t, "slow down", apiErr.Message)

	fake = inferencetest.New(inferencetest.Config{APIKey: "other"})
	_, err = client(t, fake).CreateChatCompletion(context.Background(),
		openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}})
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.HTTPStatusCode)
}
