package billing

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// MinPurchase is the smallest credit purchase.
const MinPurchase = 5 * Dollar

// LapseFunc is told that a subscription lapsed for lack of funds.
type LapseFunc func(ctx context.Context, s Subscription)

// Options configures a [Service]. The zero value is usable.
type Options struct {
	// Verifier checks on-chain payments. Nil refuses purchases as
	// unavailable.
	Verifier PaymentVerifier
	// Points are the reward rules. The zero value means [DefaultPointsRules].
	Points *PointsRules
	// OnLapse holds, per subscription kind ("domain", "feed", ...), what
	// is called when a subscription of that kind becomes inactive because
	// the balance could not pay its next hour: each domain registers its
	// own (a domain closes its tunnel, a feed stops), and adding a kind
	// changes none of the others. Kinds without a handler just lapse.
	OnLapse map[string]LapseFunc
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics. Nil discards them.
	Logger *slog.Logger
}

// PointsRules says how many points each trigger awards. A negative value
// disables a trigger.
type PointsRules struct {
	// WelcomeBonus is awarded once, on a wallet's first purchase.
	WelcomeBonus int64
	// PerDollarPurchased is awarded per whole dollar of each purchase.
	PerDollarPurchased int64
	// ChatPer1KTokens is awarded per thousand chat tokens of a request
	// (rounded down; requests under a thousand tokens earn nothing).
	ChatPer1KTokens int64
	// FeedActivePerHour is awarded per paid hour of a feed subscription.
	FeedActivePerHour int64
	// DomainActivePerHour is awarded per paid hour of a domain.
	DomainActivePerHour int64
}

// DefaultPointsRules are the rules used when none are configured.
func DefaultPointsRules() PointsRules {
	return PointsRules{
		WelcomeBonus:        250,
		PerDollarPurchased:  10,
		ChatPer1KTokens:     1,
		FeedActivePerHour:   1,
		DomainActivePerHour: 1,
	}
}

// Service is the billing API over a [Store]: purchases, balances, history,
// points, subscriptions and metrics. Embedding programs may also use the
// [Ledger] it exposes directly, with the same guarantees.
type Service struct {
	store    Store
	verifier PaymentVerifier
	rules    PointsRules
	onLapse  map[string]LapseFunc
	now      func() time.Time
	log      *slog.Logger
}

