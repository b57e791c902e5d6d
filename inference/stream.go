package inference

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Error event types of a [StreamError].
const (
	ErrorTypeInsufficientCredits = "insufficient_credits"
	ErrorTypeUnavailable         = "service_unavailable"
	ErrorTypeServer              = "server_error"
	ErrorTypeCanceled            = "canceled"
)

// SSEDone is the event that ends every stream, after the last chunk or
// after an error event.
const SSEDone = "data: [DONE]\n\n"

// AppendSSE appends one server-sent event whose data is v as JSON:
// "data: <json>\n\n". v is a *[ChatChunk] or a *[StreamError].
func AppendSSE(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case *ChatChunk:
		dst = append(dst, "data: "...)
		return append(v.AppendJSON(dst), "\n\n"...), nil
	case *StreamError:
		dst = append(dst, "data: "...)
		return append(v.AppendJSON(dst), "\n\n"...), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	dst = append(dst, "data: "...)
	dst = append(dst, b...)
	return append(dst, "\n\n"...), nil
}

// StreamError ends a stream that has started: the HTTP layer sends it as
// the last data event (its JSON is the event's data), then [SSEDone]. When
// credit runs out its JSON is exactly
//
//	{"error":{"message":"credit limit reached","type":"insufficient_credits"},"credits_exhausted":true}
//
// errors.Is(err, fault.InsufficientFunds) and fault.CodeOf work on it.
type StreamError struct {
	// Err has the code and public message.
	Err *fault.Error
	// Type is the event's error type, one of the ErrorType constants.
	Type string
	// CreditsExhausted marks the credit-limit event.
	CreditsExhausted bool
}

// Error returns the public message and the cause.
func (e *StreamError) Error() string { return "inference: stream ended: " + e.Err.Error() }

// Unwrap returns the *fault.Error.
func (e *StreamError) Unwrap() error { return e.Err }

// MarshalJSON returns the error event's data.
func (e *StreamError) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 128)), nil
}

func creditsExhausted() *StreamError {
	return &StreamError{
		Err:              fault.New(fault.InsufficientFunds, MsgCreditLimit),
		Type:             ErrorTypeInsufficientCredits,
		CreditsExhausted: true,
	}
}

// streamFailure turns an upstream failure into the event that ends the
// stream.
func streamFailure(err error) *StreamError {
	switch fault.CodeOf(err) {
	case fault.Canceled:
		return &StreamError{Err: fault.Wrap(err, fault.Canceled, MsgCanceled), Type: ErrorTypeCanceled}
	case fault.Unavailable, fault.Timeout:
		return &StreamError{Err: fault.Wrap(err, fault.Unavailable, MsgUnavailable), Type: ErrorTypeUnavailable}
	case fault.Internal:
		return &StreamError{Err: fault.Wrap(err, fault.Internal, "internal error"), Type: ErrorTypeServer}
	}
	return &StreamError{Err: fault.Wrap(err, fault.Upstream, MsgFailed), Type: ErrorTypeServer}
}

var errSessionClosed = errors.New("stream session closed")

// Stream starts a streamed completion for account; req.Stream is ignored.
// Every failure before the first chunk (validation, 402, no provider) is
// returned here as in [Service.Complete], so the HTTP layer can answer it
// as a plain error.
//
// The session's chunks carry the catalog model ID, the request's ID and
// creation time; the last one carries usage. Chunks are passed on as they
// arrive; the only one held back is a choice's finishing chunk, until the
// upstream's usage (or its end) arrives, so that usage rides on it as the
// API reference shows. The caller must Close the session.
func (s *Service) Stream(ctx context.Context, account string, req *ChatRequest) (*StreamSession, error) {
	return s.StreamWith(ctx, account, req, CallOptions{})
}

// CallOptions are a request's options beyond the API's, for programs that
// call the service on a wallet's behalf.
type CallOptions struct {
	// Label says what the request was for in its ledger entry's
	// description, after the model and tokens ("persona My Jensen").
	Label string
	// OnHold, if set, is called with the request's hold once it is
	// placed, before the provider is asked: a caller that must survive a
	// crash records it, and after the crash asks [Service.ReleaseHold]
	// whether the request was billed. An error releases the hold and
	// fails the call with that error.
	OnHold func(ctx context.Context, holdID string) error
}

