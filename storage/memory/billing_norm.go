package memory

// This file is identical in the memory, sqlite and postgres packages (the
// package clause aside): request validation, normalisation and
// idempotency fingerprints must not differ between backends.

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// billTime returns t in UTC truncated to the microsecond the database
// keeps, or the current time when t is zero.
func billTime(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// billOptTime is billTime for optional times: zero stays zero.
func billOptTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// billID returns a new random ID.
func billID() string { return uuid.NewString() }

// billAccount normalises a wallet address: addresses are case-insensitive
// hex, so the ledger keys accounts by their lowercase form.
func billAccount(a string) (string, error) {
	a = strings.ToLower(strings.TrimSpace(a))
	if a == "" {
		return "", fault.New(fault.Invalid, "account is required")
	}
	return a, nil
}

// billPosting validates and normalises p in place.
func billPosting(p *billing.Posting) error {
	var err error
	if p.Account, err = billAccount(p.Account); err != nil {
		return err
	}
	if p.Amount <= 0 {
		return fault.New(fault.Invalid, "amount must be positive")
	}
	if p.Type == "" {
		return fault.New(fault.Invalid, "entry type is required")
	}
	p.TxHash = strings.ToLower(strings.TrimSpace(p.TxHash))
	if p.Usage != nil {
		u := *p.Usage
		p.Usage = &u
	}
	p.At = billTime(p.At)
	return nil
}

// billPostingFP is the idempotency fingerprint of a posting: what it does
// to the ledger (operation, type, amount, payment and usage). Description
// and time are left out, so a retry may carry a fresh timestamp.
func billPostingFP(op string, p billing.Posting) string {
	u := "-"
	if p.Usage != nil {
		u = fmt.Sprintf("%q/%d/%d", p.Usage.Model, p.Usage.InputTokens, p.Usage.OutputTokens)
	}
	return fmt.Sprintf("%s|%q|%d|%d|%q|%s", op, string(p.Type), int64(p.Amount), p.ChainID, p.TxHash, u)
}

// billHoldRequest validates and normalises r in place.
func billHoldRequest(r *billing.HoldRequest) error {
	var err error
	if r.Account, err = billAccount(r.Account); err != nil {
		return err
	}
	if r.Amount <= 0 {
		return fault.New(fault.Invalid, "amount must be positive")
	}
	if r.ExpiresAt.IsZero() {
		return fault.New(fault.Invalid, "hold expiry is required")
	}
	r.At = billTime(r.At)
	r.ExpiresAt = billTime(r.ExpiresAt)
	return nil
}

// billHoldFP is the idempotency fingerprint of a hold request: its amount
// (a retry may compute a fresh expiry).
func billHoldFP(r billing.HoldRequest) string { return fmt.Sprintf("hold|%d", int64(r.Amount)) }

// billSettlement validates and normalises s in place.
func billSettlement(s *billing.Settlement) error {
	if s.Amount < 0 {
		return fault.New(fault.Invalid, "settlement amount must not be negative")
	}
	if s.Type == "" {
		return fault.New(fault.Invalid, "entry type is required")
	}
	if s.Usage != nil {
		u := *s.Usage
		s.Usage = &u
	}
	s.At = billTime(s.At)
	return nil
}

// billSubscription validates and normalises a new subscription and its
// first posting in place: the posting's account and type default to the
// subscription's; the anchor defaults to the posting's time.
func billSubscription(s *billing.Subscription, first *billing.Posting) error {
	var err error
	if s.Account, err = billAccount(s.Account); err != nil {
		return err
	}
	if s.Kind == "" || s.Resource == "" {
		return fault.New(fault.Invalid, "subscription kind and resource are required")
	}
	if s.Type == "" {
		return fault.New(fault.Invalid, "entry type is required")
	}
	if s.HourlyCost <= 0 {
		return fault.New(fault.Invalid, "hourly cost must be positive")
	}
	if first.Account == "" {
		first.Account = s.Account
	}
	if first.Type == "" {
		first.Type = s.Type
	}
	if err := billPosting(first); err != nil {
		return err
	}
	if first.Account != s.Account {
		return fault.New(fault.Invalid, "first charge is for another account")
	}
	if s.ID == "" {
		s.ID = billID()
	}
	if s.Anchor.IsZero() {
		s.Anchor = first.At
	}
	s.Anchor = billTime(s.Anchor)
	s.PrepaidUntil = s.Anchor.Add(time.Hour)
	s.Status = billing.SubActive
	s.CreatedAt = first.At
	s.EndedAt = time.Time{}
	return nil
}

// billSubscriptionFP is the idempotency fingerprint of a subscription's
// first charge.
func billSubscriptionFP(s billing.Subscription, first billing.Posting) string {
	return billPostingFP(fmt.Sprintf("subscribe|%q|%q|%d|%d", s.Kind, s.Resource, int64(s.HourlyCost), s.Anchor.UnixMicro()), first)
}

// billCharge validates and normalises the posting of a period charge of
// sub in place.
func billCharge(sub billing.Subscription, p *billing.Posting) error {
	if p.Account == "" {
		p.Account = sub.Account
	}
	if p.Type == "" {
		p.Type = sub.Type
	}
	if err := billPosting(p); err != nil {
		return err
	}
	if p.Account != sub.Account {
		return fault.New(fault.Invalid, "charge is for another account")
	}
	return nil
}

// billPoints validates and normalises an award in place.
func billPoints(e *billing.PointsEntry) error {
	var err error
	if e.Account, err = billAccount(e.Account); err != nil {
		return err
	}
	if e.Trigger == "" {
		return fault.New(fault.Invalid, "points trigger is required")
	}
	if e.ID == "" {
		e.ID = billID()
	}
	e.CreatedAt = billTime(e.CreatedAt)
	return nil
}

// billEncodeMetadata encodes points metadata as JSON; nil stays nil.
func billEncodeMetadata(m map[string]any) (*string, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "points metadata is not representable as JSON")
	}
	s := string(b)
	return &s, nil
}

// billDecodeMetadata decodes stored points metadata. Numbers come back as
// float64, as encoding/json decodes them into map[string]any.
func billDecodeMetadata(s *string) (map[string]any, error) {
	if s == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(*s), &m); err != nil {
		return nil, fmt.Errorf("decode points metadata: %w", err)
	}
	return m, nil
}

// Errors with the public messages billing documents.

func billInsufficient() error { return fault.New(fault.InsufficientFunds, "insufficient credits") }

func billKeyConflict() error {
	return fault.New(fault.Conflict, "idempotency key already used for a different request")
}

func billAlreadyProcessed() error { return fault.New(fault.Conflict, billing.MsgAlreadyProcessed) }

func billHoldNotFound() error { return fault.New(fault.NotFound, "hold not found or already resolved") }

func billSubNotFound() error { return fault.New(fault.NotFound, "subscription not found") }

func billSubExists() error {
	return fault.New(fault.Conflict, "an active subscription for this resource already exists")
}

func billPeriodConflict() error {
	return fault.New(fault.Conflict, "period already charged or subscription moved on")
}

func billDuplicateID() error { return fault.New(fault.Conflict, "id already exists") }
