package inference

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// MinimumHold is the least a request holds, and the least available
// balance a request needs: $0.05.
const MinimumHold = 5 * billing.Cent

// Public messages of billing refusals, as the API reference words them.
const (
	// MsgInsufficientCredits is the message of the 402 refusal.
	MsgInsufficientCredits = "insufficient credits (need at least $0.05 for this request)"
	// MsgCreditLimit is the message of the error event that ends a stream
	// whose credit ran out.
	MsgCreditLimit = "credit limit reached"
)

// Request defaults the API reference documents.
const (
	DefaultTemperature      = 0.7
	DefaultTopP             = 0.9
	DefaultFrequencyPenalty = 0.1
)

// DefaultHoldTTL is how long a hold lives when [Options.HoldTTL] is zero.
// It must outlast the longest request: the ledger releases expired holds.
const DefaultHoldTTL = 15 * time.Minute

// contextMarginDivisor reserves 1/20 (5%) of the counted prompt when
// clamping max tokens to the context: the tokenizer is o200k_base, not the
// model's own.
const contextMarginDivisor = 20

// Ledger is the part of [billing.Ledger] the service uses; a
// billing.Ledger satisfies it.
type Ledger interface {
	// PlaceHold reserves money atomically, or fails with
	// fault.InsufficientFunds. The service always asks to hold up to what
	// a request may cost, at least [MinimumHold] ([billing.HoldRequest]
	// MinAmount), and sizes the request by the returned Hold.Amount.
	PlaceHold(ctx context.Context, r billing.HoldRequest) (billing.Hold, error)
	// SettleHold debits at most the hold in one entry and releases the
	// rest.
	SettleHold(ctx context.Context, s billing.Settlement) (billing.Entry, error)
	// ReleaseHold releases a hold without a debit.
	ReleaseHold(ctx context.Context, holdID string) error
}

// Charge describes a billed request, for the [PointsHook].
type Charge struct {
	// Account is the wallet billed.
	Account string
	// Model is the catalog model ID.
	Model string
	// Usage is what the request consumed.
	Usage Usage
	// Amount is what was debited (the cost, clamped to the hold).
	Amount billing.MicroCents
	// Entry is the ChatInference ledger entry.
	Entry billing.Entry
	// Streamed tells a stream from a plain completion.
	Streamed bool
}

// PointsHook is called after each billed request, to award chat_usage
// points. Its error is logged; it never fails the request.
type PointsHook func(ctx context.Context, c Charge) error

// ChatPoints returns a [PointsHook] that awards pointsPerDollar points per
// dollar charged (rounded down; nothing under one point), as a chat_usage
// award whose idempotency key is the ledger entry's ID.
func ChatPoints(store billing.PointsStore, pointsPerDollar int64) PointsHook {
	return func(ctx context.Context, c Charge) error {
		points := int64(c.Amount) * pointsPerDollar / int64(billing.Dollar)
		if points <= 0 {
			return nil
		}
		_, err := store.AwardPoints(ctx, billing.PointsEntry{
			Account:     c.Account,
			Trigger:     billing.TriggerChatUsage,
			Points:      points,
			Description: c.Entry.Description,
			Metadata: map[string]any{
				"model":         c.Model,
				"input_tokens":  c.Usage.PromptTokens,
				"output_tokens": c.Usage.CompletionTokens,
			},
			IdempotencyKey: "chat:" + c.Entry.ID,
			CreatedAt:      c.Entry.CreatedAt,
		})
		return err
	}
}

// Options configures a [Service].
type Options struct {
	// Catalog lists the models offered; required.
	Catalog *Catalog
	// Router routes requests to providers. Nil means a router with
	// default options over Providers.
	Router *Router
	// Providers are the providers when Router is nil.
	Providers []ModelProvider
	// Ledger holds and settles the money; required.
	Ledger Ledger
	// Points, if set, is called after each billed request.
	Points PointsHook
	// Tokens counts tokens when an exact count is needed. Nil means
	// [NewTokenizer] (o200k_base, offline).
	Tokens TokenCounter
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics. Nil discards them.
	Logger *slog.Logger
	// HoldTTL is how long holds live; zero means [DefaultHoldTTL].
	HoldTTL time.Duration
	// STTModels are the speech-to-text models, served by the router's
	// speech-to-text providers (matched by name to STTModel.Providers).
	STTModels []STTModel
	// STTProviders are the router's speech-to-text providers when Router
	// is nil (RouterOptions.STTProviders otherwise).
	STTProviders []STTProvider
	// MaxAudioBytes bounds an upload; zero means DefaultMaxAudioBytes.
	MaxAudioBytes int64
	// AudioTempDir is where uploads past their first MiB are kept while
	// they are transcribed; "" means os.TempDir().
	AudioTempDir string
	// MaxAudioSpool bounds the bytes those temporary files hold at once,
	// over every upload in progress; past it an upload is refused with
	// fault.RateLimited ([MsgAudioSpoolFull]). Zero means
	// [DefaultMaxAudioSpool].
	MaxAudioSpool int64
}

