package inference

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
// completions API. It is safe for concurrent use.
//
// It is a small client of the documented wire protocol, not a wrapper of
// an SDK: go-openai's request struct cannot carry every request the
// gateway forwards (its float fields are omitempty, so an explicit
// temperature 0 would vanish; it has no top_k; it types stop, seed and n
// narrower than the API does), and going through its types cost about 40%
// of the gateway's CPU per request (BENCHMARKS.md). go-openai stays in the
// tests as an independent client of the same protocol (of the fake
// upstream in inferencetest, and of the platform's own HTTP API).
//
// What it sends and reads:
//   - POST BaseURL (trailing slashes trimmed) + "/chat/completions", the
//     body written from the [ChatRequest] with the bytes encoding/json
//     would write, "Content-Type: application/json", "Authorization:
//     Bearer <APIKey>" when a key is set, "Accept: application/json" (or
//     "text/event-stream" for a stream), then the configured extra
//     headers, which override;
//   - a status outside 2xx is an [*UpstreamError], with the OpenAI error
//     object's fields when the body is one (at most [MaxErrorBodyBytes] of
//     it are read);
//   - a non-streamed answer (at most [MaxAnswerBytes]) is decoded into a
//     [ChatResponse] by a fast decoder, or, for any answer it is not sure
//     of, by encoding/json into the documented chat.completion object (a
//     test compares the two on a corpus and under fuzzing);
//   - a stream is read as server-sent events: each "data:" line is a
//     chunk, "data: [DONE]" ends it, comments and other fields are
//     skipped (at most [MaxSkippedLines] between two events), a data line
//     holding an error object is an [*UpstreamError], and a line longer
//     than [MaxEventBytes] fails the stream. After a normal end, Close
//     reads the rest of the body (bounded) so the connection is reused.
//
// The reader knows when the next event is already buffered
// ([OpenAIProvider] streams have a Buffered method), so the HTTP handler
// writes events that arrived together in one write and one flush.
type OpenAIProvider struct {
	name    string
	url     string // the chat completions URL
	doer    *http.Client
	timeout time.Duration
	// answer and stream hold the headers of a non-streamed request and of
	// a stream, extra headers included; each request gets a copy of the
	// map (the values are shared and never modified).
	answer, stream http.Header
	// bufs holds buffers for reading answers (*bytes.Buffer).
	bufs sync.Pool
}

var _ ModelProvider = (*OpenAIProvider)(nil)

// Limits of what the provider reads from an upstream.
const (
	// MaxAnswerBytes bounds a non-streamed answer's body.
	MaxAnswerBytes = 32 << 20
	// MaxErrorBodyBytes bounds what is read of a refusal's body.
	MaxErrorBodyBytes = 64 << 10
	// MaxEventBytes bounds one line of a stream.
	MaxEventBytes = 8 << 20
	// MaxSkippedLines bounds the lines that are not events (comments,
	// blank lines, other fields) between two events of a stream.
	MaxSkippedLines = 1000
)

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
		url:     strings.TrimRight(cfg.BaseURL, "/") + chatCompletionsPath,
		doer:    cfg.HTTPClient,
		timeout: cfg.Timeout,
	}
	if p.doer == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 256
		p.doer = &http.Client{Transport: t}
	}
	if p.timeout <= 0 {
		p.timeout = DefaultUpstreamTimeout
	}
	headers := func(accept string) http.Header {
		h := http.Header{}
		if cfg.APIKey != "" {
			h["Authorization"] = []string{"Bearer " + cfg.APIKey}
		}
		h["Accept"] = []string{accept}
		h["Content-Type"] = []string{"application/json"}
		for k, v := range cfg.Header {
			v = slices.Clone(v)
			h[http.CanonicalHeaderKey(k)] = v[:len(v):len(v)]
		}
		return h
	}
	p.answer = headers("application/json")
	p.stream = headers("text/event-stream")
	return p, nil
}

// chatCompletionsPath is appended to the base URL.
const chatCompletionsPath = "/chat/completions"

// Name returns the configured name.
func (p *OpenAIProvider) Name() string { return p.name }

