package inference

import (
	"context"
	"errors"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// MsgAlreadyCharged is the message of [Service.ChargeUsage]'s
// fault.Conflict: the key was charged already.
const MsgAlreadyCharged = "already charged under this key"

// ReleaseHold releases a hold the service placed for a request, as
// [CallOptions.OnHold] reported it, for a caller that lost track of the
// request (it crashed): nil means the hold was still open, so the request
// was not billed, and now never will be; fault.NotFound means it was
// resolved already: settled (billed), or released without a debit (by
// the service when the request failed before its provider answered, or
// by the ledger once it expired, [Options.HoldTTL] after it was placed).
func (s *Service) ReleaseHold(ctx context.Context, holdID string) error {
	return s.ledger.ReleaseHold(ctx, holdID)
}

// PromptTokens counts a prompt as the check that refuses a prompt longer
// than the model's context does (o200k_base through the service's
// [TokenCounter]): PromptOverhead plus each message's [Service.MessageTokens].
func (s *Service) PromptTokens(msgs []Message) int64 { return countPrompt(s.tokens, msgs, nil) }

// PromptBound is an upper bound of [Service.PromptTokens] from the
// messages' sizes alone (a token is at least a byte), as the context check
// uses it to skip counting: a prompt within it needs no count.
func PromptBound(msgs []Message) int64 { return promptUpperBound(msgs, nil) }

// PromptOverhead is what a prompt counts beyond its messages.
const PromptOverhead = tokensPerReply

// MessageTokens counts one message of a prompt as [Service.PromptTokens]
// does.
func (s *Service) MessageTokens(m Message) int64 {
	return countPrompt(s.tokens, []Message{m}, nil) - tokensPerReply
}

// CountTokens counts text with the service's [TokenCounter].
func (s *Service) CountTokens(text string) int64 { return int64(s.tokens.CountTokens(text)) }

// ChargeUsage bills account for usage done outside a billed request (a
// persona's history summary, written through [Service.Model]'s unbilled
// provider and billed only once the reply it was made for is), at the
// catalog model's prices, in one ChatInference entry described as a
// request's ("Chat: <model> (<in> in / <out> out tokens) · <label>"),
// once per key: a second charge under the same key, with any usage,
// bills nothing and returns fault.Conflict ([MsgAlreadyCharged]). It
// bills at most the available balance (never a negative balance):
// fault.InsufficientFunds when nothing is available. Nothing is billed
// for a usage that costs nothing.
func (s *Service) ChargeUsage(ctx context.Context, account, modelID string, u Usage, label, key string) (billing.Entry, error) {
	if key == "" {
		return billing.Entry{}, fault.New(fault.Invalid, "a charge needs an idempotency key")
	}
	m, err := s.catalog.Lookup(modelID)
	if err != nil {
		return billing.Entry{}, err
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	cost := m.Cost(u.PromptTokens, u.CompletionTokens)
	if cost <= 0 {
		return billing.Entry{}, nil
	}
	now := s.now()
	// The hold's key stands for the charge: a retry finds the first hold
	// (settled: NotFound below), or a different amount under the key
	// (Conflict). Either way it was charged.
	h, err := s.ledger.PlaceHold(ctx, billing.HoldRequest{
		Account: account, Amount: cost, MinAmount: 1,
		ExpiresAt: now.Add(s.holdTTL), IdempotencyKey: key, At: now,
	})
	switch {
	case errors.Is(err, fault.Conflict):
		return billing.Entry{}, fault.Wrap(err, fault.Conflict, MsgAlreadyCharged)
	case errors.Is(err, fault.InsufficientFunds):
		return billing.Entry{}, fault.Wrap(err, fault.InsufficientFunds, MsgInsufficientCredits)
	case err != nil:
		return billing.Entry{}, ledgerError(ctx, err)
	}
	c := &call{s: s, id: newID(), account: account, model: m, created: now.Unix(), label: label, exact: -1, hold: h, maxCost: h.Amount}
	e, err := c.settle(ctx, u, cost, false)
	if errors.Is(err, fault.NotFound) {
		return billing.Entry{}, fault.Wrap(err, fault.Conflict, MsgAlreadyCharged)
	}
	return e, err
}