// NewService returns a billing service over store.
func NewService(store Store, opts Options) *Service {
	s := &Service{store: store, verifier: opts.Verifier, onLapse: opts.OnLapse, now: opts.Now, log: opts.Logger}
	if opts.Points != nil {
		s.rules = *opts.Points
	} else {
		s.rules = DefaultPointsRules()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Ledger returns the underlying ledger, for embedding programs that credit,
// debit and hold directly.
func (s *Service) Ledger() Ledger { return s.store }

// Store returns the underlying store.
func (s *Service) Store() Store { return s.store }

// Balance returns the account's balance.
func (s *Service) Balance(ctx context.Context, account string) (Balance, error) {
	return s.store.Balance(ctx, account)
}

// HasCompletedPurchase reports whether the account ever completed a
// purchase; it implements auth.PurchaseChecker.
func (s *Service) HasCompletedPurchase(ctx context.Context, account string) (bool, error) {
	return s.store.HasCompletedPurchase(ctx, account)
}

// Grant gives account amount of free credit: one Grant entry with the
// description shown in its history. It is how an operator credits a
// wallet without a payment (a trial, a refund, a prize): unlike a
// Purchase it does not count as a completed purchase and awards no
// points. A non-empty key makes it apply once (a retry under the same
// key returns the first entry; another grant under it is
// fault.Conflict). Errors: fault.Invalid for an account that is not a
// wallet address or an amount that is not positive.
func (s *Service) Grant(ctx context.Context, account string, amount MicroCents, description, key string) (Entry, error) {
	return s.store.Credit(ctx, Posting{
		Account: account, Type: Grant, Amount: amount, Description: description,
		IdempotencyKey: key, At: s.now(),
	})
}

// ReceivingAddress is where users send USDT, or "" if no verifier is set.
func (s *Service) ReceivingAddress() string {
	if s.verifier == nil {
		return ""
	}
	return s.verifier.ReceivingAddress()
}

// PurchaseRequest is the body of POST /api/credits/purchase.
type PurchaseRequest struct {
	TxHash  string
	Token   string
	Amount  string
	ChainID uint64
}

// PurchaseResult is what a purchase did.
type PurchaseResult struct {
	Entry      Entry
	Credited   MicroCents
	NewBalance MicroCents
}

// isTxHash reports whether h is 0x followed by 64 lowercase hex digits.
func isTxHash(h string) bool {
	if len(h) != 66 || h[:2] != "0x" {
		return false
	}
	for _, c := range h[2:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Purchase verifies an on-chain USDT transfer from account to the receiving
// address and credits its amount, once per (chain, transaction). The
// checks, in order: amount format, the $5 minimum, token, hash format,
// then the chain (unknown chain, receipt, token contract, sender,
// recipient, exact value, canonical block, age), then uniqueness.
func (s *Service) Purchase(ctx context.Context, account string, req PurchaseRequest) (PurchaseResult, error) {
	amount, err := ParseDollars(req.Amount)
	if err != nil {
		return PurchaseResult{}, err
	}
	if amount < MinPurchase {
		return PurchaseResult{}, fault.New(fault.Invalid, MsgMinimumPurchase)
	}
	if !strings.EqualFold(strings.TrimSpace(req.Token), "USDT") {
		return PurchaseResult{}, fault.Newf(fault.Invalid, "unsupported token %q: only USDT is accepted", req.Token)
	}
	hash := strings.ToLower(strings.TrimSpace(req.TxHash))
	if !isTxHash(hash) {
		return PurchaseResult{}, fault.New(fault.Invalid, "invalid tx_hash: want 0x followed by 64 hex digits")
	}
	if req.ChainID == 0 {
		return PurchaseResult{}, fault.New(fault.Invalid, "chain_id is required")
	}
	if s.verifier == nil {
		return PurchaseResult{}, fault.New(fault.Unavailable, "purchases are not configured on this server")
	}
	paid, err := s.verifier.VerifyPayment(ctx, PaymentClaim{
		ChainID: req.ChainID, TxHash: hash, Token: "USDT", From: account, Amount: amount,
	})
	if err != nil {
		return PurchaseResult{}, err
	}
	now := s.now()
	e, err := s.store.Credit(ctx, Posting{
		Account:     account,
		Type:        Purchase,
		Amount:      paid.Amount,
		Description: fmt.Sprintf("Purchased %s credits with USDT (tx: %s)", FormatDollars(paid.Amount), hash),
		ChainID:     req.ChainID,
		TxHash:      hash,
		At:          now,
	})
	if err != nil {
		if fault.CodeOf(err) == fault.Conflict {
			return PurchaseResult{}, fault.Wrap(err, fault.Conflict, MsgAlreadyProcessed)
		}
		return PurchaseResult{}, err
	}
	s.awardPurchasePoints(ctx, account, e, paid.Amount)
	return PurchaseResult{Entry: e, Credited: paid.Amount, NewBalance: e.BalanceAfter}, nil
}

// awardPurchasePoints awards the welcome bonus (once) and per-dollar
// points. Points never fail a purchase: errors are logged.
func (s *Service) awardPurchasePoints(ctx context.Context, account string, e Entry, amount MicroCents) {
	cents := amount.FloorCents()
	meta := map[string]any{"purchase_amount_cents": cents, "tx_hash": e.TxHash, "chain_id": e.ChainID}
	if s.rules.WelcomeBonus > 0 {
		s.award(ctx, PointsEntry{
			Account: account, Trigger: TriggerWelcomeBonus, Points: s.rules.WelcomeBonus,
			Description:    fmt.Sprintf("Welcome bonus: first purchase of %s credits", FormatDollars(amount)),
			Metadata:       map[string]any{"purchase_amount_cents": cents},
			IdempotencyKey: TriggerWelcomeBonus,
		})
	}
	if n := s.rules.PerDollarPurchased * (cents / 100); n > 0 {
		s.award(ctx, PointsEntry{
			Account: account, Trigger: TriggerCreditPurchase, Points: n,
			Description:    fmt.Sprintf("Credit purchase of %s", FormatDollars(amount)),
			Metadata:       meta,
			IdempotencyKey: fmt.Sprintf("purchase:%d:%s", e.ChainID, e.TxHash),
		})
	}
}

// AwardChatUsage awards chat_usage points for one request; key makes it
// idempotent (the request's ledger entry ID is a good key).
func (s *Service) AwardChatUsage(ctx context.Context, account, key, model string, tokens int64) {
	if n := s.rules.ChatPer1KTokens * (tokens / 1000); n > 0 {
		s.award(ctx, PointsEntry{
			Account: account, Trigger: TriggerChatUsage, Points: n,
			Description:    fmt.Sprintf("Chat usage: %d tokens on %s", tokens, model),
			Metadata:       map[string]any{"model": model, "tokens": tokens},
			IdempotencyKey: "chat:" + key,
		})
	}
}

func (s *Service) award(ctx context.Context, e PointsEntry) {
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = s.now()
	}
	if _, err := s.store.AwardPoints(ctx, e); err != nil {
		s.log.WarnContext(ctx, "awarding points failed", "account", e.Account, "trigger", e.Trigger, "err", err)
	}
}

// Points returns the account's points balance.
func (s *Service) Points(ctx context.Context, account string) (int64, error) {
	return s.store.PointsBalance(ctx, account)
}

// PointsHistory returns the account's awards, newest first, read in
// pages of HistoryPage; iteration stops at the first error, which it
// yields.
func (s *Service) PointsHistory(ctx context.Context, account string) iter.Seq2[PointsEntry, error] {
	return func(yield func(PointsEntry, error) bool) {
		for r := (page.Request{Limit: HistoryPage}); ; {
			p, err := s.store.PointsHistory(ctx, account, r)
			if err != nil {
				yield(PointsEntry{}, err)
				return
			}
			for _, e := range p.Items {
				if !yield(e, nil) {
					return
				}
			}
			if !p.More {
				return
			}
			r.After = p.Next
		}
	}
}

// HistoryEntry is an entry as the history endpoint shows it.
type HistoryEntry struct {
	Entry
	// ShownAmount is the change in shown balance the entry made:
	// ShownBalanceAfter minus the shown balance before it, which is
	// FloorCents of BalanceAfter-Amount. Because the ledger's entries
	// chain (each BalanceAfter is the previous one plus Amount), shown
	// amounts add up to the shown balance, and a debit never shows as a
	// credit: its ShownAmount is 0 or negative, a credit's 0 or positive.
	ShownAmount int64
	// ShownBalanceAfter is BalanceAfter rounded down to whole cents.
	ShownBalanceAfter int64
}

// HistoryPage is the size of the pages [Service.History] reads.
const HistoryPage = 500

// History returns the account's ledger, newest first, read from the store
// in pages of HistoryPage entries, so a long history costs memory for one
// page at a time. Amounts are whole cents as [HistoryEntry] says: a charge
// smaller than a cent may show as 0 until the cents tip; the exact amount
// is in Entry.Amount. Iteration stops at the first error, which it yields.
func (s *Service) History(ctx context.Context, account string) iter.Seq2[HistoryEntry, error] {
	return func(yield func(HistoryEntry, error) bool) {
		_ = s.eachEntry(ctx, account, EntryFilter{}, func(e Entry) bool { return yield(Shown(e), nil) }, func(err error) { yield(HistoryEntry{}, err) })
	}
}

// Shown returns e with its whole-cent figures (see [HistoryEntry]).
func Shown(e Entry) HistoryEntry {
	after := e.BalanceAfter.FloorCents()
	return HistoryEntry{Entry: e, ShownAmount: after - (e.BalanceAfter - e.Amount).FloorCents(), ShownBalanceAfter: after}
}

// eachEntry calls fn for the account's entries that f selects, newest
// first, reading pages of HistoryPage entries, until fn returns false; a
// store error goes to fail (if set) and is returned.
func (s *Service) eachEntry(ctx context.Context, account string, f EntryFilter, fn func(Entry) bool, fail func(error)) error {
	for r := (page.Request{Limit: HistoryPage}); ; {
		p, err := s.store.Entries(ctx, account, f, r)
		if err != nil {
			if fail != nil {
				fail(err)
			}
			return err
		}
		for _, e := range p.Items {
			if !fn(e) {
				return nil
			}
		}
		if !p.More {
			return nil
		}
		r.After = p.Next
	}
}

// SubscribeRequest asks for an hourly subscription.
type SubscribeRequest struct {
	Account     string
	Kind        string // "domain", "feed"
	Resource    string
	Type        TxType // the ledger type of its charges
	HourlyCost  MicroCents
	Description string // of each charge; the period is appended
	// Exclusive makes the resource this account's alone while the
	// subscription is active (see Subscription.Exclusive).
	Exclusive bool
}

// Subscribe charges the first hour and creates the subscription in one
// transaction. Periods are whole hours from the start (the anchor).
func (s *Service) Subscribe(ctx context.Context, r SubscribeRequest) (Subscription, error) {
	sub, first, err := s.Prepare(r)
	if err != nil {
		return Subscription{}, err
	}
	sub, _, err = s.store.CreateSubscription(ctx, sub, first)
	if err != nil {
		return Subscription{}, err
	}
	s.Started(ctx, sub)
	return sub, nil
}

// Prepare returns the subscription Subscribe would create (with a new ID,
// starting now) and its first hour's posting, for a store that writes
// them in one transaction with the resource they pay for (a reserved
// subdomain: tunnel.Store.ReserveDomain). Call Started once that
// transaction commits.
func (s *Service) Prepare(r SubscribeRequest) (Subscription, Posting, error) {
	if r.HourlyCost <= 0 || r.Account == "" || r.Kind == "" {
		return Subscription{}, Posting{}, fault.New(fault.Invalid, "invalid subscription")
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	sub := Subscription{
		ID: uuid.NewString(), Account: r.Account, Kind: r.Kind, Resource: r.Resource, Type: r.Type,
		HourlyCost: r.HourlyCost, Anchor: now, PrepaidUntil: now.Add(time.Hour), Status: SubActive, CreatedAt: now,
		Exclusive: r.Exclusive,
	}
	first := Posting{
		Account: r.Account, Type: r.Type, Amount: r.HourlyCost,
		Description: periodDescription(r.Description, r.Kind, now), At: now,
		IdempotencyKey: "sub:" + sub.ID + ":0",
	}
	return sub, first, nil
}

// Started does what follows a subscription's creation: the first hour's
// reward points.
func (s *Service) Started(ctx context.Context, sub Subscription) {
	s.awardActive(ctx, sub, sub.Anchor)
}

func periodDescription(desc, kind string, start time.Time) string {
	if desc == "" {
		desc = "Subscription: " + kind
	}
	return fmt.Sprintf("%s (hour from %s)", desc, start.UTC().Format(time.RFC3339))
}

func (s *Service) awardActive(ctx context.Context, sub Subscription, period time.Time) {
	trigger, n := "", int64(0)
	switch sub.Type {
	case Domain:
		trigger, n = TriggerDomainActive, s.rules.DomainActivePerHour
	case NewsFeed:
		trigger, n = TriggerFeedActive, s.rules.FeedActivePerHour
	}
	if n > 0 {
		s.award(ctx, PointsEntry{
			Account: sub.Account, Trigger: trigger, Points: n,
			Description:    fmt.Sprintf("Active %s for an hour", sub.Kind),
			Metadata:       map[string]any{"subscription_id": sub.ID, "resource": sub.Resource, "period_start": period.Unix()},
			IdempotencyKey: fmt.Sprintf("active:%s:%d", sub.ID, period.UnixMicro()),
		})
	}
}

// Cancel stops a subscription's billing. There is no refund.
func (s *Service) Cancel(ctx context.Context, account, id string) error {
	return s.store.CancelSubscription(ctx, account, id, s.now())
}

// Subscriptions returns the account's subscriptions, newest first.
func (s *Service) Subscriptions(ctx context.Context, account string) ([]Subscription, error) {
	return s.store.ListSubscriptions(ctx, account)
}

// Tick charges every period that has come due, each exactly once even when
// several processes tick at the same time. After downtime, missed hours
// are charged in order, each at its own period start computed from the
// anchor, as long as the balance covers them; the first hour it cannot
// cover makes the subscription Inactive (and calls OnLapse). It returns how
// many periods it charged.
func (s *Service) Tick(ctx context.Context) (int, error) {
	charged := 0
	for {
		now := s.now()
		due, err := s.store.DueSubscriptions(ctx, now, 100)
		if err != nil {
			return charged, err
		}
		if len(due) == 0 {
			return charged, nil
		}
		progressed := false
		for _, sub := range due {
			n, err := s.catchUp(ctx, sub, now)
			charged += n
			if n > 0 {
				progressed = true
			}
			if err != nil && ctx.Err() != nil {
				return charged, err
			}
		}
		if !progressed {
			// Everything due was charged or lapsed by someone else, or lapsed now.
			return charged, nil
		}
	}
}

// catchUp charges sub's due periods up to now.
func (s *Service) catchUp(ctx context.Context, sub Subscription, now time.Time) (int, error) {
	n := 0
	for sub.Status == SubActive && !sub.PrepaidUntil.After(now) {
		period := sub.PrepaidUntil
		k := int64(period.Sub(sub.Anchor) / time.Hour)
		next, _, err := s.store.ChargePeriod(ctx, sub.ID, period, Posting{
			Account: sub.Account, Type: sub.Type, Amount: sub.HourlyCost,
			Description:    periodDescription("Subscription: "+sub.Kind+" "+sub.Resource, sub.Kind, period),
			IdempotencyKey: fmt.Sprintf("sub:%s:%d", sub.ID, k),
			At:             now,
		})
		switch {
		case err == nil:
			n++
			s.awardActive(ctx, next, period)
			sub = next
		case fault.CodeOf(err) == fault.InsufficientFunds:
			sub.Status = SubInactive
			s.log.InfoContext(ctx, "subscription lapsed", "id", sub.ID, "account", sub.Account)
			if f := s.onLapse[sub.Kind]; f != nil {
				f(ctx, sub)
			}
			return n, nil
		case fault.CodeOf(err) == fault.Conflict:
			// Another process charged it; continue from the stored state.
			cur, gerr := s.store.GetSubscription(ctx, sub.ID)
			if gerr != nil {
				return n, gerr
			}
			if !cur.PrepaidUntil.After(sub.PrepaidUntil) && cur.Status == SubActive {
				return n, nil // no progress visible; leave it to the next tick
			}
			sub = cur
		default:
			s.log.WarnContext(ctx, "subscription charge failed", "id", sub.ID, "err", err)
			return n, err
		}
	}
	return n, nil
}
