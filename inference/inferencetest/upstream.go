// Package inferencetest provides a fake OpenAI-compatible upstream for
// tests and benchmarks: an http.Handler that speaks the real wire format of
// POST /v1/chat/completions (JSON, and SSE with "data: ...\n\n" events and
// "data: [DONE]"), with configurable latency, output, usage, tool calls,
// errors and broken or slow streams, and that records the requests it got.
//
// It does not import the inference package, so that it checks the wire
// format independently of inference's own types.
package inferencetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets the fake's behaviour. The zero value answers every request
// with 8 tokens, in 4 chunks when streaming, with usage when asked for.
type Config struct {
	// Latency is waited before the response headers (time to first byte).
	Latency time.Duration
	// ChunkDelay is waited before each stream chunk after the first.
	ChunkDelay time.Duration
	// CompletionTokens is how many tokens an answer has; default 8. Each
	// token is one common English word, a single token in o200k_base. It
	// is capped by the request's max_completion_tokens or max_tokens
	// (finish_reason "length") unless IgnoreMaxTokens.
	CompletionTokens int
	// IgnoreMaxTokens makes the fake generate CompletionTokens whatever
	// the request's limit, like a misbehaving upstream.
	IgnoreMaxTokens bool
	// PromptTokens is the reported prompt usage; 0 means counted: one per
	// whitespace-separated word of the messages' contents, plus 3 per
	// message and 3 for the reply.
	PromptTokens int
	// Chunks is how many content chunks a stream has; default 4, at most
	// one per token. The first also carries the role.
	Chunks int
	// NoUsage omits usage from answers and streams.
	NoUsage bool
	// ToolCall, if set, makes the answer a call of this function.
	ToolCall *ToolCall
	// Status, if 400 or more, answers every request with this status and
	// an OpenAI error body carrying ErrorMessage.
	Status       int
	ErrorMessage string
	// BreakAfter, if positive, drops the connection after that many
	// stream chunks, without [DONE].
	BreakAfter int
	// ErrorEventAfter, if positive, sends an error event after that many
	// stream chunks and ends the stream without [DONE], as OpenRouter does
	// when a provider fails mid-stream.
	ErrorEventAfter int
	// APIKey, if set, is required as the bearer token (401 otherwise).
	APIKey string
	// NoRecord turns off request recording (for benchmarks).
	NoRecord bool
}

// ToolCall is the function call a fake answer makes.
type ToolCall struct {
	Name      string
	Arguments string
}

// Request is a request the fake received.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object (nil if it is not one).
func (r Request) JSON() map[string]any {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r.Body))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

// Upstream is the fake. It is safe for concurrent use; SetConfig may be
// called while it serves.
type Upstream struct {
	mu   sync.Mutex
	cfg  Config
	reqs []Request

	served   atomic.Int64
	canceled atomic.Int64
	open     atomic.Int64
}

// New returns a fake with cfg.
func New(cfg Config) *Upstream { return &Upstream{cfg: cfg} }

// SetConfig replaces the configuration for the next requests.
func (u *Upstream) SetConfig(cfg Config) {
	u.mu.Lock()
	u.cfg = cfg
	u.mu.Unlock()
}

// Config returns the current configuration.
func (u *Upstream) Config() Config {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cfg
}

// Requests returns the recorded chat completion requests, oldest first.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.reqs...)
}

// LastRequest returns the last recorded chat completion request.
func (u *Upstream) LastRequest() (Request, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return Request{}, false
	}
	return u.reqs[len(u.reqs)-1], true
}

// Served is the number of chat completion requests received.
func (u *Upstream) Served() int64 { return u.served.Load() }

// Canceled is the number of requests whose client went away before the
// answer was complete.
func (u *Upstream) Canceled() int64 { return u.canceled.Load() }

// Open is the number of requests being answered right now.
func (u *Upstream) Open() int64 { return u.open.Load() }

// vocabulary holds words that are one o200k_base token each.
const vocabulary = "the quick brown fox jumps over lazy dog and then runs far away from home again"

// Word returns the i-th token of every fake answer: "The", then the
// vocabulary's words in turn, each with its leading space.
func Word(i int) string {
	if i == 0 {
		return "The"
	}
	words := strings.Fields(vocabulary)
	return " " + words[i%len(words)]
}

