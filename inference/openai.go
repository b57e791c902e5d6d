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
	"strconv"
	"strings"
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
// So the provider always writes the request body itself, from the
// [ChatRequest], with the same bytes encoding/json would write.
//
// Non-streamed requests do not go through go-openai at all. Going through
// it cost about 40% of the gateway's CPU per request in a profile at
// concurrency 32 (BENCHMARKS.md): a client built per request, a dummy
// request body marshaled and thrown away, a reflection decode into
// go-openai's types and a conversion from them. The provider instead does
// what go-openai does, the same way:
//   - it POSTs to BaseURL (trailing slashes trimmed) + "/chat/completions"
//     with "Authorization: Bearer <APIKey>" (when a key is set),
//     "Accept: application/json" and "Content-Type: application/json",
//     then the configured extra headers, which override;
//   - it refuses the legacy completion-only models, and runs go-openai's
//     reasoning-model check, before sending, with go-openai's errors;
//   - a status below 200 or from 400 is decoded as go-openai does into an
//     *openai.APIError, or an *openai.RequestError when the body is not an
//     OpenAI error;
//   - a success is decoded straight into a [ChatResponse] by a fast
//     decoder, which gives up on any answer it is not sure to decode as
//     go-openai would (it then decodes into openai.ChatCompletionResponse
//     with encoding/json, as go-openai does, and converts).
//
// Streams go through go-openai: it builds and sends the request (URL,
// auth and SSE headers), and decodes a refusal (a status that is not a
// success) into its error types. One go-openai client serves every stream
// of the provider; its openai.HTTPDoer takes the body the provider wrote
// from the request's context and sends it in place of the one go-openai
// marshaled. The provider then reads the events from the response body
// itself, line for line as go-openai's stream reader does (sseReader, and
// a test that compares the two on the same bytes), for one reason: it
// knows when the next event is already buffered, so the HTTP handler can
// send events that arrived together in one write and one flush instead of
// one each, which saves a system call and a wakeup of the client per
// event. After a stream ends normally, Close reads the rest of the body so
// its connection is reused.
type OpenAIProvider struct {
	name    string
	url     string // the chat completions URL, as go-openai joins it
	header  http.Header
	doer    *http.Client
	timeout time.Duration
	// base holds the headers of a non-streamed request, extra headers
	// included; each request gets a copy of the map (the values are
	// shared and never modified).
	base http.Header
	// streams is the go-openai client of streams.
	streams *openai.Client
	// emptyLimit is go-openai's limit of non-data lines between events.
	emptyLimit uint
	// bufs holds buffers for reading answers (*bytes.Buffer).
	bufs sync.Pool
}

var _ ModelProvider = (*OpenAIProvider)(nil)

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
		header:  cfg.Header.Clone(),
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
	// The headers go-openai sets on a non-streamed request, then ours.
	p.base = http.Header{}
	if cfg.APIKey != "" {
		p.base["Authorization"] = []string{"Bearer " + cfg.APIKey}
	}
	p.base["Accept"] = []string{"application/json"}
	p.base["Content-Type"] = []string{"application/json"}
	for k, v := range p.header {
		p.base[k] = v[:len(v):len(v)]
	}
	config := openai.DefaultConfig(cfg.APIKey)
	config.BaseURL = cfg.BaseURL
	config.HTTPClient = &bodyFromContext{next: p.doer, header: p.header}
	p.streams = openai.NewClientWithConfig(config)
	p.emptyLimit = config.EmptyMessagesLimit
	return p, nil
}

// chatCompletionsPath is what go-openai appends to the base URL.
const chatCompletionsPath = "/chat/completions"

// Name returns the configured name.
func (p *OpenAIProvider) Name() string { return p.name }

// bodyKey is the context key of a stream's request body.
type bodyKey struct{}

// bodyFromContext is the openai.HTTPDoer of streams: it replaces the body
// go-openai marshaled with the one in the request's context, and adds the
// extra headers.
type bodyFromContext struct {
	next   *http.Client
	header http.Header
}

