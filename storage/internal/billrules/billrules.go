// Package billrules holds the rules every billing store applies the same
// way, whatever the backend: request validation and normalisation,
// idempotency fingerprints, and the errors billing documents. The memory,
// sqlite and postgres stores all call it, so a request is accepted,
// normalised and fingerprinted identically whichever store keeps it.
//
// Fingerprints are persisted with idempotency keys: changing their format
// makes retries of requests recorded before the change conflict.
//
// The package keeps no state; every function is safe for concurrent use.
package billrules

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Time returns t in UTC truncated to the microsecond the database keeps,
// or the current time when t is zero.
func Time(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// OptTime is [Time] for optional times: zero stays zero.
func OptTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// NewID returns a new ID: a UUIDv7, random but ordered by creation time,
// so that inserting into an index of IDs appends to its last page instead
// of dirtying a random one per insert.
func NewID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// Account normalises a wallet address: addresses are case-insensitive
// hex, so the ledger keys accounts by their lowercase form; anything but
// "0x" and 40 hex digits is fault.Invalid ([billing.NormalizeAccount]).
func Account(a string) (string, error) { return billing.NormalizeAccount(a) }

// Credit validates and normalises the posting of a credit in place: a
// posting of a type that credits ([billing.CheckCredit]).
func Credit(p *billing.Posting) error {
	if err := posting(p); err != nil {
		return err
	}
	return billing.CheckCredit(p.Type, p.ChainID, p.TxHash)
}

// Debit validates and normalises the posting of a debit in place: a
// posting of a type that debits ([billing.CheckDebit]).
func Debit(p *billing.Posting) error {
	if err := posting(p); err != nil {
		return err
	}
	return billing.CheckDebit(p.Type)
}

// posting validates and normalises p in place, whatever its direction:
// stores call [Credit] or [Debit], which check its type too.
func posting(p *billing.Posting) error {
	var err error
	if p.Account, err = Account(p.Account); err != nil {
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
	p.At = Time(p.At)
	return nil
}

// PostingFP is the idempotency fingerprint of a posting: what it does to
// the ledger (operation, type, amount, payment and usage). Description
// and time are left out, so a retry may carry a fresh timestamp.
func PostingFP(op string, p billing.Posting) string {
	u := "-"
	if p.Usage != nil {
		u = fmt.Sprintf("%q/%d/%d", p.Usage.Model, p.Usage.InputTokens, p.Usage.OutputTokens)
	}
	return fmt.Sprintf("%s|%q|%d|%d|%q|%s", op, string(p.Type), int64(p.Amount), p.ChainID, p.TxHash, u)
}

// HoldRequest validates and normalises r in place. A MinAmount equal to
// Amount is normalised to 0: it asks for exactly the exact hold.
func HoldRequest(r *billing.HoldRequest) error {
	var err error
	if r.Account, err = Account(r.Account); err != nil {
		return err
	}
	if r.Amount <= 0 {
		return fault.New(fault.Invalid, "amount must be positive")
	}
	if r.MinAmount < 0 {
		return fault.New(fault.Invalid, "minimum hold amount must not be negative")
	}
	if r.MinAmount > r.Amount {
		return fault.New(fault.Invalid, "minimum hold amount must not exceed the amount")
	}
	if r.MinAmount == r.Amount {
		r.MinAmount = 0 // holding at least Amount and at most Amount is an exact hold
	}
	if r.ExpiresAt.IsZero() {
		return fault.New(fault.Invalid, "hold expiry is required")
	}
	r.At = Time(r.At)
	r.ExpiresAt = Time(r.ExpiresAt)
	return nil
}

// Settled is what the validated settlement s of a hold of held debits
// when avail is the account's available balance (its balance less every
// open hold, this one included): s.Amount clamped to the hold, or with
// s.ExceedHold to the hold plus what is available, so that the balance
// never goes below zero.
func Settled(s billing.Settlement, held, avail billing.MicroCents) billing.MicroCents {
	if s.Amount <= held || !s.ExceedHold {
		return min(s.Amount, held)
	}
	return held + min(s.Amount-held, max(avail, 0))
}

// HoldAmount is what the validated hold request r reserves when avail is
// available: r.Amount, or with r.MinAmount > 0 min(r.Amount, avail) if
// that is at least r.MinAmount; else fault.InsufficientFunds.
func HoldAmount(r billing.HoldRequest, avail billing.MicroCents) (billing.MicroCents, error) {
	need := r.Amount // the least the hold may be
	if r.MinAmount > 0 {
		need = r.MinAmount
	}
	if avail < need {
		return 0, Insufficient()
	}
	return min(r.Amount, avail), nil
}

// HoldFP is the idempotency fingerprint of a (normalised) hold request:
// its amount, and its minimum amount for a "hold up to" request (a retry
// may compute a fresh expiry). An exact hold (MinAmount 0) keeps the
// format fingerprints had before MinAmount existed, so keys recorded then
// still match their retries.
func HoldFP(r billing.HoldRequest) string {
	if r.MinAmount > 0 {
		return fmt.Sprintf("hold|%d|%d", int64(r.Amount), int64(r.MinAmount))
	}
	return fmt.Sprintf("hold|%d", int64(r.Amount))
}

// Settlement validates and normalises s in place.
func Settlement(s *billing.Settlement) error {
	if s.Amount < 0 {
		return fault.New(fault.Invalid, "settlement amount must not be negative")
	}
	if s.Type == "" {
		return fault.New(fault.Invalid, "entry type is required")
	}
	if err := billing.CheckDebit(s.Type); err != nil {
		return err
	}
	if s.Usage != nil {
		u := *s.Usage
		s.Usage = &u
	}
	s.At = Time(s.At)
	return nil
}

// Subscription validates and normalises a new subscription and its first
// posting in place: the posting's account and type default to the
// subscription's; the anchor defaults to the posting's time.
func Subscription(s *billing.Subscription, first *billing.Posting) error {
	var err error
	if s.Account, err = Account(s.Account); err != nil {
		return err
	}
	if s.Kind == "" || s.Resource == "" {
		return fault.New(fault.Invalid, "subscription kind and resource are required")
	}
	if s.Type == "" {
		return fault.New(fault.Invalid, "entry type is required")
	}
	if err := billing.CheckDebit(s.Type); err != nil {
		return err
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
	if err := Debit(first); err != nil {
		return err
	}
	if first.Account != s.Account {
		return fault.New(fault.Invalid, "first charge is for another account")
	}
	if s.ID == "" {
		s.ID = NewID()
	}
	if s.Anchor.IsZero() {
		s.Anchor = first.At
	}
	s.Anchor = Time(s.Anchor)
	s.PrepaidUntil = s.Anchor.Add(time.Hour)
	s.Status = billing.SubActive
	s.CreatedAt = first.At
	s.EndedAt = time.Time{}
	return nil
}

// SubscriptionFP is the idempotency fingerprint of a subscription's first
// charge.
func SubscriptionFP(s billing.Subscription, first billing.Posting) string {
	op := fmt.Sprintf("subscribe|%q|%q|%d|%d", s.Kind, s.Resource, int64(s.HourlyCost), s.Anchor.UnixMicro())
	if s.Exclusive {
		op += "|exclusive" // only then: stored fingerprints of earlier subscriptions stay as they were
	}
	return PostingFP(op, first)
}

// Charge validates and normalises the posting of a period charge of sub
// in place.
func Charge(sub billing.Subscription, p *billing.Posting) error {
	if p.Account == "" {
		p.Account = sub.Account
	}
	if p.Type == "" {
		p.Type = sub.Type
	}
	if err := Debit(p); err != nil {
		return err
	}
	if p.Account != sub.Account {
		return fault.New(fault.Invalid, "charge is for another account")
	}
	return nil
}

// Points validates and normalises an award in place.
func Points(e *billing.PointsEntry) error {
	var err error
	if e.Account, err = Account(e.Account); err != nil {
		return err
	}
	if e.Trigger == "" {
		return fault.New(fault.Invalid, "points trigger is required")
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	e.CreatedAt = Time(e.CreatedAt)
	return nil
}

// EncodeMetadata encodes points metadata as JSON; nil stays nil.
func EncodeMetadata(m map[string]any) (*string, error) {
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

// DecodeMetadata decodes stored points metadata. Numbers come back as
// float64, as encoding/json decodes them into map[string]any.
func DecodeMetadata(s *string) (map[string]any, error) {
	if s == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(*s), &m); err != nil {
		return nil, fmt.Errorf("decode points metadata: %w", err)
	}
	return m, nil
}

// Errors with the public messages billing documents. Each call returns a
// fresh error, so no caller can alter another's.

// Insufficient reports that an account's available balance (balance less
// open holds) cannot cover a debit or hold.
func Insufficient() error { return fault.New(fault.InsufficientFunds, "insufficient credits") }

// KeyConflict reports an idempotency key reused for a request with a
// different fingerprint.
func KeyConflict() error {
	return fault.New(fault.Conflict, "idempotency key already used for a different request")
}

// AlreadyProcessed reports a posting whose payment (chain and transaction
// hash) the ledger already recorded.
func AlreadyProcessed() error { return fault.New(fault.Conflict, billing.MsgAlreadyProcessed) }

// HoldNotFound reports a hold that does not exist or was already settled
// or released.
func HoldNotFound() error { return fault.New(fault.NotFound, "hold not found or already resolved") }

// SubNotFound reports a subscription that does not exist.
func SubNotFound() error { return fault.New(fault.NotFound, "subscription not found") }

// SubExists reports a second active subscription for one resource.
func SubExists() error {
	return fault.New(fault.Conflict, "an active subscription for this resource already exists")
}

// PeriodConflict reports a period charge that lost to another: the period
// was already charged or the subscription has moved on.
func PeriodConflict() error {
	return fault.New(fault.Conflict, "period already charged or subscription moved on")
}

// DuplicateID reports a caller-chosen ID that is already taken.
func DuplicateID() error { return fault.New(fault.Conflict, "id already exists") }
