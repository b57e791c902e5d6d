package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Public messages of inference failures, as the API reference words them.
const (
	// MsgUnavailable is the message of fault.Unavailable (HTTP 502).
	MsgUnavailable = "inference service unavailable"
	// MsgFailed is the message of fault.Upstream (HTTP 500).
	MsgFailed = "inference request failed"
	// MsgCanceled is the message of fault.Canceled.
	MsgCanceled = "request canceled"
)

// DefaultUpstreamTimeout bounds one upstream call when
// [OpenAIConfig.Timeout] is zero.
const DefaultUpstreamTimeout = 10 * time.Minute

// OpenAIConfig configures an [OpenAIProvider].
type OpenAIConfig struct {
	// Name identifies the provider in catalog routes; required.
	Name string
	// BaseURL is the API root that /chat/completions is appended to, e.g.
	// https://api.openai.com/v1, https://openrouter.ai/api/v1,
	// http://localhost:8000/v1 (vLLM), http://localhost:8080/v1
	// (llama.cpp server) or http://localhost:11434/v1 (Ollama). Required.
	BaseURL string
	// APIKey is sent as a bearer token when not empty.
	APIKey string
	// Timeout bounds a whole upstream call, a stream included; zero means
	// [DefaultUpstreamTimeout]. The router's first-byte timeout is
	// separate and usually much shorter.
	Timeout time.Duration
	// HTTPClient sends the requests. Nil means a client with a connection
	// pool sized for a gateway (the default transport keeps only 2 idle
	// connections per host).
	HTTPClient *http.Client
	// Header holds extra headers for every request, e.g. OpenRouter's
	// HTTP-Referer and X-Title.
	Header http.Header
}

// OpenAIProvider is a [ModelProvider] for any OpenAI-compatible chat
// completions API, built on github.com/sashabaranov/go-openai. It is safe
// for concurrent use.
//
// go-openai's request struct cannot express every request we forward: its
// float fields are omitempty (an explicit temperature 0 would vanish), it
// has no top_k, and it types stop, seed and n narrower than the API does.
// So the provider marshals the [ChatRequest] itself and hands go-openai a
// one-request HTTP client (an openai.HTTPDoer set in the client's config)
// that sends exactly those bytes as the body. go-openai still builds the
// URL and the auth headers, decodes responses and API errors, and parses
// the SSE stream.
type OpenAIProvider struct {
	name    string
	config  openai.ClientConfig
	doer    *http.Client
	timeout time.Duration
	header  http.Header
}

// NewOpenAIProvider returns a provider for cfg.
func NewOpenAIProvider(cfg OpenAIConfig) (*OpenAIProvider, error) {
	if cfg.Name == "" {
		return nil, errors.New("inference: OpenAIConfig.Name is required")
	}
	if u, err := url.Parse(cfg.BaseURL); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("inference: provider %s: BaseURL %q is not an absolute URL", cfg.Name, cfg.BaseURL)
	}
	p := &OpenAIProvider{
		name:    cfg.Name,
		config:  openai.DefaultConfig(cfg.APIKey),
		doer:    cfg.HTTPClient,
		timeout: cfg.Timeout,
		header:  cfg.Header.Clone(),
	}
	p.config.BaseURL = cfg.BaseURL
	if p.doer == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 256
		p.doer = &http.Client{Transport: t}
	}
	if p.timeout <= 0 {
		p.timeout = DefaultUpstreamTimeout
	}
	return p, nil
}

// Name returns the configured name.
func (p *OpenAIProvider) Name() string { return p.name }

// exactBody is the openai.HTTPDoer of one request: it replaces the body
// go-openai marshaled with ours.
type exactBody struct {
	next   *http.Client
	body   []byte
	header http.Header
}

func (d *exactBody) Do(req *http.Request) (*http.Response, error) {
	req.Body = io.NopCloser(bytes.NewReader(d.body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d.body)), nil }
	req.ContentLength = int64(len(d.body))
	for k, v := range d.header {
		req.Header[k] = v
	}
	return d.next.Do(req)
}

// client returns a go-openai client that sends body.
func (p *OpenAIProvider) client(body []byte) *openai.Client {
	cfg := p.config
	cfg.HTTPClient = &exactBody{next: p.doer, body: body, header: p.header}
	return openai.NewClientWithConfig(cfg)
}

var errUpstreamTimeout = errors.New("upstream timeout")

// ChatCompletion sends req and returns the whole answer.
func (p *OpenAIProvider) ChatCompletion(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	up := *req
	up.Stream = false
	up.StreamOptions = nil
	body, err := json.Marshal(&up)
	if err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	cctx, cancel := context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
	defer cancel()
	resp, err := p.client(body).CreateChatCompletion(cctx, openai.ChatCompletionRequest{Model: req.Model})
	if err != nil {
		return nil, classify(ctx, cctx, err)
	}
	return fromOpenAI(&resp), nil
}

