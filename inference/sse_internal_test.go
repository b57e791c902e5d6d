package inference

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
			if errors.Is(err, io.EOF) {
				return append(out, "EOF")
			}
			return append(out, "error: "+err.Error())
		}
		out = append(out, "data "+string(b))
	}
	return append(out, "too many")
}

func newSSE(body string) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(strings.NewReader(body), 16)}
}

var sseCases = []struct {
	body string
	want []string
}{
	{"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n", []string{`data {"a":1}`, `data {"b":2}`, "EOF"}},
	{"data:{\"a\":1}\n\ndata:\t {\"b\":2}\r\n\r\ndata:[DONE]\n", []string{`data {"a":1}`, `data {"b":2}`, "EOF"}},
	{": keep-alive comment\n\nevent: message\nid: 4\nretry: 10\ndata: {\"a\":1}\n\n", []string{`data {"a":1}`, "EOF"}},
	{"data: {\"a\":1}\n\n", []string{`data {"a":1}`, "EOF"}}, // ends without [DONE]
	{"data: {\"a\":1}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":502}}\n\n",
		[]string{`data {"a":1}`, "error: upstream stream error code 502: boom"}},
	{"data: {\"error\":{\"message\":\"first\",\"code\":\"rate_limit\"}}\n\ndata: [DONE]\n\n", []string{"error: upstream stream error code rate_limit: first"}},
	{"data: {\"error\": {\"message\":\"spaced\"}}\n\n", []string{"error: upstream stream error: spaced"}},
	{"event: error\ndata: {\"error\":\"plain\"}\n", []string{"error: upstream stream error: plain"}},
	{"data: {\"a\":1}\ndata: {\"a\":2}\ndata: [DONE]", []string{`data {"a":1}`, `data {"a":2}`, "EOF"}},
	{"data: [DONE] \n\n", []string{"EOF"}},
	{"data: {\"error\":{}}\n\n", []string{"error: upstream stream error"}},
	{"data: {\"error\":{\"message\":\"cut", []string{`data {"error":{"message":"cut`, "EOF"}}, // a chunk that will not decode
	{strings.Repeat("\n", 400) + "data: {\"a\":1}\n\n", []string{`data {"a":1}`, "EOF"}},
	{strings.Repeat(": c\n", MaxSkippedLines+1) + "data: {\"a\":1}\n\n", []string{"error: " + errSSESkipped.Error()}},
	{"", []string{"EOF"}},
	{"garbage without newline", []string{"EOF"}},
	// A JSON error with a success status, on one line or several.
	{"{\"error\":{\"message\":\"no stream for you\",\"code\":\"x\"}}", []string{"error: upstream stream error code x: no stream for you"}},
	{"{\n  \"error\": {\n    \"message\": \"pretty\"\n  }\n}\n", []string{"error: upstream stream error: pretty"}},
	// Lines longer than the reader's buffer.
	{"data: " + strings.Repeat("x", 100) + "\r\n\r\n", []string{"data " + strings.Repeat("x", 100), "EOF"}},
	{"data: " + strings.Repeat("y", 100), []string{"data " + strings.Repeat("y", 100), "EOF"}},
	{"data: a\rb\n", []string{"data a\rb", "EOF"}},
}

func TestSSEReader(t *testing.T) {
	for i, c := range sseCases {
		require.Equal(t, c.want, readAllSSE(newSSE(c.body).next), "case %d: %q", i, c.body)
	}
}

// go-openai's stream reader, an independent reader of the protocol,
// reads the same events from every well-formed stream.
func TestSSEReaderAgreesWithGoOpenAI(t *testing.T) {
	for i, c := range sseCases[:4] {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, c.body)
		}))
		cfg := openai.DefaultConfig("k")
		cfg.BaseURL = srv.URL
		s, err := openai.NewClientWithConfig(cfg).CreateChatCompletionStream(context.Background(), openai.ChatCompletionRequest{Model: "m"})
		require.NoError(t, err)
		require.Equal(t, readAllSSE(s.RecvRaw), readAllSSE(newSSE(c.body).next), "case %d", i)
		s.Close()
		srv.Close()
	}
}

// A line longer than MaxEventBytes fails the stream without being held.
func TestSSEReaderBoundsLines(t *testing.T) {
	r := &sseReader{br: bufio.NewReader(io.MultiReader(strings.NewReader("data: "), endless('x')))}
	_, err := r.next()
	require.ErrorIs(t, err, errSSEOverlong)
	require.LessOrEqual(t, cap(r.line), 2*MaxEventBytes)
}

type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// An error object in a stream is an *UpstreamError.
func TestSSEReaderErrorTypes(t *testing.T) {
	r := newSSE(sseCases[4].body)
	_, err := r.next()
	require.NoError(t, err)
	_, err = r.next()
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, UpstreamError{Message: "boom", Type: "server_error", Code: "502"}, *ue)
	require.Equal(t, 502, ue.httpStatus())
}

func FuzzSSEReader(f *testing.F) {
	for _, c := range sseCases {
		f.Add(c.body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		// Whatever the body, the reader ends, and reads the same
		// events whatever its buffer size.
		small := readAllSSE(newSSE(body).next)
		big := readAllSSE((&sseReader{br: bufio.NewReaderSize(strings.NewReader(body), 4096)}).next)
		require.Equal(t, big, small)
		require.NotEqual(t, "too many", small[len(small)-1], fmt.Sprintf("%q", body))
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
		r := &sseReader{br: bufio.NewReader(strings.NewReader(body))}
		_, _ = r.br.Peek(1) // fill the buffer, as a read would
		require.Equal(t, want, r.buffered(), "%q", body)
	}
}