// Service validates, bills and routes chat completions. It is what the
// HTTP handlers and embedding Go programs call. It is safe for concurrent
// use.
type Service struct {
	catalog *Catalog
	router  *Router
	ledger  Ledger
	points  PointsHook
	tokens  TokenCounter
	now     func() time.Time
	log     *slog.Logger
	holdTTL time.Duration
	stt     sttState
}

// NewService returns a service. Every provider a catalog model names must
// be configured.
func NewService(opts Options) (*Service, error) {
	if opts.Catalog == nil || opts.Ledger == nil {
		return nil, errors.New("inference: Options.Catalog and Options.Ledger are required")
	}
	s := &Service{
		catalog: opts.Catalog,
		router:  opts.Router,
		ledger:  opts.Ledger,
		points:  opts.Points,
		tokens:  opts.Tokens,
		now:     opts.Now,
		log:     opts.Logger,
		holdTTL: opts.HoldTTL,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.router == nil {
		r, err := NewRouter(opts.Providers, RouterOptions{Logger: s.log, STTProviders: opts.STTProviders})
		if err != nil {
			return nil, err
		}
		s.router = r
	}
	for _, m := range s.catalog.models {
		for _, p := range m.Providers {
			if !s.router.Has(p) {
				return nil, fmt.Errorf("inference: model %q names provider %q, which is not configured", m.ID, p)
			}
		}
	}
	if s.tokens == nil {
		s.tokens = NewTokenizer()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.holdTTL <= 0 {
		s.holdTTL = DefaultHoldTTL
	}
	if opts.Router != nil && len(opts.STTProviders) > 0 {
		return nil, errors.New("inference: with a Router, give the speech-to-text providers to it (RouterOptions.STTProviders)")
	}
	if err := s.stt.init(opts, s.router); err != nil {
		return nil, err
	}
	return s, nil
}

// Catalog returns the catalog, for GET /api/models.
func (s *Service) Catalog() *Catalog { return s.catalog }

// Router returns the router, for health reporting.
func (s *Service) Router() *Router { return s.router }

// Complete runs a non-streamed completion for account (the wallet as the
// ledger knows it); req.Stream is ignored.
//
// Errors carry fault codes with the documented messages: fault.Invalid for
// a bad request (unknown model, messages, tools on a model without
// function calling, a prompt over the context), fault.InsufficientFunds
// ([MsgInsufficientCredits]) when less than $0.05 is available,
// fault.Unavailable ([MsgUnavailable]) when no provider could be reached,
// fault.Upstream ([MsgFailed]) when the provider failed the request,
// fault.Canceled when ctx ended. Nothing is billed in those cases.
func (s *Service) Complete(ctx context.Context, account string, req *ChatRequest) (*ChatResponse, error) {
	c, err := s.prepare(ctx, account, req, false)
	if err != nil {
		return nil, err
	}
	resp, err := s.router.ChatCompletion(ctx, c.model.Providers, c.up)
	if err != nil {
		c.release(ctx)
		return nil, publicError(err)
	}
	u := resp.Usage
	if u.PromptTokens == 0 && u.CompletionTokens == 0 {
		u.PromptTokens = c.exactPrompt()
		for _, ch := range resp.Choices {
			u.CompletionTokens += int64(s.tokens.CountTokens(messageText(&ch.Message)))
		}
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	resp.ID, resp.Object, resp.Created, resp.Model, resp.Usage = c.id, ObjectCompletion, c.created, c.model.ID, u
	if resp.Choices == nil {
		resp.Choices = []Choice{}
	}
	if _, err := c.settle(ctx, u, c.model.Cost(u.PromptTokens, u.CompletionTokens), false); err != nil {
		return nil, err
	}
	return resp, nil
}

// messageText is the generated text of an answer, as counted for billing.
func messageText(m *Message) string {
	t := m.Content + m.ReasoningContent
	for _, tc := range m.ToolCalls {
		t += tc.Function.Name + tc.Function.Arguments
	}
	return t
}

// publicError maps a routing failure to its documented message.
func publicError(err error) error {
	switch fault.CodeOf(err) {
	case fault.Unavailable:
		return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
	case fault.Canceled:
		return fault.Wrap(err, fault.Canceled, MsgCanceled)
	}
	return fault.Wrap(err, fault.Upstream, MsgFailed)
}

// call is one request between its hold and its settlement.
type call struct {
	s       *Service
	id      string
	account string
	model   Model
	req     *ChatRequest
	up      *ChatRequest
	created int64
	label   string // CallOptions.Label

	n         int64 // choices
	maxTokens int64 // per choice, as sent upstream
	prompt    int64 // prompt tokens the hold was sized with
	exact     int64 // exact prompt count, -1 until counted
	hold      billing.Hold
	// maxCost is the most the request is billed, and what a stream's
	// output is checked against: the prompt plus max tokens at the prices,
	// raised to MinimumHold, never more than the hold. It is below the
	// hold only when the ledger held the whole available balance and the
	// clamped request costs less (the prompt's count below its bound, or
	// a remainder that pays for no whole token).
	maxCost billing.MicroCents
}

// exactPrompt counts the prompt with the tokenizer, once.
func (c *call) exactPrompt() int64 {
	if c.exact < 0 {
		c.exact = countPrompt(c.s.tokens, c.req.Messages, c.req.Tools)
	}
	return c.exact
}

func newID() string {
	u := uuid.New()
	return "chatcmpl-" + hex.EncodeToString(u[:])
}

// prepare validates req, clamps max tokens and places the hold.
func (s *Service) prepare(ctx context.Context, account string, req *ChatRequest, stream bool) (*call, error) {
	if req == nil {
		return nil, fault.New(fault.Invalid, "request body is required")
	}
	model, err := s.catalog.Lookup(req.Model)
	if err != nil {
		return nil, err
	}
	if err := validateMessages(req.Messages); err != nil {
		return nil, err
	}
	if err := validateParams(req); err != nil {
		return nil, err
	}
	if !model.FunctionCalling && (!isNull(req.Tools) || !isNull(req.ToolChoice)) {
		return nil, fault.Newf(fault.Invalid, "model '%s' does not support function calling: tools and tool_choice are not accepted", model.ID)
	}
	n, err := parseN(req.N)
	if err != nil {
		return nil, err
	}
	now := s.now()
	c := &call{s: s, id: newID(), account: account, model: model, req: req, created: now.Unix(), n: n, exact: -1}

	// Clamp to the model's max output and to the context left after the
	// prompt. The byte bound settles most requests without a tokenizer.
	limit := int64(model.MaxOutputTokens)
	requested := req.MaxCompletionTokens
	if requested == 0 {
		requested = req.MaxTokens
	}
	if requested > 0 && requested < uint64(limit) {
		limit = int64(requested)
	}
	ctxLen := int64(model.ContextLength)
	c.prompt = promptUpperBound(req.Messages, req.Tools)
	if c.prompt+limit > ctxLen {
		// The bound does not settle it: count. Counting takes time linear
		// in the prompt, so first make sure the wallet can pay for a
		// request at all (a probe hold of MinimumHold, released once the
		// count is in), and stop counting once the prompt is past the
		// context or the caller has gone.
		probe, err := s.holdMinimum(ctx, account)
		if err != nil {
			return nil, err
		}
		p, err := countPromptUpTo(ctx, s.tokens, req.Messages, req.Tools, ctxLen)
		s.releaseHold(ctx, account, probe.ID)
		if err != nil {
			return nil, ledgerError(ctx, err)
		}
		if p >= ctxLen {
			return nil, fault.Newf(fault.Invalid, "prompt is too long for model '%s': at least %d tokens, and its context holds %d", model.ID, ctxLen, ctxLen)
		}
		c.exact = p
		room := ctxLen - p - p/contextMarginDivisor
		if room < 1 {
			room = ctxLen - p
		}
		limit = min(limit, room)
		c.prompt = p
	}

	if err := s.placeHold(ctx, c, limit); err != nil {
		return nil, err
	}
	c.up = upstreamRequest(req, model, c.maxTokens, stream)
	return c, nil
}

// CheckFunds reports whether account can pay for a request at all: nil
// when [MinimumHold] is available (held and released at once), else
// fault.InsufficientFunds with [MsgInsufficientCredits]. Work queued for
// later (a persona's reply) checks it when it is asked for.
func (s *Service) CheckFunds(ctx context.Context, account string) error {
	h, err := s.holdMinimum(ctx, account)
	if err != nil {
		return err
	}
	s.releaseHold(ctx, account, h.ID)
	return nil
}

// holdMinimum holds MinimumHold of account: the proof that it can pay
// for a request at all, before its work begins.
func (s *Service) holdMinimum(ctx context.Context, account string) (billing.Hold, error) {
	now := s.now()
	h, err := s.ledger.PlaceHold(ctx, billing.HoldRequest{
		Account: account, Amount: MinimumHold, ExpiresAt: now.Add(s.holdTTL), At: now,
	})
	if fault.CodeOf(err) == fault.InsufficientFunds {
		return h, fault.New(fault.InsufficientFunds, MsgInsufficientCredits)
	}
	if err != nil {
		return h, ledgerError(ctx, err)
	}
	return h, nil
}

// placeHold places the hold and clamps max tokens to what it pays for. The
// request asks the ledger to hold up to what it may cost (at least
// [MinimumHold]) in one atomic operation: the ledger holds that, or all of
// the available balance if that is less but still at least MinimumHold,
// or refuses. Concurrent requests of one wallet cannot overdraw it, and no
// balance is read beforehand.
func (s *Service) placeHold(ctx context.Context, c *call, limit int64) error {
	in, out := c.model.InputPrice(), c.model.OutputPrice()*billing.MicroCents(c.n)
	need := billing.MicroCents(c.prompt)*in + billing.MicroCents(limit)*out
	now := s.now()
	h, err := s.ledger.PlaceHold(ctx, billing.HoldRequest{
		Account:   c.account,
		Amount:    max(need, MinimumHold),
		MinAmount: MinimumHold,
		ExpiresAt: now.Add(s.holdTTL),
		At:        now,
	})
	if errors.Is(err, fault.InsufficientFunds) {
		return fault.New(fault.InsufficientFunds, MsgInsufficientCredits)
	}
	if err != nil {
		return ledgerError(ctx, err)
	}
	c.hold, c.maxTokens, c.maxCost = h, limit, h.Amount
	if need > h.Amount {
		// Less was held than max tokens needs: lower max tokens to what the
		// hold pays for, with the prompt counted exactly.
		c.prompt = c.exactPrompt()
		left := h.Amount - billing.MicroCents(c.prompt)*in
		if out > 0 {
			c.maxTokens = min(c.maxTokens, int64(left/out))
		}
		if left < 0 || c.maxTokens < 1 {
			c.release(ctx)
			return fault.New(fault.InsufficientFunds, MsgInsufficientCredits)
		}
		need = billing.MicroCents(c.prompt)*in + billing.MicroCents(c.maxTokens)*out
		c.maxCost = max(min(need, h.Amount), MinimumHold)
	}
	return nil
}

// ledgerError classifies a ledger failure: the caller leaving is
// fault.Canceled, the caller's own deadline fault.Timeout, anything else
// internal (a server-side bound passing is never shown as the caller's
// cancellation).
func ledgerError(ctx context.Context, err error) error {
	switch ctx.Err() {
	case context.Canceled:
		return fault.Wrap(err, fault.Canceled, MsgCanceled)
	case context.DeadlineExceeded:
		return fault.Wrap(err, fault.Timeout, "request timed out")
	}
	return fault.Wrap(err, fault.Internal, "internal error")
}

// upstreamRequest is what providers receive: the upstream model name,
// defaults filled in, max tokens clamped, pass-through fields unchanged,
// and "developer" messages sent as "system".
func upstreamRequest(req *ChatRequest, m Model, maxTokens int64, stream bool) *ChatRequest {
	up := &ChatRequest{
		Model:            m.upstreamName(),
		Messages:         req.Messages,
		Stream:           stream,
		Temperature:      req.Temperature,
		TopP:             req.TopP,
		FrequencyPenalty: req.FrequencyPenalty,
		PresencePenalty:  req.PresencePenalty,
		TopK:             passThrough(req.TopK),
		Stop:             passThrough(req.Stop),
		Seed:             passThrough(req.Seed),
		N:                passThrough(req.N),
		Tools:            passThrough(req.Tools),
		ToolChoice:       passThrough(req.ToolChoice),
		ResponseFormat:   passThrough(req.ResponseFormat),
		User:             req.User,
	}
	if up.Temperature == nil {
		up.Temperature = new(DefaultTemperature)
	}
	if up.TopP == nil {
		up.TopP = new(DefaultTopP)
	}
	if up.FrequencyPenalty == nil {
		up.FrequencyPenalty = new(DefaultFrequencyPenalty)
	}
	// Send the field(s) the caller used; max_tokens when it used none.
	if req.MaxCompletionTokens > 0 {
		up.MaxCompletionTokens = uint64(maxTokens)
	}
	if req.MaxTokens > 0 || req.MaxCompletionTokens == 0 {
		up.MaxTokens = uint64(maxTokens)
	}
	if stream {
		up.StreamOptions = &StreamOptions{IncludeUsage: true}
	}
	copied := false
	for i, msg := range req.Messages {
		if msg.Role == RoleDeveloper {
			if !copied {
				up.Messages, copied = append([]Message(nil), req.Messages...), true
			}
			up.Messages[i].Role = RoleSystem
		}
	}
	return up
}

func passThrough(r json.RawMessage) json.RawMessage {
	if isNull(r) {
		return nil
	}
	return r
}

// release frees the hold of a request that produced nothing.
func (c *call) release(ctx context.Context) { c.s.releaseHold(ctx, c.account, c.hold.ID) }

// releaseHold releases a hold, also after ctx ended; a failure is logged
// and the hold expires.
func (s *Service) releaseHold(ctx context.Context, account, holdID string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.ledger.ReleaseHold(rctx, holdID); err != nil {
		s.log.Error("inference: releasing hold failed; it will expire", "hold", holdID, "account", account, "err", err)
	}
}

// settle debits cost (clamped to maxCost) in one ChatInference entry,
// then awards points. It retries transient ledger failures: an answer the
// caller received must be billed.
func (c *call) settle(ctx context.Context, u Usage, cost billing.MicroCents, streamed bool) (billing.Entry, error) {
	amount := min(cost, c.maxCost)
	sctx := context.WithoutCancel(ctx)
	desc := fmt.Sprintf("Chat: %s (%d in / %d out tokens)", c.model.ID, u.PromptTokens, u.CompletionTokens)
	if c.label != "" {
		desc += " · " + c.label
	}
	st := billing.Settlement{
		HoldID:      c.hold.ID,
		Amount:      amount,
		Type:        billing.ChatInference,
		Description: desc,
		Usage:       &billing.Usage{Model: c.model.ID, InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens},
		At:          c.s.now(),
	}
	var (
		e   billing.Entry
		err error
	)
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 25 * time.Millisecond)
		}
		actx, cancel := context.WithTimeout(sctx, 10*time.Second)
		e, err = c.s.ledger.SettleHold(actx, st)
		cancel()
		if err == nil || errors.Is(err, fault.NotFound) {
			break
		}
	}
	if err != nil {
		c.s.log.Error("inference: settling a request failed", "hold", c.hold.ID, "account", c.account,
			"model", c.model.ID, "amount", int64(amount), "err", err)
		return e, fault.Wrap(err, fault.Internal, "internal error")
	}
	if cost > c.maxCost {
		c.s.log.Warn("inference: cost exceeded the hold; billed what the hold was for", "hold", c.hold.ID, "cost", int64(cost),
			"billed", int64(c.maxCost), "held", int64(c.hold.Amount))
	}
	c.s.log.Debug("inference: billed", "account", c.account, "model", c.model.ID,
		"in", u.PromptTokens, "out", u.CompletionTokens, "amount", int64(amount))
	if c.s.points != nil {
		ch := Charge{Account: c.account, Model: c.model.ID, Usage: u, Amount: amount, Entry: e, Streamed: streamed}
		if perr := c.s.points(sctx, ch); perr != nil {
			c.s.log.Warn("inference: awarding chat points failed", "account", c.account, "err", perr)
		}
	}
	return e, nil
}

