// Package billing is Perceptron's money: a prepaid credit ledger per wallet,
// holds for in-flight work, on-chain USDT purchases, reward points and
// hourly subscriptions.
//
// # Units
//
// Amounts are [MicroCents]: integer millionths of a US cent. A model price
// in cents per million tokens times a token count is then an exact integer,
// so a thousand requests costing a fraction of a cent each add up exactly.
// The API shows integer cents, rounded once, at the edge, from exact sums:
// balances round down ([MicroCents.FloorCents]), so the API never shows
// money a wallet does not have; spending (costs and burn rates) rounds up
// ([MicroCents.CeilCents]), so a wallet that spent anything never sees 0;
// a history entry's amount is the change it made to the shown balance
// (see [HistoryEntry]), so a debit never shows as a credit and the shown
// amounts add up to the shown balance.
//
// # Guarantees
//
// The [Ledger] store enforces the invariants itself, in one transaction per
// operation, so they hold across server processes sharing one PostgreSQL:
// the available balance (balance minus open holds) never goes below zero;
// the sum of an account's entries equals its balance; an operation retried
// with the same idempotency key is applied once; a (chain ID, transaction
// hash) pair is credited at most once.
//
// # Rules every store applies
//
// Accounts are wallet addresses, "0x" and 40 hex digits, keyed in lower
// case ([NormalizeAccount]); a credit is a Purchase or a Grant, and a
// debit, a settlement or a subscription's charge is of an inference, feed
// or domain type ([TxType.Credits], [TxType.Debits]); anything else is
// fault.Invalid. The rules are written here once; every backend applies
// them through one shared validation step before it touches its data
// (storage/internal/billrules), so a [Ledger] from any store refuses the
// same requests.
package billing

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// MicroCents is an amount of money in millionths of a US cent.
type MicroCents int64

// Units.
const (
	// MicroCent is the smallest unit.
	MicroCent MicroCents = 1
	// Cent is one US cent.
	Cent MicroCents = 1_000_000
	// Dollar is one US dollar.
	Dollar MicroCents = 100 * Cent
)

// FromCents converts whole cents.
func FromCents(c int64) MicroCents { return MicroCents(c) * Cent }

// FloorCents rounds down to whole cents (towards minus infinity).
func (m MicroCents) FloorCents() int64 {
	c := int64(m / Cent)
	if m%Cent < 0 {
		c--
	}
	return c
}

// CeilCents rounds up to whole cents (towards plus infinity).
func (m MicroCents) CeilCents() int64 { return -(-m).FloorCents() }

// TxType is the kind of a ledger entry.
type TxType string

// Entry types, as the API names them. Purchase and Grant credit an
// account; the others debit it (see [TxType.Credits], [TxType.Debits]).
const (
	Purchase      TxType = "Purchase"
	ChatInference TxType = "ChatInference"
	SttInference  TxType = "SttInference"
	NewsFeed      TxType = "NewsFeed"
	Domain        TxType = "Domain"
	// Grant is free credit an operator gives a wallet (a trial, a
	// refund, a prize): it adds to the balance like a Purchase, but is
	// not one. It carries no payment, does not count as a completed
	// purchase ([Ledger.HasCompletedPurchase]) and awards no purchase
	// points; the history shows it with its type.
	Grant TxType = "Grant"
)

// Credits reports whether entries of type t may add money to an
// account: Purchase and Grant.
func (t TxType) Credits() bool { return t == Purchase || t == Grant }

// Debits reports whether entries of type t may take money from an
// account (a debit, a settled hold, a subscription's charge): the
// inference, feed and domain types.
func (t TxType) Debits() bool {
	switch t {
	case ChatInference, SttInference, NewsFeed, Domain:
		return true
	}
	return false
}

// NormalizeAccount returns the ledger's key for a wallet address: its
// lowercase form, "0x" and 40 hex digits, as the rest of the platform
// writes addresses. Surrounding space and upper case are accepted;
// anything else is fault.Invalid.
func NormalizeAccount(a string) (string, error) {
	a = strings.ToLower(strings.TrimSpace(a))
	if a == "" {
		return "", fault.New(fault.Invalid, "account is required")
	}
	if len(a) != 42 || a[:2] != "0x" {
		return "", fault.New(fault.Invalid, "account must be a wallet address: 0x and 40 hex digits")
	}
	for _, c := range a[2:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fault.New(fault.Invalid, "account must be a wallet address: 0x and 40 hex digits")
		}
	}
	return a, nil
}

