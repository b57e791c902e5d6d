package memory

import (
	"context"
	"sort"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

var _ billing.Store = (*Store)(nil)

// billingState holds the ledger, holds, points and subscriptions. Store.mu
// guards it; values are copied in and out so callers never share them.
type billingState struct {
	accounts map[string]*memAccount
	// entries are each account's entries in insertion order, which is
	// ledger order: ascending Seq.
	entries   map[string][]memEntry
	seq       int64               // the last Seq given to an entry
	entryKeys map[memKey]int      // (account, idempotency key) -> index in entries[account]
	payments  map[memPayment]bool // (chain ID, tx hash) pairs credited
	holds     map[string]*memHold
	holdKeys  map[memKey]string // (account, idempotency key) -> hold ID
	points    map[string][]memPoints
	pointKeys map[memKey]int // (account, idempotency key) -> index in points[account]
	pointIDs  map[string]bool
	subs      map[string]*billing.Subscription
	subOrder  []string            // subscription IDs, oldest first
	subsByAcc map[string][]string // account -> subscription IDs, oldest first
	active    map[memSubKey]string
	periods   map[memPeriod]string // (subscription, period start) -> entry ID
	// periodOf maps the entry ID of a charge to its subscription.
	periodOf map[string]string
}

type memAccount struct{ balance, held billing.MicroCents }

type memEntry struct {
	e  billing.Entry
	fp string
}

type memKey struct{ account, key string }

type memPayment struct {
	chain uint64
	hash  string
}

type memHold struct {
	h      billing.Hold
	status string // open, settled, released
	fp     string
}

type memPoints struct {
	e    billing.PointsEntry
	meta *string // JSON, so numbers round-trip as in the SQL backends
}

type memSubKey struct{ account, kind, resource string }

type memPeriod struct {
	sub   string
	start int64
}

func newBillingState() billingState {
	return billingState{
		accounts:  make(map[string]*memAccount),
		entries:   make(map[string][]memEntry),
		entryKeys: make(map[memKey]int),
		payments:  make(map[memPayment]bool),
		holds:     make(map[string]*memHold),
		holdKeys:  make(map[memKey]string),
		points:    make(map[string][]memPoints),
		pointKeys: make(map[memKey]int),
		pointIDs:  make(map[string]bool),
		subs:      make(map[string]*billing.Subscription),
		subsByAcc: make(map[string][]string),
		active:    make(map[memSubKey]string),
		periods:   make(map[memPeriod]string),
		periodOf:  make(map[string]string),
	}
}

func copyEntry(e billing.Entry) billing.Entry {
	if e.Usage != nil {
		u := *e.Usage
		e.Usage = &u
	}
	return e
}

// keyed returns the entry stored under the posting's idempotency key:
// found reports whether there is one; err is a Conflict if it was stored
// by a different request.
func (b *billingState) keyed(p billing.Posting, fp string) (e billing.Entry, found bool, err error) {
	if p.IdempotencyKey == "" {
		return billing.Entry{}, false, nil
	}
	i, ok := b.entryKeys[memKey{p.Account, p.IdempotencyKey}]
	if !ok {
		return billing.Entry{}, false, nil
	}
	me := b.entries[p.Account][i]
	if me.fp != fp {
		return billing.Entry{}, true, billrules.KeyConflict()
	}
	return copyEntry(me.e), true, nil
}

// append records an entry with amount delta; the balance has been updated.
func (b *billingState) append(p billing.Posting, delta billing.MicroCents, fp string) billing.Entry {
	e := billing.Entry{
		ID:             billrules.NewID(),
		Account:        p.Account,
		Type:           p.Type,
		Status:         billing.Completed,
		Amount:         delta,
		BalanceAfter:   b.accounts[p.Account].balance,
		Description:    p.Description,
		ChainID:        p.ChainID,
		TxHash:         p.TxHash,
		Usage:          p.Usage,
		IdempotencyKey: p.IdempotencyKey,
		CreatedAt:      p.At,
	}
	b.seq++
	e.Seq = b.seq
	if p.IdempotencyKey != "" {
		b.entryKeys[memKey{p.Account, p.IdempotencyKey}] = len(b.entries[p.Account])
	}
	if p.TxHash != "" {
		b.payments[memPayment{p.ChainID, p.TxHash}] = true
	}
	b.entries[p.Account] = append(b.entries[p.Account], memEntry{e: e, fp: fp})
	return copyEntry(e)
}

// debit subtracts p.Amount if the available balance covers it.
func (b *billingState) debit(p billing.Posting, fp string) (billing.Entry, error) {
	if p.TxHash != "" && b.payments[memPayment{p.ChainID, p.TxHash}] {
		return billing.Entry{}, billrules.AlreadyProcessed()
	}
	a := b.accounts[p.Account]
	if a == nil || a.balance-a.held < p.Amount {
		return billing.Entry{}, billrules.Insufficient()
	}
	a.balance -= p.Amount
	return b.append(p, -p.Amount, fp), nil
}

// Credit adds p.Amount to the account, creating it if needed.
func (s *Store) Credit(_ context.Context, p billing.Posting) (billing.Entry, error) {
	if err := billrules.Credit(&p); err != nil {
		return billing.Entry{}, err
	}
	fp := billrules.PostingFP("credit", p)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	if e, found, err := b.keyed(p, fp); found {
		return e, err
	}
	if p.TxHash != "" && b.payments[memPayment{p.ChainID, p.TxHash}] {
		return billing.Entry{}, billrules.AlreadyProcessed()
	}
	a := b.accounts[p.Account]
	if a == nil {
		a = &memAccount{}
		b.accounts[p.Account] = a
	}
	if a.balance+p.Amount < a.balance {
		return billing.Entry{}, fault.New(fault.Invalid, "amount out of range")
	}
	a.balance += p.Amount
	return b.append(p, p.Amount, fp), nil
}

// Debit subtracts p.Amount if the available balance covers it.
func (s *Store) Debit(_ context.Context, p billing.Posting) (billing.Entry, error) {
	if err := billrules.Debit(&p); err != nil {
		return billing.Entry{}, err
	}
	fp := billrules.PostingFP("debit", p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, found, err := s.billing.keyed(p, fp); found {
		return e, err
	}
	return s.billing.debit(p, fp)
}

// PlaceHold reserves r.Amount if the available balance covers it; with
// r.MinAmount > 0 it reserves min(r.Amount, available) if that is at least
// r.MinAmount.
func (s *Store) PlaceHold(_ context.Context, r billing.HoldRequest) (billing.Hold, error) {
	if err := billrules.HoldRequest(&r); err != nil {
		return billing.Hold{}, err
	}
	fp := billrules.HoldFP(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	if r.IdempotencyKey != "" {
		if id, ok := b.holdKeys[memKey{r.Account, r.IdempotencyKey}]; ok {
			h := b.holds[id]
			if h.fp != fp {
				return billing.Hold{}, billrules.KeyConflict()
			}
			return h.h, nil
		}
	}
	a := b.accounts[r.Account]
	if a == nil {
		return billing.Hold{}, billrules.Insufficient()
	}
	amount, err := billrules.HoldAmount(r, a.balance-a.held)
	if err != nil {
		return billing.Hold{}, err
	}
	a.held += amount
	h := billing.Hold{ID: billrules.NewID(), Account: r.Account, Amount: amount, CreatedAt: r.At, ExpiresAt: r.ExpiresAt}
	b.holds[h.ID] = &memHold{h: h, status: "open", fp: fp}
	if r.IdempotencyKey != "" {
		b.holdKeys[memKey{r.Account, r.IdempotencyKey}] = h.ID
	}
	return h, nil
}

// SettleHold debits st.Amount (clamped to the hold, or with
// st.ExceedHold to the hold plus the available balance), releases the
// rest of the hold and writes one entry.
func (s *Store) SettleHold(_ context.Context, st billing.Settlement) (billing.Entry, error) {
	if err := billrules.Settlement(&st); err != nil {
		return billing.Entry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	h := b.holds[st.HoldID]
	if h == nil || h.status != "open" {
		return billing.Entry{}, billrules.HoldNotFound()
	}
	h.status = "settled"
	a := b.accounts[h.h.Account]
	settled := billrules.Settled(st, h.h.Amount, a.balance-a.held)
	a.held -= h.h.Amount
	a.balance -= settled
	p := billing.Posting{Account: h.h.Account, Type: st.Type, Description: st.Description, Usage: st.Usage, At: st.At}
	return b.append(p, -settled, ""), nil
}

// ReleaseHold releases an open hold without a debit.
func (s *Store) ReleaseHold(_ context.Context, holdID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	h := b.holds[holdID]
	if h == nil || h.status != "open" {
		return billrules.HoldNotFound()
	}
	h.status = "released"
	b.accounts[h.h.Account].held -= h.h.Amount
	return nil
}

// ReleaseExpiredHolds releases every open hold that expired at or before
// now.
func (s *Store) ReleaseExpiredHolds(_ context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	n := 0
	for _, h := range b.holds {
		if h.status == "open" && !h.h.ExpiresAt.After(now) {
			h.status = "released"
			b.accounts[h.h.Account].held -= h.h.Amount
			n++
		}
	}
	return n, nil
}

// Balance returns the account's balance; zero for an unknown account.
func (s *Store) Balance(_ context.Context, account string) (billing.Balance, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return billing.Balance{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.billing.accounts[account]
	if a == nil {
		return billing.Balance{}, nil
	}
	return billing.Balance{Total: a.balance, Held: a.held}, nil
}

// Entries returns a page of the account's entries, newest first in
// ledger order (see billing.Ledger.Entries); where the page starts is
// found by binary search.
func (s *Store) Entries(_ context.Context, account string, f billing.EntryFilter, p page.Request) (page.Page[billing.Entry], error) {
	account, err := billrules.Account(account)
	if err != nil {
		return page.Page[billing.Entry]{}, err
	}
	f.Since, f.Until = billrules.OptTime(f.Since), billrules.OptTime(f.Until)
	size := p.Size(billing.EntriesPageSize, billing.EntriesPageMax)
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.billing.entries[account]
	end := len(all) // entries [0, end) are older than p.After
	if !p.After.IsZero() {
		end = sort.Search(len(all), func(i int) bool { return all[i].e.Seq >= p.After.Order })
	}
	var out []billing.Entry
	for i := end - 1; i >= 0 && len(out) <= size; i-- {
		e := all[i].e
		if !f.Since.IsZero() && e.CreatedAt.Before(f.Since) {
			continue
		}
		if !f.Until.IsZero() && !e.CreatedAt.Before(f.Until) {
			continue
		}
		if len(f.Types) > 0 && !containsType(f.Types, e.Type) {
			continue
		}
		out = append(out, copyEntry(e))
	}
	return page.Of(out, size, billing.EntryKey), nil
}

func containsType(ts []billing.TxType, t billing.TxType) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// HasCompletedPurchase reports whether the account has a completed
// Purchase entry.
func (s *Store) HasCompletedPurchase(_ context.Context, account string) (bool, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, me := range s.billing.entries[account] {
		if me.e.Type == billing.Purchase && me.e.Status == billing.Completed {
			return true, nil
		}
	}
	return false, nil
}

func (p memPoints) get() (billing.PointsEntry, error) {
	e := p.e
	m, err := billrules.DecodeMetadata(p.meta)
	if err != nil {
		return billing.PointsEntry{}, err
	}
	e.Metadata = m
	return e, nil
}

// AwardPoints stores e; with an idempotency key already used by the
// account it stores nothing and returns the earlier entry. Metadata
// numbers come back as float64.
func (s *Store) AwardPoints(_ context.Context, e billing.PointsEntry) (billing.PointsEntry, error) {
	if err := billrules.Points(&e); err != nil {
		return billing.PointsEntry{}, err
	}
	meta, err := billrules.EncodeMetadata(e.Metadata)
	if err != nil {
		return billing.PointsEntry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	if e.IdempotencyKey != "" {
		if i, ok := b.pointKeys[memKey{e.Account, e.IdempotencyKey}]; ok {
			return b.points[e.Account][i].get()
		}
	}
	if b.pointIDs[e.ID] {
		return billing.PointsEntry{}, billrules.DuplicateID()
	}
	mp := memPoints{e: e, meta: meta}
	mp.e.Metadata = nil
	if e.IdempotencyKey != "" {
		b.pointKeys[memKey{e.Account, e.IdempotencyKey}] = len(b.points[e.Account])
	}
	b.pointIDs[e.ID] = true
	b.points[e.Account] = append(b.points[e.Account], mp)
	return mp.get()
}

// PointsBalance is the sum of the account's awards.
func (s *Store) PointsBalance(_ context.Context, account string) (int64, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, p := range s.billing.points[account] {
		n += p.e.Points
	}
	return n, nil
}

// PointsHistory returns a page of the account's awards, newest first by
// CreatedAt, ties by ID (see billing.PointsStore).
func (s *Store) PointsHistory(_ context.Context, account string, p page.Request) (page.Page[billing.PointsEntry], error) {
	account, err := billrules.Account(account)
	if err != nil {
		return page.Page[billing.PointsEntry]{}, err
	}
	size := p.Size(billing.EntriesPageSize, billing.EntriesPageMax)
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []billing.PointsEntry
	for _, mp := range s.billing.points[account] {
		e, err := mp.get()
		if err != nil {
			return page.Page[billing.PointsEntry]{}, err
		}
		if k := billing.PointsKey(e); p.After.Older(k.Order, k.ID) {
			all = append(all, e)
		}
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := billing.PointsKey(all[i]), billing.PointsKey(all[j])
		return a.Order > b.Order || a.Order == b.Order && a.ID > b.ID
	})
	return page.Of(all[:min(len(all), size+1)], size, billing.PointsKey), nil
}

// CreateSubscription debits the first period and stores s with
// PrepaidUntil = Anchor + 1h. A retry under the first posting's
// idempotency key returns the subscription it created.
func (s *Store) CreateSubscription(_ context.Context, sub billing.Subscription, first billing.Posting) (billing.Subscription, billing.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createSubLocked(sub, first)
}

// createSubLocked is CreateSubscription with s.mu held.
func (s *Store) createSubLocked(sub billing.Subscription, first billing.Posting) (billing.Subscription, billing.Entry, error) {
	if err := billrules.Subscription(&sub, &first); err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	fp := billrules.SubscriptionFP(sub, first)
	b := &s.billing
	if e, found, err := b.keyed(first, fp); found {
		if err != nil {
			return billing.Subscription{}, billing.Entry{}, err
		}
		id, ok := b.periodOf[e.ID]
		if !ok {
			return billing.Subscription{}, billing.Entry{}, billrules.KeyConflict()
		}
		return *b.subs[id], e, nil
	}
	if b.subs[sub.ID] != nil {
		return billing.Subscription{}, billing.Entry{}, billrules.DuplicateID()
	}
	k := memSubKey{sub.Account, sub.Kind, sub.Resource}
	if _, ok := b.active[k]; ok {
		return billing.Subscription{}, billing.Entry{}, billrules.SubExists()
	}
	for ak, id := range b.active {
		if ak.kind == sub.Kind && ak.resource == sub.Resource && (sub.Exclusive || b.subs[id].Exclusive) {
			return billing.Subscription{}, billing.Entry{}, billrules.SubExists()
		}
	}
	e, err := b.debit(first, fp)
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	stored := sub
	b.subs[sub.ID] = &stored
	b.subOrder = append(b.subOrder, sub.ID)
	b.subsByAcc[sub.Account] = append(b.subsByAcc[sub.Account], sub.ID)
	b.active[k] = sub.ID
	b.periods[memPeriod{sub.ID, sub.Anchor.UnixMicro()}] = e.ID
	b.periodOf[e.ID] = sub.ID
	return sub, e, nil
}

// ChargePeriod charges the period starting at periodStart, which must be
// the subscription's PrepaidUntil, and advances PrepaidUntil by an hour.
// When funds are short the subscription becomes Inactive.
func (s *Store) ChargePeriod(_ context.Context, subID string, periodStart time.Time, p billing.Posting) (billing.Subscription, billing.Entry, error) {
	periodStart = billrules.OptTime(periodStart)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.billing
	sub := b.subs[subID]
	if sub == nil {
		return billing.Subscription{}, billing.Entry{}, billrules.SubNotFound()
	}
	if err := billrules.Charge(*sub, &p); err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	pk := memPeriod{subID, periodStart.UnixMicro()}
	if _, charged := b.periods[pk]; charged || sub.Status != billing.SubActive || !sub.PrepaidUntil.Equal(periodStart) {
		return billing.Subscription{}, billing.Entry{}, billrules.PeriodConflict()
	}
	fp := billrules.PostingFP("charge|"+subID, p)
	if p.IdempotencyKey != "" {
		if _, used := b.entryKeys[memKey{p.Account, p.IdempotencyKey}]; used {
			return billing.Subscription{}, billing.Entry{}, billrules.KeyConflict()
		}
	}
	e, err := b.debit(p, fp)
	if fault.CodeOf(err) == fault.InsufficientFunds {
		sub.Status = billing.SubInactive
		sub.EndedAt = p.At
		delete(b.active, memSubKey{sub.Account, sub.Kind, sub.Resource})
		return *sub, billing.Entry{}, err
	}
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	sub.PrepaidUntil = sub.PrepaidUntil.Add(time.Hour)
	b.periods[pk] = e.ID
	b.periodOf[e.ID] = subID
	return *sub, e, nil
}

// DueSubscriptions returns up to limit active subscriptions whose
// PrepaidUntil is at or before now, the longest due first (ties in
// creation order).
func (s *Store) DueSubscriptions(_ context.Context, now time.Time, limit int) ([]billing.Subscription, error) {
	if limit <= 0 {
		return nil, fault.New(fault.Invalid, "limit must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []billing.Subscription{}
	for _, id := range s.billing.subOrder {
		if sub := s.billing.subs[id]; sub.Status == billing.SubActive && !sub.PrepaidUntil.After(now) {
			out = append(out, *sub)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PrepaidUntil.Before(out[j].PrepaidUntil) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// CancelSubscription marks the account's active subscription Cancelled.
func (s *Store) CancelSubscription(_ context.Context, account, id string, now time.Time) error {
	account, err := billrules.Account(account)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelSubLocked(account, id, now)
}

// cancelSubLocked is CancelSubscription with s.mu held.
func (s *Store) cancelSubLocked(account, id string, now time.Time) error {
	b := &s.billing
	sub := b.subs[id]
	if sub == nil || sub.Account != account || sub.Status != billing.SubActive {
		return billrules.SubNotFound()
	}
	sub.Status = billing.SubCancelled
	sub.EndedAt = billrules.Time(now)
	delete(b.active, memSubKey{sub.Account, sub.Kind, sub.Resource})
	return nil
}

// GetSubscription returns a subscription by ID.
func (s *Store) GetSubscription(_ context.Context, id string) (billing.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.billing.subs[id]
	if sub == nil {
		return billing.Subscription{}, billrules.SubNotFound()
	}
	return *sub, nil
}

// ListSubscriptions returns the account's subscriptions, newest first (by
// CreatedAt, ties newest insertion first).
func (s *Store) ListSubscriptions(_ context.Context, account string) ([]billing.Subscription, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.billing.subsByAcc[account]
	out := make([]billing.Subscription, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		out = append(out, *s.billing.subs[ids[i]])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}