// UpstreamError is an upstream's refusal: a status outside 2xx, or an
// error object inside a stream (Status 0). Message, Type, Param and Code
// are the OpenAI error object's fields when the upstream sent one (Code
// as text: OpenAI sends strings, OpenRouter numbers); Body is the start of
// the body otherwise. Providers' errors wrap it, so callers find it with
// errors.As.
type UpstreamError struct {
	Status  int // the HTTP status, 0 for an error event of a stream
	Message string
	Type    string
	Param   string
	Code    string
	Body    []byte // at most MaxErrorBodyBytes, when no error object was found
}

func (e *UpstreamError) Error() string {
	var b strings.Builder
	b.WriteString("upstream")
	if e.Status != 0 {
		b.WriteString(" status ")
		b.WriteString(strconv.Itoa(e.Status))
	} else {
		b.WriteString(" stream error")
	}
	if e.Code != "" {
		b.WriteString(" code ")
		b.WriteString(e.Code)
	}
	switch {
	case e.Message != "":
		b.WriteString(": ")
		b.WriteString(e.Message)
	case len(e.Body) > 0:
		b.WriteString(": ")
		b.WriteString(strconv.Quote(string(e.Body[:min(len(e.Body), 200)])))
	}
	return b.String()
}

// httpStatus is the status the error stands for: the HTTP status, or for
// an error event a numeric code (OpenRouter's convention).
func (e *UpstreamError) httpStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	n, _ := strconv.Atoi(e.Code)
	return n
}

// errorObject is the OpenAI error shape, {"error": {...}}, with the
// variants servers send: a message that is a list, a numeric code, or an
// error that is only a string (Ollama, some proxies).
type errorObject struct {
	Error json.RawMessage `json:"error"`
}

type errorFields struct {
	Message json.RawMessage `json:"message"`
	Type    string          `json:"type"`
	Param   json.RawMessage `json:"param"`
	Code    json.RawMessage `json:"code"`
}

// parseError fills e from body when it holds an OpenAI error object, and
// reports whether it did.
func (e *UpstreamError) parse(body []byte) bool {
	var o errorObject
	if json.Unmarshal(body, &o) != nil || len(o.Error) == 0 || string(o.Error) == "null" {
		return false
	}
	var s string
	if json.Unmarshal(o.Error, &s) == nil {
		e.Message = s
		return true
	}
	var f errorFields
	if json.Unmarshal(o.Error, &f) != nil {
		return false
	}
	e.Message, e.Type, e.Param, e.Code = jsonText(f.Message), f.Type, jsonText(f.Param), jsonText(f.Code)
	return true
}

// jsonText renders a JSON value as text: a string as itself, a list of
// strings joined by ", ", null as "", anything else as its JSON.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, ", ")
	}
	return string(raw)
}

// refusal reads a refused request's answer.
func refusal(res *http.Response) error {
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxErrorBodyBytes))
	e := &UpstreamError{Status: res.StatusCode}
	if !e.parse(body) {
		e.Body = body
	}
	if err != nil && len(body) == 0 {
		return fmt.Errorf("%w (reading its body: %w)", e, err)
	}
	return e
}

// post sends body with a copy of headers h.
func (p *OpenAIProvider) post(ctx context.Context, h http.Header, body []byte) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hh := make(http.Header, len(h)+2)
	for k, v := range h {
		hh[k] = v
	}
	hreq.Header = hh
	res, err := p.doer.Do(hreq)
	if err != nil {
		return nil, err
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		defer res.Body.Close()
		return nil, refusal(res)
	}
	return res, nil
}

// drainLimit and drainTimeout bound what Close reads of a finished
// stream's body (the end of its chunked encoding), so that its connection
// goes back to the pool instead of being closed: a new connection per
// stream costs a dial on every request.
const (
	drainLimit   = 64 << 10
	drainTimeout = 100 * time.Millisecond
)

var (
	errUpstreamTimeout = errors.New("upstream timeout")
	errAnswerTooLarge  = fmt.Errorf("answer larger than %d bytes", MaxAnswerBytes)
)