// CheckCredit refuses a credit of a type that does not credit, and a
// Grant that carries a payment: fault.Invalid.
func CheckCredit(t TxType, chainID uint64, txHash string) error {
	if !t.Credits() {
		return fault.Newf(fault.Invalid, "entry type %q cannot credit an account: credits are Purchase or Grant", t)
	}
	if t == Grant && (chainID != 0 || txHash != "") {
		return fault.New(fault.Invalid, "a Grant carries no payment: chain ID and transaction hash must be empty")
	}
	return nil
}

// CheckDebit refuses a debit (a debit, a settlement, a subscription's
// charge) of a type that does not debit: fault.Invalid.
func CheckDebit(t TxType) error {
	if !t.Debits() {
		return fault.Newf(fault.Invalid, "entry type %q cannot debit an account: debits are ChatInference, SttInference, NewsFeed or Domain", t)
	}
	return nil
}

// TxStatus is an entry's state.
type TxStatus string

// Entry statuses.
const (
	Pending   TxStatus = "Pending"
	Completed TxStatus = "Completed"
	Failed    TxStatus = "Failed"
)

// Entry is one line of an account's ledger.
type Entry struct {
	// ID is a UUID.
	ID string
	// Account is the wallet address, lowercase.
	Account string
	// Type says what the money was for.
	Type TxType
	// Status is Completed for every entry the ledger writes today.
	Status TxStatus
	// Amount is signed: positive credits, negative debits.
	Amount MicroCents
	// BalanceAfter is the account's balance right after this entry.
	BalanceAfter MicroCents
	// Description is shown to the user.
	Description string
	// ChainID and TxHash identify the on-chain payment of a Purchase.
	ChainID uint64
	TxHash  string
	// Usage is set on inference entries.
	Usage *Usage
	// IdempotencyKey, if set, makes the operation apply once per account.
	IdempotencyKey string
	// CreatedAt is when the request behind the entry was made. Entries of
	// one account are ordered by Seq, not by CreatedAt: two requests made
	// at nearly the same time may reach the ledger in either order.
	CreatedAt time.Time
	// Seq is the entry's place in the ledger: a store assigns increasing
	// values in the order it applied entries, so for consecutive entries
	// of one account BalanceAfter differs by exactly the later Amount.
	// Seq is set on the entries Entries returns; values are unique
	// within a store and need not be contiguous.
	Seq int64
}

// Usage records what an inference entry paid for; metrics read it.
type Usage struct {
	Model        string
	InputTokens  int64
	OutputTokens int64
}

// Posting asks for a credit or a debit.
type Posting struct {
	Account     string
	Type        TxType
	Amount      MicroCents // positive; Credit adds it, Debit subtracts it
	Description string
	// ChainID and TxHash (lowercase 0x-hex) are set for purchases; the pair
	// is unique across the ledger (fault.Conflict on a second use).
	ChainID uint64
	TxHash  string
	Usage   *Usage
	// IdempotencyKey, if not empty, makes a retried posting return the
	// first result; a different posting under the same key is fault.Conflict.
	IdempotencyKey string
	At             time.Time
}

// Balance is an account's money.
type Balance struct {
	// Total is the sum of all entries.
	Total MicroCents
	// Held is the sum of open holds.
	Held MicroCents
}

// Available is what may still be held or debited.
func (b Balance) Available() MicroCents { return b.Total - b.Held }

// HoldRequest asks to reserve money.
type HoldRequest struct {
	Account string
	Amount  MicroCents // positive
	// MinAmount, when > 0, makes this a "hold up to" request: the store
	// holds min(Amount, available) provided available >= MinAmount, else
	// it returns fault.InsufficientFunds. The returned [Hold.Amount] says
	// what was held. The amount is decided by the store in the same atomic
	// operation that reserves it, so no earlier read of the balance is
	// needed and concurrent holds cannot overdraw. 0 (the default) keeps
	// the exact behaviour: hold Amount or nothing. It must not be negative
	// nor exceed Amount (fault.Invalid); MinAmount == Amount is an exact
	// hold. It is part of the request an idempotency key stands for.
	MinAmount MicroCents
	// ExpiresAt is when an unresolved hold is released by
	// [Ledger.ReleaseExpiredHolds] (after a crash, for example).
	ExpiresAt      time.Time
	IdempotencyKey string
	At             time.Time
}