// Text returns the text of a fake answer of n tokens.
func Text(n int) string {
	words := strings.Fields(vocabulary)
	var b strings.Builder
	for i := range n {
		if i == 0 {
			b.WriteString("The")
			continue
		}
		b.WriteString(" " + words[i%len(words)])
	}
	return b.String()
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream              bool            `json:"stream"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	StreamOptions       json.RawMessage `json:"stream_options"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type function struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type toolCall struct {
	Index    *int     `json:"index,omitempty"`
	ID       string   `json:"id,omitempty"`
	Type     string   `json:"type,omitempty"`
	Function function `json:"function"`
}

type message struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

type choice struct {
	Index        int      `json:"index"`
	Message      *message `json:"message,omitempty"`
	Delta        *message `json:"delta,omitempty"`
	FinishReason *string  `json:"finish_reason"`
}

type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

// ServeHTTP answers POST .../chat/completions and GET .../models.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models"):
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"fake-model","object":"model","created":0,"owned_by":"inferencetest"}]}`)
		return
	case r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions"):
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	u.served.Add(1)
	u.open.Add(1)
	defer u.open.Add(-1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "unreadable body")
		return
	}
	u.mu.Lock()
	cfg := u.cfg
	if !cfg.NoRecord {
		u.reqs = append(u.reqs, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	}
	u.mu.Unlock()

	if !wait(r.Context(), cfg.Latency) {
		u.canceled.Add(1)
		return
	}
	if cfg.APIKey != "" && r.Header.Get("Authorization") != "Bearer "+cfg.APIKey {
		writeError(w, http.StatusUnauthorized, "invalid api key")
		return
	}
	if cfg.Status >= 400 {
		msg := cfg.ErrorMessage
		if msg == "" {
			msg = http.StatusText(cfg.Status)
		}
		writeError(w, cfg.Status, msg)
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid request")
		return
	}

	tokens := cfg.CompletionTokens
	if tokens <= 0 {
		tokens = 8
	}
	finish := "stop"
	limit := req.MaxCompletionTokens
	if limit == nil {
		limit = req.MaxTokens
	}
	if limit != nil && *limit > 0 && *limit < tokens && !cfg.IgnoreMaxTokens {
		tokens, finish = *limit, "length"
	}
	if cfg.ToolCall != nil {
		finish = "tool_calls"
	}
	use := usage{PromptTokens: cfg.PromptTokens, CompletionTokens: tokens}
	if use.PromptTokens <= 0 {
		use.PromptTokens = 3
		for _, m := range req.Messages {
			var s string
			_ = json.Unmarshal(m.Content, &s)
			use.PromptTokens += 3 + len(strings.Fields(s))
		}
	}
	use.TotalTokens = use.PromptTokens + use.CompletionTokens
	base := completion{ID: "chatcmpl-fake", Created: time.Now().Unix(), Model: req.Model}

	if !req.Stream {
		base.Object = "chat.completion"
		msg := &message{Role: "assistant"}
		if cfg.ToolCall != nil {
			msg.ToolCalls = []toolCall{{ID: "call_fake_1", Type: "function", Function: function{Name: cfg.ToolCall.Name, Arguments: cfg.ToolCall.Arguments}}}
		} else {
			text := Text(tokens)
			msg.Content = &text
		}
		base.Choices = []choice{{Message: msg, FinishReason: &finish}}
		if !cfg.NoUsage {
			base.Usage = &use
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(base)
		return
	}

	base.Object = "chat.completion.chunk"
	var events []completion
	chunk := func(d *message, fr *string) completion {
		c := base
		c.Choices = []choice{{Delta: d, FinishReason: fr}}
		return c
	}
	if cfg.ToolCall != nil {
		zero := 0
		events = append(events,
			chunk(&message{Role: "assistant", ToolCalls: []toolCall{{Index: &zero, ID: "call_fake_1", Type: "function", Function: function{Name: cfg.ToolCall.Name}}}}, nil),
			chunk(&message{ToolCalls: []toolCall{{Index: &zero, Function: function{Arguments: cfg.ToolCall.Arguments}}}}, nil))
	} else {
		n := cfg.Chunks
		if n <= 0 {
			n = 4
		}
		n = max(min(n, tokens), 1)
		for k := range n {
			text := Text((k + 1) * tokens / n)[len(Text(k*tokens/n)):]
			d := &message{Content: &text}
			if k == 0 {
				d.Role = "assistant"
			}
			events = append(events, chunk(d, nil))
		}
	}
	events = append(events, chunk(&message{}, &finish))
	if !cfg.NoUsage && bytes.Contains(req.StreamOptions, []byte(`"include_usage":true`)) {
		c := base
		c.Choices = []choice{}
		c.Usage = &use
		events = append(events, c)
	}

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	for i, ev := range events {
		if cfg.BreakAfter > 0 && i == cfg.BreakAfter {
			panic(http.ErrAbortHandler) // drops the connection
		}
		if cfg.ErrorEventAfter > 0 && i == cfg.ErrorEventAfter {
			_, _ = io.WriteString(w, `data: {"error":{"message":"provider failed mid-stream","type":"server_error","code":502}}`+"\n\n")
			if flusher != nil {
				flusher.Flush()
			}
			return
		}
		if i > 0 && !wait(r.Context(), cfg.ChunkDelay) {
			u.canceled.Add(1)
			return
		}
		b, _ := json.Marshal(ev)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			u.canceled.Add(1)
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

// wait sleeps d unless ctx ends first; it reports whether it slept.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": "fake_error", "code": status}})
	_, _ = w.Write(b)
}