func (d *bodyFromContext) Do(req *http.Request) (*http.Response, error) {
	sr, ok := req.Context().Value(bodyKey{}).(*streamRequest)
	if !ok {
		return nil, errors.New("inference: no request body in the context")
	}
	body := sr.body
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
	for k, v := range d.header {
		req.Header[k] = v
	}
	res, err := d.next.Do(req)
	if err == nil {
		sr.res = res.Body
	}
	return res, err
}

// streamRequest carries a stream's request body to bodyFromContext, and
// its response body back, so that Close can read the body to its end.
type streamRequest struct {
	body []byte
	res  io.ReadCloser
}

// drainLimit and drainTimeout bound what Close reads of a finished
// stream's body (the end of its chunked encoding), so that its connection
// goes back to the pool instead of being closed: a new connection per
// stream costs a dial on every request.
const (
	drainLimit   = 64 << 10
	drainTimeout = 100 * time.Millisecond
)

// isLegacyModel reports whether go-openai refuses the model for chat
// completions (ErrChatCompletionInvalidModel) without calling the API.
func isLegacyModel(model string) bool {
	switch model {
	case openai.CodexCodeDavinci002, openai.CodexCodeCushman001, openai.CodexCodeDavinci001,
		openai.GPT3TextDavinci003, openai.GPT3TextDavinci002, openai.GPT3TextCurie001,
		openai.GPT3TextBabbage001, openai.GPT3TextAda001, openai.GPT3TextDavinci001,
		openai.GPT3DavinciInstructBeta, openai.GPT3Davinci, openai.GPT3CurieInstructBeta,
		openai.GPT3Curie, openai.GPT3Ada, openai.GPT3Babbage:
		return true
	}
	return false
}

var errUpstreamTimeout = errors.New("upstream timeout")

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
	resp, err := p.complete(cctx, req.Model, body)
	if err != nil {
		return nil, classify(ctx, cctx, err)
	}
	return resp, nil
}

// complete sends body and decodes the answer, as go-openai's
// CreateChatCompletion would.
func (p *OpenAIProvider) complete(ctx context.Context, model string, body []byte) (*ChatResponse, error) {
	if isLegacyModel(model) {
		return nil, openai.ErrChatCompletionInvalidModel
	}
	if err := openai.NewReasoningValidator().Validate(openai.ChatCompletionRequest{Model: model}); err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	h := make(http.Header, len(p.base)+2)
	for k, v := range p.base {
		h[k] = v
	}
	hreq.Header = h
	res, err := p.doer.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode < http.StatusOK || res.StatusCode >= http.StatusBadRequest {
		return nil, errorResponse(res)
	}
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
	if res.ContentLength > 0 && res.ContentLength <= 16<<20 {
		buf.Grow(int(res.ContentLength) + 1)
	}
	_, rerr := buf.ReadFrom(res.Body)
	data := buf.Bytes()
	if out, ok := decodeUpstreamFast(data); ok {
		return out, nil
	}
	// go-openai decodes with a json.Decoder reading the body: a read
	// failure matters only if it cut the first value short.
	var r openai.ChatCompletionResponse
	err = json.NewDecoder(bytes.NewReader(data)).Decode(&r)
	if rerr != nil && (err == io.EOF || err == io.ErrUnexpectedEOF) {
		return nil, rerr
	}
	if err != nil {
		return nil, err
	}
	return fromOpenAI(&r), nil
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

// errorResponse decodes a failure status's body as go-openai does
// (handleErrorResp).
func errorResponse(res *http.Response) error {
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("error, reading response body: %w", err)
	}
	var errRes openai.ErrorResponse
	err = json.Unmarshal(body, &errRes)
	if err != nil || errRes.Error == nil {
		reqErr := &openai.RequestError{
			HTTPStatus:     res.Status,
			HTTPStatusCode: res.StatusCode,
			Err:            err,
			Body:           body,
		}
		if errRes.Error != nil {
			reqErr.Err = errRes.Error
		}
		return reqErr
	}
	errRes.Error.HTTPStatus = res.Status
	errRes.Error.HTTPStatusCode = res.StatusCode
	return errRes.Error
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
	sr := &streamRequest{body: body}
	s, err := p.streams.CreateChatCompletionStream(context.WithValue(cctx, bodyKey{}, sr), openai.ChatCompletionRequest{Model: req.Model})
	if err != nil {
		err = classify(ctx, cctx, err)
		cancel()
		return nil, err
	}
	st := &openAIStream{provider: p.name, parent: ctx, ctx: cctx, cancel: cancel, s: s, res: sr.res}
	if sr.res == nil {
		cancel()
		_ = s.Close()
		return nil, fault.New(fault.Internal, "internal error")
	}
	st.sse = sseReader{br: bufio.NewReaderSize(sr.res, 16<<10), emptyLimit: p.emptyLimit}
	return st, nil
}