// Hold is reserved money.
type Hold struct {
	ID        string
	Account   string
	Amount    MicroCents
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Settlement resolves a hold into a debit of Amount (at most the hold's
// amount, unless ExceedHold); the rest is released.
type Settlement struct {
	HoldID string
	Amount MicroCents
	Type   TxType
	// ExceedHold lets Amount exceed the hold: the excess is taken from
	// the account's available balance (its balance less every open hold,
	// this one included) in the same atomic operation, capped at what is
	// available, so the balance never goes below zero. The entry's Amount
	// says what was debited: less than Amount when the account could not
	// cover it. Without it, Amount is clamped to the hold.
	ExceedHold  bool
	Description string
	Usage       *Usage
	At          time.Time
}

// EntryFilter narrows [Ledger.Entries].
type EntryFilter struct {
	// Since and Until bound CreatedAt (Since inclusive, Until exclusive);
	// zero means unbounded.
	Since, Until time.Time
	// Types keeps only these types; empty means all.
	Types []TxType
}

// Sizes of a page of [Ledger.Entries]: the default, and the most a
// request gets.
const (
	EntriesPageSize = 100
	EntriesPageMax  = 1000
)

// EntryKey is an entry's place in the ledger's pages: its Seq, and its
// ID for ties (there are none: Seq is unique).
func EntryKey(e Entry) page.Key { return page.Key{Order: e.Seq, ID: e.ID} }

// PointsKey is an award's place in the pages of PointsHistory.
func PointsKey(e PointsEntry) page.Key { return page.Key{Order: e.CreatedAt.UnixMicro(), ID: e.ID} }

// AllPoints reads every award of the account, page by page, newest first.
func AllPoints(ctx context.Context, ps PointsStore, account string) ([]PointsEntry, error) {
	out := []PointsEntry{}
	for r := (page.Request{Limit: EntriesPageMax}); ; {
		p, err := ps.PointsHistory(ctx, account, r)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if !p.More {
			return out, nil
		}
		r.After = p.Next
	}
}

// AllEntries reads every entry of the account that f selects, page by
// page, and returns them oldest first: for tests, tools and small
// accounts; a long history is better read a page at a time.
func AllEntries(ctx context.Context, l Ledger, account string, f EntryFilter) ([]Entry, error) {
	var newest []Entry
	for r := (page.Request{Limit: EntriesPageMax}); ; {
		p, err := l.Entries(ctx, account, f, r)
		if err != nil {
			return nil, err
		}
		newest = append(newest, p.Items...)
		if !p.More {
			break
		}
		r.After = p.Next
	}
	slices.Reverse(newest)
	if newest == nil {
		newest = []Entry{}
	}
	return newest, nil
}

// Ledger is the store behind account balances. Every method is atomic.
type Ledger interface {
	// Credit adds p.Amount to the account, creating it if needed.
	Credit(ctx context.Context, p Posting) (Entry, error)
	// Debit subtracts p.Amount if the available balance covers it, else
	// returns fault.InsufficientFunds.
	Debit(ctx context.Context, p Posting) (Entry, error)
	// PlaceHold reserves r.Amount if the available balance covers it, else
	// returns fault.InsufficientFunds. With r.MinAmount > 0 it reserves
	// min(r.Amount, available) if that is at least r.MinAmount (see
	// [HoldRequest.MinAmount]); the returned Hold.Amount is what was held.
	// A retry under the same idempotency key returns the first hold.
	PlaceHold(ctx context.Context, r HoldRequest) (Hold, error)
	// SettleHold debits s.Amount (clamped to the hold, or with
	// s.ExceedHold to the hold plus the available balance) and releases
	// the rest of the hold, writing one entry. A hold resolves once: a second settle or a
	// settle of a released hold is fault.NotFound.
	SettleHold(ctx context.Context, s Settlement) (Entry, error)
	// ReleaseHold releases the hold without a debit; fault.NotFound if it
	// is not open.
	ReleaseHold(ctx context.Context, holdID string) error
	// ReleaseExpiredHolds releases every hold that expired at or before now.
	ReleaseExpiredHolds(ctx context.Context, now time.Time) (int, error)
	// Balance returns the account's balance; zero for an unknown account.
	Balance(ctx context.Context, account string) (Balance, error)
	// Entries returns a page of the account's entries that f selects,
	// newest first in ledger order (descending Seq, keyed by [EntryKey]),
	// of p.Size(EntriesPageSize, EntriesPageMax) entries at most. Stores
	// keep an index on (account, Seq), so that a page costs its size, not
	// the account's history.
	Entries(ctx context.Context, account string, f EntryFilter, p page.Request) (page.Page[Entry], error)
	// HasCompletedPurchase reports whether the account has a completed
	// Purchase entry (a Grant is not one).
	HasCompletedPurchase(ctx context.Context, account string) (bool, error)
}

// PointsEntry is one award of reward points.
type PointsEntry struct {
	ID          string
	Account     string
	Trigger     string
	Points      int64
	Description string
	Metadata    map[string]any
	// IdempotencyKey, if set, makes the award happen once per account.
	IdempotencyKey string
	CreatedAt      time.Time
}

// Point triggers.
const (
	TriggerWelcomeBonus   = "welcome_bonus"
	TriggerCreditPurchase = "credit_purchase"
	TriggerChatUsage      = "chat_usage"
	TriggerFeedActive     = "feed_active"
	TriggerDomainActive   = "domain_active"
)

// PointsStore keeps reward points, a ledger separate from money.
type PointsStore interface {
	// AwardPoints stores e. With an IdempotencyKey already used by the
	// account it stores nothing and returns the earlier entry.
	AwardPoints(ctx context.Context, e PointsEntry) (PointsEntry, error)
	// PointsBalance is the sum of the account's awards.
	PointsBalance(ctx context.Context, account string) (int64, error)
	// PointsHistory returns a page of the account's awards, newest first
	// by CreatedAt, ties by ID (keyed by [PointsKey]), of
	// p.Size(EntriesPageSize, EntriesPageMax) awards at most.
	PointsHistory(ctx context.Context, account string, p page.Request) (page.Page[PointsEntry], error)
}

// SubStatus is a subscription's state.
type SubStatus string

// Subscription states.
const (
	SubActive    SubStatus = "Active"
	SubInactive  SubStatus = "Inactive"  // lapsed for lack of funds
	SubCancelled SubStatus = "Cancelled" // cancelled by its owner
)

// Subscription is an hourly charge for a resource (a domain, a feed).
type Subscription struct {
	ID       string
	Account  string
	Kind     string // "domain", "feed", ...
	Resource string // what is subscribed to, e.g. a domain ID or "news"
	// Type is the ledger entry type of its charges.
	Type       TxType
	HourlyCost MicroCents
	// Anchor is when it started; periods are Anchor + k hours.
	Anchor time.Time
	// PrepaidUntil is the end of the last charged period.
	PrepaidUntil time.Time
	Status       SubStatus
	CreatedAt    time.Time
	EndedAt      time.Time
	// Exclusive makes the resource one account's at a time: while the
	// subscription is active, no other account may create an active
	// subscription of the same kind and resource (a subdomain). Of two
	// accounts racing for one, exactly one wins; the other's first charge
	// is never made (fault.Conflict).
	Exclusive bool
}

// SubscriptionStore keeps subscriptions and charges their periods.
type SubscriptionStore interface {
	// CreateSubscription debits the first period (first) and stores s with
	// PrepaidUntil = Anchor + 1h, in one transaction. fault.InsufficientFunds
	// if the balance cannot cover it; fault.Conflict if the account has an
	// active subscription of the same kind and resource, or if s or an
	// active subscription of another account to it is Exclusive (nothing is
	// charged then).
	CreateSubscription(ctx context.Context, s Subscription, first Posting) (Subscription, Entry, error)
	// ChargePeriod charges the period starting at periodStart, which must
	// equal the subscription's PrepaidUntil (compare-and-swap), and advances
	// PrepaidUntil by one hour. A period is charged at most once, ever
	// (unique per subscription and period). If the period was already
	// charged or PrepaidUntil moved, it returns fault.Conflict and charges
	// nothing. If funds are short it marks the subscription Inactive and
	// returns fault.InsufficientFunds.
	ChargePeriod(ctx context.Context, subID string, periodStart time.Time, p Posting) (Subscription, Entry, error)
	// DueSubscriptions returns up to limit active subscriptions whose
	// PrepaidUntil is at or before now.
	DueSubscriptions(ctx context.Context, now time.Time, limit int) ([]Subscription, error)
	// CancelSubscription marks an active subscription Cancelled (no refund).
	// fault.NotFound if the account has no such active subscription.
	CancelSubscription(ctx context.Context, account, id string, now time.Time) error
	// GetSubscription returns a subscription by ID, or fault.NotFound.
	GetSubscription(ctx context.Context, id string) (Subscription, error)
	// ListSubscriptions returns the account's subscriptions, newest first.
	ListSubscriptions(ctx context.Context, account string) ([]Subscription, error)
}

// Store is everything billing keeps.
type Store interface {
	Ledger
	PointsStore
	SubscriptionStore
}