// ChatCompletion sends req and returns the whole answer.
func (p *OpenAIProvider) ChatCompletion(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	up := *req
	up.Stream = false
	up.StreamOptions = nil
	body, err := appendRequest(make([]byte, 0, requestSizeHint(&up)), &up)
	if err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	cctx := ctx
	if d, ok := ctx.Deadline(); !ok || time.Until(d) >= p.timeout {
		// Otherwise the caller's deadline comes first (the router's
		// first-byte timeout, usually), and a timer of ours would never
		// matter: classify looks at the caller's context first.
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
		defer cancel()
	}
	resp, err := p.complete(cctx, body)
	if err != nil {
		return nil, classify(ctx, cctx, err)
	}
	return resp, nil
}

// complete sends body and decodes the answer.
func (p *OpenAIProvider) complete(ctx context.Context, body []byte) (*ChatResponse, error) {
	res, err := p.post(ctx, p.answer, body)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	buf, ok := p.bufs.Get().(*bytes.Buffer)
	if !ok {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			p.bufs.Put(buf)
		}
	}()
	buf.Reset()
	if res.ContentLength > 0 && res.ContentLength <= MaxAnswerBytes {
		buf.Grow(int(res.ContentLength) + 1)
	}
	if _, err := buf.ReadFrom(io.LimitReader(res.Body, MaxAnswerBytes+1)); err != nil {
		return nil, err
	}
	if buf.Len() > MaxAnswerBytes {
		return nil, errAnswerTooLarge
	}
	data := buf.Bytes()
	if out, ok := decodeUpstreamFast(data); ok {
		return out, nil
	}
	return decodeUpstream(data)
}

// requestSizeHint guesses the size of r's JSON, to allocate once.
func requestSizeHint(r *ChatRequest) int {
	n := 256 + len(r.Tools) + len(r.ResponseFormat) + len(r.Stop) + len(r.ToolChoice)
	for i := range r.Messages {
		m := &r.Messages[i]
		n += 48 + len(m.Content) + len(m.Content)/8 + len(m.ReasoningContent) + len(m.Name) + len(m.ToolCallID)
		for _, tc := range m.ToolCalls {
			n += 64 + len(tc.ID) + len(tc.Function.Name) + len(tc.Function.Arguments)
		}
		if m.Parts != nil {
			n += 32 * len(m.Parts)
		}
	}
	return n
}

// ChatCompletionStream sends req with stream: true and
// stream_options.include_usage: true.
func (p *OpenAIProvider) ChatCompletionStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	up := *req
	up.Stream = true
	up.StreamOptions = &StreamOptions{IncludeUsage: true}
	body, err := appendRequest(make([]byte, 0, requestSizeHint(&up)), &up)
	if err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	cctx, cancel := context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
	res, err := p.post(cctx, p.stream, body)
	if err != nil {
		err = classify(ctx, cctx, err)
		cancel()
		return nil, err
	}
	st := &openAIStream{provider: p.name, parent: ctx, ctx: cctx, cancel: cancel, res: res.Body}
	st.sse = sseReader{br: bufio.NewReaderSize(res.Body, 16<<10)}
	return st, nil
}

type openAIStream struct {
	provider string
	parent   context.Context
	ctx      context.Context
	cancel   context.CancelFunc
	res      io.ReadCloser // the response body
	sse      sseReader     // reads res

	chunks   int  // chunks returned
	finished bool // a finish_reason or a usage chunk was seen
	ended    bool // the stream ended normally ([DONE] or the end of the body)

	closeOnce sync.Once
}

// Buffered reports whether the next event can be read without waiting
// for the upstream: a whole data line is already buffered.
func (st *openAIStream) Buffered() bool { return st.sse.buffered() }