// StreamWith is Stream with options.
func (s *Service) StreamWith(ctx context.Context, account string, req *ChatRequest, o CallOptions) (*StreamSession, error) {
	c, err := s.prepare(ctx, account, req, true)
	if err != nil {
		return nil, err
	}
	c.label = o.Label
	if o.OnHold != nil {
		if err := o.OnHold(ctx, c.hold.ID); err != nil {
			c.release(ctx)
			return nil, err
		}
	}
	sctx, cancel := context.WithCancelCause(ctx)
	up, err := s.router.ChatCompletionStream(sctx, c.model.Providers, c.up)
	if err != nil {
		cancel(nil)
		c.release(ctx)
		return nil, publicError(err)
	}
	ss := &StreamSession{c: c, ctx: sctx, cancel: cancel, up: up}
	if out := c.model.OutputPrice(); out > 0 {
		budget := int64((c.maxCost - billing.MicroCents(c.prompt)*c.model.InputPrice()) / out)
		ss.exactFrom = budget - budget/4
	}
	return ss, nil
}

// StreamSession is a running streamed completion. Recv is not safe for
// concurrent use; Close may be called from any goroutine.
type StreamSession struct {
	c      *call
	ctx    context.Context
	cancel context.CancelCauseFunc
	up     Stream

	mu      sync.Mutex // held by Recv and Close
	outbox  []*ChatChunk
	pending *ChatChunk // a finishing chunk waiting for usage
	final   error      // returned once the outbox is empty
	usage   *Usage     // as the upstream reported it
	text    strings.Builder
	pieces  pieceCounter
	out     int64 // output tokens received, estimated
	// exactFrom is the estimate past which each chunk is counted with the
	// tokenizer: three quarters of the output the hold pays for.
	exactFrom int64
	exactMode bool
	settled   bool
	settleErr error
}

// ID returns the completion ID every chunk carries.
func (ss *StreamSession) ID() string { return ss.c.id }

// Model returns the catalog model.
func (ss *StreamSession) Model() Model { return ss.c.model }

// Recv returns the next chunk; io.EOF after the last chunk (the one with
// usage), when the HTTP layer sends [SSEDone]; or, for every other ending,
// a *[StreamError], which the HTTP layer sends as an error event followed
// by [SSEDone]. The request is billed before the last chunk or the error
// is returned. Once it has returned an error, Recv returns it again.
func (ss *StreamSession) Recv() (*ChatChunk, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for {
		if len(ss.outbox) > 0 {
			c := ss.outbox[0]
			ss.outbox[0] = nil
			ss.outbox = ss.outbox[1:]
			return c, nil
		}
		if ss.final != nil {
			return nil, ss.final
		}
		c, err := ss.up.Recv()
		switch {
		case errors.Is(err, io.EOF):
			ss.finish()
		case err != nil:
			ss.fail(err)
		default:
			ss.take(c)
		}
	}
}

// Buffered reports whether Recv can return without waiting for the
// upstream: a chunk is queued, the stream has ended, or the provider's
// stream (if it can tell; see [OpenAIProvider]) already holds the next
// event. A writer may then hold back its flush and send what arrived
// together at once; nothing waits on the upstream unflushed.
func (ss *StreamSession) Buffered() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.outbox) > 0 || ss.final != nil {
		return true
	}
	b, ok := ss.up.(interface{ Buffered() bool })
	return ok && b.Buffered()
}

// take accounts for a chunk and queues it.
func (ss *StreamSession) take(c *ChatChunk) {
	call := ss.c
	c.ID, c.Object, c.Created, c.Model = call.id, ObjectChunk, call.created, call.model.ID
	if c.Usage != nil {
		u := *c.Usage
		ss.usage, c.Usage = &u, nil
	}
	if len(c.Choices) == 0 {
		return // the usage chunk: usage rides on the final chunk
	}
	add := ss.count(c)
	if ss.usage != nil && ss.usage.CompletionTokens > ss.out+add {
		add = ss.usage.CompletionTokens - ss.out // upstreams that report usage as they go
	}
	if call.model.Cost(call.prompt, ss.out+add) > call.maxCost {
		ss.exhaust()
		return
	}
	ss.out += add
	if ss.pending != nil {
		ss.outbox = append(ss.outbox, ss.pending)
		ss.pending = nil
	}
	for _, ch := range c.Choices {
		if ch.FinishReason != nil {
			ss.pending = c
			return
		}
	}
	ss.outbox = append(ss.outbox, c)
}

// count records a chunk's generated text and estimates its tokens: one
// per non-empty choice delta at least, by pre-tokenizer pieces while the
// output is far from what the hold pays for, by the tokenizer near it.
func (ss *StreamSession) count(c *ChatChunk) int64 {
	var n int64
	for _, ch := range c.Choices {
		start := ss.text.Len()
		ss.text.WriteString(ch.Delta.Content)
		ss.text.WriteString(ch.Delta.ReasoningContent)
		for _, tc := range ch.Delta.ToolCalls {
			ss.text.WriteString(tc.Function.Name)
			ss.text.WriteString(tc.Function.Arguments)
		}
		delta := ss.text.String()[start:]
		if delta == "" {
			continue
		}
		var k int64
		if ss.exactMode {
			k = int64(ss.c.s.tokens.CountTokens(delta))
		} else {
			k = ss.pieces.add(delta)
		}
		n += max(k, 1)
	}
	if !ss.exactMode && ss.exactFrom > 0 && ss.out+n >= ss.exactFrom {
		ss.exactMode = true
		exact := int64(ss.c.s.tokens.CountTokens(ss.text.String()))
		if exact-ss.out > n {
			n = exact - ss.out
		}
	}
	return n
}