// Model returns a [ModelProvider] that serves the catalog model id through
// the service's router (its routes, retries, fallbacks and breakers),
// unbilled: for the platform's own work, such as the news feed's
// enrichment. Requests name the model by its catalog ID; max tokens are
// clamped to the model's output limit. fault.Invalid if id is not in the
// catalog.
func (s *Service) Model(id string) (ModelProvider, error) {
	m, err := s.catalog.Lookup(id)
	if err != nil {
		return nil, err
	}
	return &catalogModel{s: s, m: m}, nil
}

// catalogModel is Service.Model's provider.
type catalogModel struct {
	s *Service
	m Model
}

func (c *catalogModel) Name() string { return c.m.ID }

func (c *catalogModel) up(req *ChatRequest, stream bool) *ChatRequest {
	limit := int64(c.m.MaxOutputTokens)
	if n := req.MaxTokens; n > 0 && (limit == 0 || int64(n) < limit) {
		limit = int64(n)
	}
	return upstreamRequest(req, c.m, limit, stream)
}

func (c *catalogModel) ChatCompletion(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	return c.s.router.ChatCompletion(ctx, c.m.Providers, c.up(req, false))
}

func (c *catalogModel) ChatCompletionStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	return c.s.router.ChatCompletionStream(ctx, c.m.Providers, c.up(req, true))
}