func (st *openAIStream) Recv() (*ChatChunk, error) {
	raw, err := st.sse.next()
	if err != nil {
		switch {
		case errors.Is(err, io.EOF) && st.finished:
			st.ended = true
			return nil, io.EOF
		case errors.Is(err, io.EOF) && st.ctx.Err() == nil:
			// The body ended, or [DONE] came, before the answer finished.
			err = fault.Wrap(io.ErrUnexpectedEOF, fault.Unavailable, MsgUnavailable)
		default:
			err = classify(st.parent, st.ctx, err)
		}
		return nil, st.fail(err)
	}
	c, ok := decodeChunkFast(raw)
	if !ok {
		c = new(ChatChunk)
		if err := json.Unmarshal(raw, c); err != nil {
			return nil, st.fail(fault.Wrap(err, fault.Upstream, MsgFailed))
		}
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

// Close ends the stream. After a normal end it first reads what is left of
// the body (at most drainLimit, for at most drainTimeout), so the
// connection can serve the next request.
func (st *openAIStream) Close() error {
	st.closeOnce.Do(func() {
		if st.ended {
			t := time.AfterFunc(drainTimeout, st.cancel)
			_, _ = io.Copy(io.Discard, io.LimitReader(st.sse.br, drainLimit))
			t.Stop()
		}
		_ = st.res.Close()
		st.cancel()
	})
	return nil
}

// classify maps an upstream failure to a fault code: unreachable, slow,
// overloaded (5xx, 429, 408) or broken is fault.Unavailable; any other
// refusal (4xx, malformed answers) is fault.Upstream; the caller's own
// cancellation is fault.Canceled. parent is the caller's context, ctx the
// one bounded by the provider's timeout.
func classify(parent, ctx context.Context, err error) error {
	if c := fault.CodeOf(err); c != fault.Unknown && c != fault.Canceled && c != fault.Timeout {
		return err
	}
	if parent.Err() != nil {
		return fault.Wrap(context.Cause(parent), fault.Canceled, MsgCanceled)
	}
	if ctx.Err() != nil {
		return fault.Wrap(context.Cause(ctx), fault.Unavailable, MsgUnavailable)
	}
	var upErr *UpstreamError
	if errors.As(err, &upErr) {
		if status := upErr.httpStatus(); status != 0 {
			if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
				return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
			}
			return fault.Wrap(err, fault.Upstream, MsgFailed)
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

// upstreamAnswer is the chat.completion object as the OpenAI API
// documents it, with the fields the gateway uses: decodeUpstream's
// reading of an answer, which the fast decoder must agree with.
type upstreamAnswer struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message *struct {
			Role             string          `json:"role"`
			Content          json.RawMessage `json:"content"`
			Name             string          `json:"name"`
			ReasoningContent string          `json:"reasoning_content"`
			ToolCalls        []ToolCall      `json:"tool_calls"`
			ToolCallID       string          `json:"tool_call_id"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

// contentPart is a part of an answer whose content is a list; the text
// of its text parts makes the message's content.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// decodeUpstream decodes a non-streamed answer with encoding/json. A
// missing or empty finish_reason is "stop"; content given as a list of
// parts is the concatenation of their text.
func decodeUpstream(body []byte) (*ChatResponse, error) {
	var a upstreamAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("decoding the answer: %w", err)
	}
	out := &ChatResponse{
		ID:      a.ID,
		Object:  ObjectCompletion,
		Created: a.Created,
		Model:   a.Model,
		Choices: make([]Choice, len(a.Choices)),
	}
	if a.Usage != nil {
		out.Usage = Usage{PromptTokens: a.Usage.PromptTokens, CompletionTokens: a.Usage.CompletionTokens, TotalTokens: a.Usage.TotalTokens}
	}
	for i, c := range a.Choices {
		ch := Choice{Index: c.Index, FinishReason: FinishStop}
		if c.FinishReason != nil && *c.FinishReason != "" {
			ch.FinishReason = *c.FinishReason
		}
		if m := c.Message; m != nil {
			ch.Message = Message{Role: m.Role, Name: m.Name, ReasoningContent: m.ReasoningContent, ToolCallID: m.ToolCallID}
			if len(m.ToolCalls) > 0 {
				ch.Message.ToolCalls = m.ToolCalls
			}
			switch {
			case len(m.Content) == 0 || string(m.Content) == "null":
			case m.Content[0] == '[':
				var parts []contentPart
				if err := json.Unmarshal(m.Content, &parts); err != nil {
					return nil, fmt.Errorf("decoding the answer's content: %w", err)
				}
				var b strings.Builder
				for _, p := range parts {
					if p.Type == "text" || p.Type == "" {
						b.WriteString(p.Text)
					}
				}
				ch.Message.Content = b.String()
			default:
				if err := json.Unmarshal(m.Content, &ch.Message.Content); err != nil {
					return nil, fmt.Errorf("decoding the answer's content: %w", err)
				}
			}
		}
		out.Choices[i] = ch
	}
	return out, nil
}