// sseReader reads a stream's server-sent events the way go-openai's
// stream reader does (streamReader.processLines in go-openai v1.43):
// "data:" lines are events, "[DONE]" ends the stream, other lines count
// against the empty-message limit and are kept, and a data line that
// starts an error object, with what follows, decodes as an API error.
// The provider reads events itself, from the body go-openai opened, for
// one reason: it knows how much is already buffered, so the handler can
// write events that arrived together in one flush (see Buffered).
type sseReader struct {
	br         *bufio.Reader
	errs       bytes.Buffer // go-openai's error accumulator
	emptyLimit uint
	done       bool
}

// next returns the next event's data, io.EOF after "[DONE]" or at the end
// of the body, or the error go-openai would return.
func (r *sseReader) next() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	var empty uint
	inError := false
	for {
		raw, rerr := r.br.ReadBytes('\n')
		if rerr != nil || inError {
			if r.errs.Len() > 0 {
				var er *openai.ErrorResponse
				if json.Unmarshal(r.errs.Bytes(), &er) == nil && er != nil && er.Error != nil {
					return nil, fmt.Errorf("error, %w", er.Error)
				}
			}
			return nil, rerr
		}
		line := bytes.TrimSpace(raw)
		data, isData := sseData(line)
		if isData && bytes.HasPrefix(data, []byte(`{"error":`)) {
			inError = true
		}
		if !isData || inError {
			if inError {
				line = data
			}
			r.errs.Write(line)
			empty++
			if empty > r.emptyLimit {
				return nil, openai.ErrTooManyEmptyStreamMessages
			}
			continue
		}
		if string(data) == "[DONE]" {
			r.done = true
			return nil, io.EOF
		}
		return data, nil
	}
}

// sseData returns what follows "data:" and any whitespace after it (the
// regular expression ^data:\s* of go-openai), if line is a data line.
func sseData(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil, false
	}
	for len(rest) > 0 {
		switch rest[0] {
		case ' ', '\t', '\n', '\f', '\r':
			rest = rest[1:]
			continue
		}
		break
	}
	return rest, true
}

type openAIStream struct {
	provider string
	parent   context.Context
	ctx      context.Context
	cancel   context.CancelFunc
	s        *openai.ChatCompletionStream
	res      io.ReadCloser // the response body go-openai opened
	sse      sseReader     // reads res

	chunks   int  // chunks returned
	finished bool // a finish_reason or a usage chunk was seen
	ended    bool // the stream ended normally ([DONE] or the end of the body)

	closeOnce sync.Once
}

// Buffered reports whether the next event can be read without waiting
// for the upstream: a whole data line is already buffered.
func (st *openAIStream) Buffered() bool { return st.sse.buffered() }

// buffered reports whether a complete data line is in the buffer, so that
// next returns without reading from the connection.
func (r *sseReader) buffered() bool {
	if r.done {
		return true
	}
	b, _ := r.br.Peek(r.br.Buffered())
	for {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			return false
		}
		if _, isData := sseData(bytes.TrimSpace(line)); isData {
			return true
		}
		b = rest
	}
}

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
		_ = st.s.Close()
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

// Types of go-openai's answer that the fast decoder checks values against.
type (
	openaiPromptTokensDetails     = openai.PromptTokensDetails
	openaiCompletionTokensDetails = openai.CompletionTokensDetails
	openaiPromptFilterResults     = []openai.PromptFilterResult
	openaiLogProbs                = openai.LogProbs
	openaiContentFilterResults    = openai.ContentFilterResults
	openaiFunctionCall            = openai.FunctionCall
)

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