// ChatCompletionStream sends req with stream: true and
// stream_options.include_usage: true.
func (p *OpenAIProvider) ChatCompletionStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	up := *req
	up.Stream = true
	up.StreamOptions = &StreamOptions{IncludeUsage: true}
	body, err := json.Marshal(&up)
	if err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	cctx, cancel := context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
	s, err := p.client(body).CreateChatCompletionStream(cctx, openai.ChatCompletionRequest{Model: req.Model})
	if err != nil {
		err = classify(ctx, cctx, err)
		cancel()
		return nil, err
	}
	return &openAIStream{provider: p.name, parent: ctx, ctx: cctx, cancel: cancel, s: s}, nil
}

type openAIStream struct {
	provider string
	parent   context.Context
	ctx      context.Context
	cancel   context.CancelFunc
	s        *openai.ChatCompletionStream

	chunks   int  // chunks returned
	finished bool // a finish_reason or a usage chunk was seen

	closeOnce sync.Once
}

func (st *openAIStream) Recv() (*ChatChunk, error) {
	raw, err := st.s.RecvRaw()
	if err != nil {
		switch {
		case errors.Is(err, io.EOF) && st.finished:
			return nil, io.EOF
		case errors.Is(err, io.EOF) && st.ctx.Err() == nil:
			// The body ended, or [DONE] came, before the answer finished.
			err = fault.Wrap(io.ErrUnexpectedEOF, fault.Unavailable, MsgUnavailable)
		default:
			err = classify(st.parent, st.ctx, err)
		}
		return nil, st.fail(err)
	}
	c := new(ChatChunk)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, st.fail(fault.Wrap(err, fault.Upstream, MsgFailed))
	}
	for _, ch := range c.Choices {
		if ch.FinishReason != nil {
			st.finished = true
		}
	}
	if c.Usage != nil && len(c.Choices) == 0 {
		st.finished = true
	}
	st.chunks++
	return c, nil
}

func (st *openAIStream) fail(err error) error {
	if st.chunks > 0 {
		return midStream(st.provider, err)
	}
	return err
}

func (st *openAIStream) Close() error {
	st.closeOnce.Do(func() {
		st.cancel()
		_ = st.s.Close()
	})
	return nil
}

// classify maps an upstream failure to a fault code: unreachable, slow,
// overloaded (5xx, 429, 408) or broken is fault.Unavailable; any other
// refusal (4xx, malformed answers) is fault.Upstream; the caller's own
// cancellation is fault.Canceled. parent is the caller's context, ctx the
// one bounded by the provider's timeout.
func classify(parent, ctx context.Context, err error) error {
	if fault.CodeOf(err) != fault.Unknown && fault.CodeOf(err) != fault.Canceled {
		return err
	}
	if parent.Err() != nil {
		return fault.Wrap(context.Cause(parent), fault.Canceled, MsgCanceled)
	}
	if ctx.Err() != nil {
		return fault.Wrap(context.Cause(ctx), fault.Unavailable, MsgUnavailable)
	}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status := 0
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
		if status == 0 {
			// An error event inside a stream: its code, when numeric,
			// is an HTTP status (OpenRouter's convention).
			status = numericCode(apiErr.Code)
		}
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	}
	if status != 0 {
		if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
			return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
		}
		return fault.Wrap(err, fault.Upstream, MsgFailed)
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded) {
		return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
	}
	return fault.Wrap(err, fault.Upstream, MsgFailed)
}

func numericCode(code any) int {
	switch c := code.(type) {
	case int: // go-openai's APIError decodes numeric codes as int
		return c
	case float64:
		return int(c)
	case string:
		n, _ := strconv.Atoi(c)
		return n
	}
	return 0
}

// fromOpenAI converts go-openai's decoded answer.
func fromOpenAI(r *openai.ChatCompletionResponse) *ChatResponse {
	out := &ChatResponse{
		ID:      r.ID,
		Object:  ObjectCompletion,
		Created: r.Created,
		Model:   r.Model,
		Choices: make([]Choice, len(r.Choices)),
		Usage: Usage{
			PromptTokens:     int64(r.Usage.PromptTokens),
			CompletionTokens: int64(r.Usage.CompletionTokens),
			TotalTokens:      int64(r.Usage.TotalTokens),
		},
	}
	for i, c := range r.Choices {
		m := Message{
			Role:             c.Message.Role,
			Content:          c.Message.Content,
			Name:             c.Message.Name,
			ToolCallID:       c.Message.ToolCallID,
			ReasoningContent: c.Message.ReasoningContent,
		}
		if m.Content == "" && len(c.Message.MultiContent) > 0 {
			for _, p := range c.Message.MultiContent {
				m.Content += p.Text
			}
		}
		for _, tc := range c.Message.ToolCalls {
			m.ToolCalls = append(m.ToolCalls, ToolCall{
				ID:       tc.ID,
				Type:     string(tc.Type),
				Function: FunctionCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments},
			})
		}
		fr := string(c.FinishReason)
		if fr == "" || fr == string(openai.FinishReasonNull) {
			fr = FinishStop
		}
		out.Choices[i] = Choice{Index: c.Index, Message: m, FinishReason: fr}
	}
	return out
}