// usageOrCount is the upstream's usage, or the counted prompt and
// generated text.
func (ss *StreamSession) usageOrCount() Usage {
	var u Usage
	if ss.usage != nil && (ss.usage.PromptTokens > 0 || ss.usage.CompletionTokens > 0) {
		u = *ss.usage
	} else {
		u.PromptTokens = ss.c.exactPrompt()
		u.CompletionTokens = int64(ss.c.s.tokens.CountTokens(ss.text.String()))
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// finish ends a stream the upstream completed: bill, then queue the final
// chunk with usage.
func (ss *StreamSession) finish() {
	u := ss.usageOrCount()
	last := ss.pending
	ss.pending = nil
	if last == nil {
		call := ss.c
		last = &ChatChunk{ID: call.id, Object: ObjectChunk, Created: call.created, Model: call.model.ID, Choices: []ChunkChoice{}}
	}
	last.Usage = &u
	// Close before cancelling: the upstream ended normally, and Close
	// lets its connection go back to the pool (a cancelled request would
	// close it).
	_ = ss.up.Close()
	ss.cancel(nil)
	if err := ss.settle(u, ss.c.model.Cost(u.PromptTokens, u.CompletionTokens)); err != nil {
		ss.final = streamFailure(err)
		return
	}
	ss.outbox = append(ss.outbox, last)
	ss.final = io.EOF
}

// fail ends a stream whose upstream failed or whose caller went away,
// billing what was generated.
func (ss *StreamSession) fail(err error) {
	if ss.pending != nil && ss.ctx.Err() == nil {
		// Every choice had finished; only usage or [DONE] went missing.
		ss.c.s.log.Info("inference: upstream failed after the answer finished", "id", ss.c.id, "err", err)
		ss.finish()
		return
	}
	if ss.ctx.Err() != nil {
		err = fault.Wrap(context.Cause(ss.ctx), fault.Canceled, MsgCanceled)
	}
	ss.c.s.log.Info("inference: stream failed", "id", ss.c.id, "err", err)
	ss.cancel(nil)
	_ = ss.up.Close()
	u := ss.usageOrCount()
	if serr := ss.settle(u, ss.c.model.Cost(u.PromptTokens, u.CompletionTokens)); serr != nil {
		err = serr
	}
	ss.final = streamFailure(err)
}

// exhaust ends a stream whose next chunk would cost more than the hold
// pays for (call.maxCost): the upstream is cancelled, that is billed in
// full, and the stream ends with the credit-limit event.
func (ss *StreamSession) exhaust() {
	ss.cancel(errors.New("credit limit reached"))
	_ = ss.up.Close()
	if ss.pending != nil {
		ss.outbox = append(ss.outbox, ss.pending)
		ss.pending = nil
	}
	u := Usage{PromptTokens: ss.c.exactPrompt(), CompletionTokens: int64(ss.c.s.tokens.CountTokens(ss.text.String()))}
	if ss.usage != nil && ss.usage.PromptTokens > 0 {
		u.PromptTokens = ss.usage.PromptTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if err := ss.settle(u, ss.c.maxCost); err != nil {
		ss.final = streamFailure(err)
		return
	}
	ss.final = creditsExhausted()
}

// settle bills once.
func (ss *StreamSession) settle(u Usage, cost billing.MicroCents) error {
	if ss.settled {
		return ss.settleErr
	}
	ss.settled = true
	_, ss.settleErr = ss.c.settle(ss.ctx, u, cost, true)
	return ss.settleErr
}

// Close ends the session. If the stream had not ended (the client went
// away), it cancels the upstream and bills what was generated so far. It
// returns the billing error, if any, and is safe to call more than once.
func (ss *StreamSession) Close() error {
	ss.cancel(errSessionClosed)
	_ = ss.up.Close() // unblocks a Recv in flight
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.settled {
		u := ss.usageOrCount()
		_ = ss.settle(u, ss.c.model.Cost(u.PromptTokens, u.CompletionTokens))
		if ss.final == nil {
			ss.final = streamFailure(fault.Wrap(errSessionClosed, fault.Canceled, MsgCanceled))
		}
		ss.outbox = nil
	}
	return ss.settleErr
}
