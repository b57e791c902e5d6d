package inference

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"
)

// readAllSSE reads events until an error, as "data" or "error: ..." lines.
func readAllSSE(next func() ([]byte, error)) []string {
	var out []string
	for range 1000 {
		b, err := next()
		if err != nil {
			out = append(out, "error: "+err.Error())
			return out
		}
		out = append(out, "data "+string(b))
	}
	return append(out, "too many")
}

// goOpenAIEvents reads body with go-openai's own stream reader.
func goOpenAIEvents(t *testing.T, body string) []string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	cfg := openai.DefaultConfig("k")
	cfg.BaseURL = srv.URL
	s, err := openai.NewClientWithConfig(cfg).CreateChatCompletionStream(context.Background(), openai.ChatCompletionRequest{Model: "m"})
	require.NoError(t, err)
	defer s.Close()
	return readAllSSE(s.RecvRaw)
}

var sseCases = []string{
	"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n",
	"data:{\"a\":1}\n\ndata:\t {\"b\":2}\r\n\r\ndata:[DONE]\n",
	": keep-alive comment\n\nevent: message\ndata: {\"a\":1}\n\n",
	"data: {\"a\":1}\n\n", // ends without [DONE]
	"data: {\"a\":1}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":502}}\n\n",
	"data: {\"error\":{\"message\":\"first\",\"code\":\"rate_limit\"}}\n\ndata: [DONE]\n\n",
	"data: {\"error\": {\"message\":\"spaced\"}}\n\n", // not the error prefix go-openai looks for
	"event: error\ndata: {\"error\":{\"message\":\"x\"}}\n",
	"data: {\"a\":1}\ndata: {\"a\":2}\ndata: [DONE]",
	"data: [DONE] \n\n",
	"data: {\"error\":{}}\n\n",
	"data: {\"error\":{\"message\":\"cut",
	strings.Repeat("\n", 400) + "data: {\"a\":1}\n\n",
	strings.Repeat(": c\n", 301) + "data: {\"a\":1}\n\n",
	"",
	"garbage without newline",
}

// The provider's event reader returns what go-openai's own reader does,
// event by event and error by error.
func TestSSEReaderMatchesGoOpenAI(t *testing.T) {
	for i, body := range sseCases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			r := &sseReader{br: bufio.NewReader(strings.NewReader(body)), emptyLimit: openai.DefaultConfig("").EmptyMessagesLimit}
			require.Equal(t, goOpenAIEvents(t, body), readAllSSE(r.next), "body %q", body)
		})
	}
}

// Errors keep their types: an API error in the stream is an *openai.APIError.
func TestSSEReaderErrorTypes(t *testing.T) {
	r := &sseReader{br: bufio.NewReader(strings.NewReader(sseCases[4])), emptyLimit: 300}
	_, err := r.next()
	require.NoError(t, err)
	_, err = r.next()
	var apiErr *openai.APIError
	require.True(t, errors.As(err, &apiErr), "%v", err)
	require.Equal(t, "boom", apiErr.Message)
	r = &sseReader{br: bufio.NewReader(strings.NewReader(sseCases[13])), emptyLimit: 300}
	_, err = r.next()
	require.ErrorIs(t, err, openai.ErrTooManyEmptyStreamMessages)
}

func FuzzSSEReader(f *testing.F) {
	for _, c := range sseCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := &sseReader{br: bufio.NewReader(strings.NewReader(body)), emptyLimit: 300}
		got := readAllSSE(r.next)
		require.Equal(t, goOpenAIEvents(t, body), got, "body %q", body)
	})
}

// buffered is true only when a whole data line is waiting, so a writer
// that holds back its flush never waits on the upstream with data unsent.
func TestSSEReaderBuffered(t *testing.T) {
	for body, want := range map[string]bool{
		"":                       false,
		"data: {\"a\":1":         false, // half a line
		": comment\n\n":          false,
		": comment\ndata: {}\n":  true,
		"\ndata: {}\n":           true,
		"event: x\ndata: {\"a\"": false,
		"data: [DONE]\n":         true,
		"data:{}\r\n":            true,
	} {
		r := &sseReader{br: bufio.NewReader(strings.NewReader(body)), emptyLimit: 300}
		_, _ = r.br.Peek(1) // fill the buffer, as a read would
		require.Equal(t, want, r.buffered(), "%q", body)
	}
}
