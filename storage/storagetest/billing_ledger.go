package storagetest

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

func testLedgerCreditDebit(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	t0 := billT0()

	bal, err := l.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{}, bal, "unknown account has a zero balance")
	es, err := billing.AllEntries(ctx, l, acct, billing.EntryFilter{})
	require.NoError(t, err)
	require.NotNil(t, es, "an empty list is not nil")
	require.Empty(t, es)

	c, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 5 * billing.Dollar, Description: "bought", At: t0})
	require.NoError(t, err)
	require.NotEmpty(t, c.ID)
	require.Equal(t, acct, c.Account)
	require.Equal(t, billing.Purchase, c.Type)
	require.Equal(t, billing.Completed, c.Status)
	require.Equal(t, 5*billing.Dollar, c.Amount)
	require.Equal(t, 5*billing.Dollar, c.BalanceAfter)
	require.Equal(t, "bought", c.Description)
	require.Nil(t, c.Usage)
	billRequireTime(t, t0, c.CreatedAt)

	d, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 123_456, Description: "chat", At: t0.Add(time.Second)})
	require.NoError(t, err)
	require.NotEqual(t, c.ID, d.ID)
	require.Equal(t, billing.MicroCents(-123_456), d.Amount)
	require.Equal(t, 5*billing.Dollar-123_456, d.BalanceAfter)
	require.Equal(t, billing.ChatInference, d.Type)
	billRequireTime(t, t0.Add(time.Second), d.CreatedAt)

	c2, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1, At: t0.Add(2 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 5*billing.Dollar-123_455, c2.BalanceAfter)

	es = billRequireBooks(t, l, acct, billing.Balance{Total: 5*billing.Dollar - 123_455})
	require.Len(t, es, 3)
	require.Equal(t, []string{c.ID, d.ID, c2.ID}, []string{es[0].ID, es[1].ID, es[2].ID})
	d.Seq = es[1].Seq // set by Entries; a store may leave it 0 on what Debit returns
	require.Equal(t, d, es[1], "Entries returns what Debit returned")

	// A debit of exactly the available balance empties the account.
	d2, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.Domain, Amount: 5*billing.Dollar - 123_455, At: t0.Add(3 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(0), d2.BalanceAfter)
	billRequireBooks(t, l, acct, billing.Balance{})

	// A zero time means now.
	before := time.Now().Add(-time.Second)
	c3 := billCredit(t, l, acct, 7, time.Time{})
	require.True(t, c3.CreatedAt.After(before) && c3.CreatedAt.Before(time.Now().Add(time.Second)), "zero At is stored as now, got %v", c3.CreatedAt)

	// Other accounts are untouched.
	billRequireBooks(t, l, billAddr(2), billing.Balance{})
}

func testLedgerValidation(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	billCredit(t, l, acct, 1000, billT0())
	for _, amt := range []billing.MicroCents{0, -1, -1000} {
		_, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: amt})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: amt})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, ExpiresAt: billFar()})
		billRequireCode(t, err, fault.Invalid)
	}
	_, err := l.Credit(ctx, billing.Posting{Type: billing.Purchase, Amount: 1})
	billRequireCode(t, err, fault.Invalid)
	// A credit that would overflow the balance is refused, not wrapped.
	rich := billAddr(9)
	billCredit(t, l, rich, math.MaxInt64-10, billT0())
	_, err = l.Credit(ctx, billing.Posting{Account: rich, Type: billing.Purchase, Amount: 11})
	billRequireCode(t, err, fault.Invalid)
	billRequireBooks(t, l, rich, billing.Balance{Total: math.MaxInt64 - 10})
	_, err = l.Debit(ctx, billing.Posting{Account: acct, Amount: 1})
	billRequireCode(t, err, fault.Invalid)
	_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 1})
	billRequireCode(t, err, fault.Invalid) // no expiry: a crash would leave it forever

	h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 10, ExpiresAt: billFar()})
	require.NoError(t, err)
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: -1, Type: billing.ChatInference})
	billRequireCode(t, err, fault.Invalid)
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1})
	billRequireCode(t, err, fault.Invalid)
	// The invalid settlements left the hold open.
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 10})
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1, Type: billing.ChatInference})
	require.NoError(t, err)
	billRequireBooks(t, l, acct, billing.Balance{Total: 999})
}

func testLedgerInsufficient(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)

	// Unknown account: balance zero.
	_, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 1})
	billRequireCode(t, err, fault.InsufficientFunds)
	require.Equal(t, "insufficient credits", fault.MessageOf(err))
	_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 1, ExpiresAt: billFar()})
	billRequireCode(t, err, fault.InsufficientFunds)
	billRequireBooks(t, l, acct, billing.Balance{})

	billCredit(t, l, acct, 100, billT0())
	_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 101})
	billRequireCode(t, err, fault.InsufficientFunds)
	_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 101, ExpiresAt: billFar()})
	billRequireCode(t, err, fault.InsufficientFunds)
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 100})
	require.Len(t, es, 1, "a refused debit writes no entry")

	// A failed keyed debit does not use up its key.
	_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 150, IdempotencyKey: "k"})
	billRequireCode(t, err, fault.InsufficientFunds)
	billCredit(t, l, acct, 100, billT0())
	d, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 150, IdempotencyKey: "k"})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(50), d.BalanceAfter)
	billRequireBooks(t, l, acct, billing.Balance{Total: 50})
}

func testLedgerHolds(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	t0 := billT0()
	billCredit(t, l, acct, 100, t0)

	h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 40, ExpiresAt: t0.Add(time.Minute), At: t0})
	require.NoError(t, err)
	require.NotEmpty(t, h.ID)
	require.Equal(t, acct, h.Account)
	require.Equal(t, billing.MicroCents(40), h.Amount)
	billRequireTime(t, t0, h.CreatedAt)
	billRequireTime(t, t0.Add(time.Minute), h.ExpiresAt)
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 100, Held: 40})
	require.Len(t, es, 1, "a hold writes no entry")

	// Only the available balance may be debited or held.
	_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 61})
	billRequireCode(t, err, fault.InsufficientFunds)
	_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 61, ExpiresAt: billFar()})
	billRequireCode(t, err, fault.InsufficientFunds)
	h2, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 60, ExpiresAt: billFar()})
	require.NoError(t, err)
	billRequireBooks(t, l, acct, billing.Balance{Total: 100, Held: 100})
	_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 1})
	billRequireCode(t, err, fault.InsufficientFunds)

	// Settle for less: the rest is released.
	u := &billing.Usage{Model: "m", InputTokens: 10, OutputTokens: 20}
	e, err := l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 25, Type: billing.ChatInference, Description: "chat", Usage: u, At: t0.Add(time.Second)})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(-25), e.Amount)
	require.Equal(t, billing.MicroCents(75), e.BalanceAfter)
	require.Equal(t, billing.ChatInference, e.Type)
	require.Equal(t, "chat", e.Description)
	require.Equal(t, u, e.Usage)
	billRequireTime(t, t0.Add(time.Second), e.CreatedAt)
	billRequireBooks(t, l, acct, billing.Balance{Total: 75, Held: 60})

	// Settle for more than held: clamped to the hold.
	e, err = l.SettleHold(ctx, billing.Settlement{HoldID: h2.ID, Amount: 1000, Type: billing.SttInference})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(-60), e.Amount)
	require.Equal(t, billing.MicroCents(15), e.BalanceAfter)
	billRequireBooks(t, l, acct, billing.Balance{Total: 15})

	// Settle for zero: one entry of zero, the hold released.
	h3, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 15, ExpiresAt: billFar()})
	require.NoError(t, err)
	e, err = l.SettleHold(ctx, billing.Settlement{HoldID: h3.ID, Amount: 0, Type: billing.ChatInference})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(0), e.Amount)
	require.Equal(t, billing.MicroCents(15), e.BalanceAfter)
	es = billRequireBooks(t, l, acct, billing.Balance{Total: 15})
	require.Len(t, es, 4)

	// Release: nothing debited, no entry.
	h4, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 15, ExpiresAt: billFar()})
	require.NoError(t, err)
	require.NoError(t, l.ReleaseHold(ctx, h4.ID))
	es = billRequireBooks(t, l, acct, billing.Balance{Total: 15})
	require.Len(t, es, 4)
}

func testLedgerHoldResolvesOnce(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	billCredit(t, l, acct, 100, billT0())
	settle := func(id string) error {
		_, err := l.SettleHold(ctx, billing.Settlement{HoldID: id, Amount: 10, Type: billing.ChatInference})
		return err
	}

	h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 30, ExpiresAt: billFar()})
	require.NoError(t, err)
	require.NoError(t, settle(h.ID))
	billRequireCode(t, settle(h.ID), fault.NotFound)
	billRequireCode(t, l.ReleaseHold(ctx, h.ID), fault.NotFound)
	billRequireBooks(t, l, acct, billing.Balance{Total: 90})

	h, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 30, ExpiresAt: billFar()})
	require.NoError(t, err)
	require.NoError(t, l.ReleaseHold(ctx, h.ID))
	billRequireCode(t, l.ReleaseHold(ctx, h.ID), fault.NotFound)
	billRequireCode(t, settle(h.ID), fault.NotFound)
	billRequireBooks(t, l, acct, billing.Balance{Total: 90})

	billRequireCode(t, settle("no-such-hold"), fault.NotFound)
	billRequireCode(t, l.ReleaseHold(ctx, "no-such-hold"), fault.NotFound)
	billRequireCode(t, settle("00000000-0000-0000-0000-000000000000"), fault.NotFound)
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 90})
	require.Len(t, es, 2)
}

func testLedgerReleaseExpired(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	billCredit(t, l, b, 1000, t0)
	hold := func(acct string, amt billing.MicroCents, exp time.Duration) billing.Hold {
		h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, ExpiresAt: t0.Add(exp), At: t0})
		require.NoError(t, err)
		return h
	}
	h1 := hold(a, 10, time.Minute)
	hold(a, 20, 2*time.Minute)
	hold(b, 40, 2*time.Minute)
	h4 := hold(b, 80, 3*time.Minute)
	hold(a, 160, 4*time.Minute)
	settled := hold(a, 320, time.Minute)
	_, err := l.SettleHold(ctx, billing.Settlement{HoldID: settled.ID, Amount: 300, Type: billing.ChatInference})
	require.NoError(t, err)

	n, err := l.ReleaseExpiredHolds(ctx, t0.Add(30*time.Second))
	require.NoError(t, err)
	require.Equal(t, 0, n)
	billRequireBooks(t, l, a, billing.Balance{Total: 700, Held: 190})

	// Expiry is inclusive: holds expiring at now are released.
	n, err = l.ReleaseExpiredHolds(ctx, t0.Add(2*time.Minute))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	billRequireBooks(t, l, a, billing.Balance{Total: 700, Held: 160})
	billRequireBooks(t, l, b, billing.Balance{Total: 1000, Held: 80})
	billRequireCode(t, l.ReleaseHold(ctx, h1.ID), fault.NotFound)
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h1.ID, Amount: 1, Type: billing.ChatInference})
	billRequireCode(t, err, fault.NotFound)

	n, err = l.ReleaseExpiredHolds(ctx, t0.Add(2*time.Minute))
	require.NoError(t, err)
	require.Equal(t, 0, n, "released holds are not released again")

	// An expired hold not yet swept may still be settled.
	e, err := l.SettleHold(ctx, billing.Settlement{HoldID: h4.ID, Amount: 5, Type: billing.ChatInference})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(995), e.BalanceAfter)
	n, err = l.ReleaseExpiredHolds(ctx, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	billRequireBooks(t, l, a, billing.Balance{Total: 700})
	billRequireBooks(t, l, b, billing.Balance{Total: 995})
}

func testLedgerIdempotency(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	acct, other := billAddr(1), billAddr(2)

	p := billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1000, Description: "first", IdempotencyKey: "credit-1", At: t0}
	c1, err := l.Credit(ctx, p)
	require.NoError(t, err)
	require.Equal(t, "credit-1", c1.IdempotencyKey)
	retry := p
	retry.At = t0.Add(time.Minute) // a retry carries a fresh timestamp
	retry.Description = "retried"
	c2, err := l.Credit(ctx, retry)
	require.NoError(t, err)
	require.Equal(t, c1, c2, "a retry returns the first result")
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000})

	changed := p
	changed.Amount = 1001
	_, err = l.Credit(ctx, changed)
	billRequireCode(t, err, fault.Conflict)
	changed = p
	changed.Type = billing.Grant
	_, err = l.Credit(ctx, changed)
	billRequireCode(t, err, fault.Conflict)
	changed = p
	changed.Type = billing.ChatInference
	_, err = l.Debit(ctx, changed) // same key, other operation
	billRequireCode(t, err, fault.Conflict)
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 1000})
	require.Len(t, es, 1)

	// Keys are per account.
	po := p
	po.Account = other
	co, err := l.Credit(ctx, po)
	require.NoError(t, err)
	require.NotEqual(t, c1.ID, co.ID)
	billRequireBooks(t, l, other, billing.Balance{Total: 1000})

	// A debit retried after the money is gone still returns its first result.
	d := billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 1000, IdempotencyKey: "debit-1", Usage: &billing.Usage{Model: "m", InputTokens: 1}, At: t0}
	d1, err := l.Debit(ctx, d)
	require.NoError(t, err)
	d2, err := l.Debit(ctx, d)
	require.NoError(t, err)
	require.Equal(t, d1, d2)
	changed = d
	changed.Usage = &billing.Usage{Model: "m", InputTokens: 2}
	_, err = l.Debit(ctx, changed)
	billRequireCode(t, err, fault.Conflict)
	billRequireBooks(t, l, acct, billing.Balance{})

	// Holds.
	billCredit(t, l, acct, 500, t0)
	r := billing.HoldRequest{Account: acct, Amount: 300, ExpiresAt: billFar(), IdempotencyKey: "hold-1", At: t0}
	h1, err := l.PlaceHold(ctx, r)
	require.NoError(t, err)
	r2 := r
	r2.ExpiresAt = billFar().Add(time.Hour) // a retry may compute a fresh expiry
	h2, err := l.PlaceHold(ctx, r2)
	require.NoError(t, err)
	require.Equal(t, h1, h2)
	billRequireBooks(t, l, acct, billing.Balance{Total: 500, Held: 300})
	r2 = r
	r2.Amount = 301
	_, err = l.PlaceHold(ctx, r2)
	billRequireCode(t, err, fault.Conflict)
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h1.ID, Amount: 100, Type: billing.ChatInference})
	require.NoError(t, err)
	h3, err := l.PlaceHold(ctx, r)
	require.NoError(t, err)
	require.Equal(t, h1, h3, "a retry after the hold was settled returns it and holds nothing")
	billRequireBooks(t, l, acct, billing.Balance{Total: 400})
}

func testLedgerPurchases(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	hash := "0x" + strings.Repeat("ab", 32)

	ok, err := l.HasCompletedPurchase(ctx, a)
	require.NoError(t, err)
	require.False(t, ok)
	_, err = l.Credit(ctx, billing.Posting{Account: a, Type: billing.Grant, Amount: 10, At: t0})
	require.NoError(t, err)
	ok, err = l.HasCompletedPurchase(ctx, a)
	require.NoError(t, err)
	require.False(t, ok, "only Purchase entries count, not a Grant")

	p := billing.Posting{Account: a, Type: billing.Purchase, Amount: 5 * billing.Dollar, ChainID: 8453, TxHash: hash, Description: "USDT", At: t0}
	e, err := l.Credit(ctx, p)
	require.NoError(t, err)
	require.Equal(t, uint64(8453), e.ChainID)
	require.Equal(t, hash, e.TxHash)
	ok, err = l.HasCompletedPurchase(ctx, a)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = l.HasCompletedPurchase(ctx, b)
	require.NoError(t, err)
	require.False(t, ok)

	// The same payment again, by anyone, in any case: refused.
	for _, q := range []billing.Posting{
		p,
		{Account: b, Type: billing.Purchase, Amount: 5 * billing.Dollar, ChainID: 8453, TxHash: hash, At: t0},
		{Account: a, Type: billing.Purchase, Amount: 7 * billing.Dollar, ChainID: 8453, TxHash: strings.ToUpper(hash[:10]) + hash[10:], At: t0},
		{Account: a, Type: billing.Purchase, Amount: 5 * billing.Dollar, ChainID: 8453, TxHash: hash, IdempotencyKey: "other", At: t0},
	} {
		_, err = l.Credit(ctx, q)
		billRequireCode(t, err, fault.Conflict)
		require.Equal(t, billing.MsgAlreadyProcessed, fault.MessageOf(err))
	}
	// The same hash on another chain is another payment.
	e2, err := l.Credit(ctx, billing.Posting{Account: b, Type: billing.Purchase, Amount: billing.Dollar, ChainID: 1, TxHash: hash, At: t0})
	require.NoError(t, err)
	require.Equal(t, uint64(1), e2.ChainID)
	// Chain IDs round-trip in full.
	e3, err := l.Credit(ctx, billing.Posting{Account: b, Type: billing.Purchase, Amount: billing.Dollar, ChainID: 1<<63 + 5, TxHash: hash, At: t0})
	require.NoError(t, err)
	require.Equal(t, uint64(1<<63+5), e3.ChainID)

	billRequireBooks(t, l, a, billing.Balance{Total: 5*billing.Dollar + 10})
	es := billRequireBooks(t, l, b, billing.Balance{Total: 2 * billing.Dollar})
	require.Len(t, es, 2)
	require.Equal(t, uint64(1<<63+5), es[1].ChainID)
	require.Equal(t, hash, es[1].TxHash)
}

func testLedgerEntries(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	acct := billAddr(1)
	post := func(typ billing.TxType, amt billing.MicroCents, at time.Time) billing.Entry {
		call := l.Debit
		if typ.Credits() {
			call = l.Credit
		}
		e, err := call(ctx, billing.Posting{Account: acct, Type: typ, Amount: amt, At: at})
		require.NoError(t, err)
		return e
	}
	// Written out of time order, with ties.
	e3 := post(billing.Purchase, 1000, t0.Add(3*time.Minute))
	e1 := post(billing.Grant, 2, t0.Add(time.Minute))
	e2a := post(billing.Domain, 4, t0.Add(2*time.Minute))
	e2b := post(billing.NewsFeed, 8, t0.Add(2*time.Minute))
	e2c := post(billing.Domain, 16, t0.Add(2*time.Minute))
	e4 := post(billing.ChatInference, 32, t0.Add(4*time.Minute))

	ids := func(fl billing.EntryFilter) []string {
		es, err := billing.AllEntries(ctx, l, acct, fl) // oldest first
		require.NoError(t, err)
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.ID
		}
		return out
	}
	// Ledger order is write order, whatever the timestamps say.
	require.Equal(t, []string{e3.ID, e1.ID, e2a.ID, e2b.ID, e2c.ID, e4.ID}, ids(billing.EntryFilter{}), "ledger order: as written")
	require.Equal(t, []string{e3.ID, e2a.ID, e2b.ID, e2c.ID}, ids(billing.EntryFilter{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}), "Since inclusive, Until exclusive")
	require.Equal(t, []string{e3.ID, e4.ID}, ids(billing.EntryFilter{Since: t0.Add(2*time.Minute + time.Microsecond)}))
	require.Equal(t, []string{e1.ID}, ids(billing.EntryFilter{Until: t0.Add(2 * time.Minute)}))
	require.Equal(t, []string{e2a.ID, e2c.ID, e4.ID}, ids(billing.EntryFilter{Types: []billing.TxType{billing.Domain, billing.ChatInference}}))
	require.Equal(t, []string{e2a.ID, e2c.ID}, ids(billing.EntryFilter{Types: []billing.TxType{billing.Domain}, Until: t0.Add(4 * time.Minute)}))
	require.Empty(t, ids(billing.EntryFilter{Types: []billing.TxType{billing.SttInference}}))
	require.Empty(t, ids(billing.EntryFilter{Since: t0.Add(time.Hour)}))

	// Pages, both ways, by Seq.
	all, err := billing.AllEntries(ctx, l, acct, billing.EntryFilter{})
	require.NoError(t, err)
	for i := 1; i < len(all); i++ {
		require.Less(t, all[i-1].Seq, all[i].Seq, "Seq increases in ledger order")
		require.Equal(t, all[i-1].BalanceAfter+all[i].Amount, all[i].BalanceAfter, "each row chains to the one before")
	}
	// Pages: newest first, each strictly older than the last, More set
	// while older entries exist; the filter applies before the limit.
	pages := func(fl billing.EntryFilter, limit int) (out [][]string) {
		for r := (page.Request{Limit: limit}); ; {
			p, err := l.Entries(ctx, acct, fl, r)
			require.NoError(t, err)
			require.LessOrEqual(t, len(p.Items), limit)
			require.NotNil(t, p.Items)
			var ids []string
			for _, e := range p.Items {
				ids = append(ids, e.ID)
			}
			out = append(out, ids)
			if !p.More {
				return out
			}
			require.Equal(t, billing.EntryKey(p.Items[len(p.Items)-1]), p.Next)
			r.After = p.Next
		}
	}
	require.Equal(t, [][]string{{e4.ID, e2c.ID, e2b.ID, e2a.ID}, {e1.ID, e3.ID}}, pages(billing.EntryFilter{}, 4))
	require.Equal(t, [][]string{{e4.ID, e2c.ID, e2b.ID}, {e2a.ID, e1.ID, e3.ID}}, pages(billing.EntryFilter{}, 3), "a full last page says no more")
	require.Equal(t, [][]string{{e4.ID, e2c.ID}, {e2a.ID}}, pages(billing.EntryFilter{Types: []billing.TxType{billing.Domain, billing.ChatInference}}, 2))
	require.Equal(t, [][]string{{e2c.ID, e2b.ID}, {e2a.ID, e3.ID}}, pages(billing.EntryFilter{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}, 2))
	p, err := l.Entries(ctx, acct, billing.EntryFilter{}, page.Request{After: billing.EntryKey(all[4]), Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []string{e2b.ID, e2a.ID}, []string{p.Items[0].ID, p.Items[1].ID}, "strictly older than the key")
	require.True(t, p.More)
	p, err = l.Entries(ctx, acct, billing.EntryFilter{}, page.Request{})
	require.NoError(t, err)
	require.Len(t, p.Items, 6, "the default page size holds them all")
	require.False(t, p.More)
	empty, err := l.Entries(ctx, billAddr(2), billing.EntryFilter{}, page.Request{})
	require.NoError(t, err)
	require.Empty(t, empty.Items)
	require.NotNil(t, empty.Items)
	require.False(t, empty.More)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000 + 2 - 4 - 8 - 16 - 32})
}

func testLedgerUsage(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	billCredit(t, l, acct, billing.Dollar, billT0())
	u := &billing.Usage{Model: "llama-3.1-70b", InputTokens: 1234, OutputTokens: 5678}
	d, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 99, Usage: u, At: billT0()})
	require.NoError(t, err)
	require.Equal(t, u, d.Usage)
	u.InputTokens = 1 // the store keeps its own copy
	empty, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 1, Usage: &billing.Usage{}, At: billT0()})
	require.NoError(t, err)
	require.Equal(t, &billing.Usage{}, empty.Usage, "a zero usage is still a usage")
	es := billRequireBooks(t, l, acct, billing.Balance{Total: billing.Dollar - 100})
	require.Len(t, es, 3)
	require.Nil(t, es[0].Usage)
	require.Equal(t, &billing.Usage{Model: "llama-3.1-70b", InputTokens: 1234, OutputTokens: 5678}, es[1].Usage)
	require.Equal(t, &billing.Usage{}, es[2].Usage)
}

func testLedgerAccountCase(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	lower := "0x00000000000000000000000000000000000000ab"
	upper := "0x00000000000000000000000000000000000000AB"
	e := billCredit(t, l, upper, 100, billT0())
	require.Equal(t, lower, e.Account, "accounts are stored lowercase")
	_, err := l.Debit(ctx, billing.Posting{Account: lower, Type: billing.ChatInference, Amount: 60})
	require.NoError(t, err)
	billRequireBooks(t, l, lower, billing.Balance{Total: 40})
	bal, err := l.Balance(ctx, upper)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: 40}, bal)
}

// testLedgerTinyCharges debits 1000 charges of 1234 micro-cents (about
// 0.0012 cents each) from two handles and checks that exactly 1_234_000
// left the account.
func testLedgerTinyCharges(t *testing.T, f Factory) {
	open := f(t)
	ha, hb := open(t), open(t)
	ls := []billing.Ledger{as[billing.Ledger](t, ha), as[billing.Ledger](t, hb)}
	acct := billAddr(1)
	billCredit(t, ls[0], acct, 2*billing.Cent, billT0())

	const n, workers, charge = 1000, 4, billing.MicroCents(1234)
	errs := make(chan error, workers)
	sums := make(chan billing.MicroCents, workers)
	for w := range workers {
		go func() {
			var sum billing.MicroCents
			for i := w; i < n; i += workers {
				e, err := ls[w%2].Debit(context.Background(), billing.Posting{Account: acct, Type: billing.ChatInference, Amount: charge, At: billT0().Add(time.Duration(i) * time.Millisecond)})
				if err != nil {
					errs <- err
					sums <- sum
					return
				}
				sum += e.Amount
			}
			errs <- nil
			sums <- sum
		}()
	}
	var total billing.MicroCents
	for range workers {
		require.NoError(t, <-errs)
		total += <-sums
	}
	require.Equal(t, billing.MicroCents(-1_234_000), total)
	es := billRequireBooks(t, ls[1], acct, billing.Balance{Total: 2*billing.Cent - 1_234_000})
	require.Len(t, es, n+1)
	// Every charge saw the one before it: the balances after the debits
	// are exactly 2 cents - k*1234 for k = 1..1000, each once.
	seen := make(map[billing.MicroCents]bool)
	for _, e := range es[1:] {
		require.Equal(t, -charge, e.Amount)
		k := (2*billing.Cent - e.BalanceAfter) / charge
		require.Equal(t, 2*billing.Cent-k*charge, e.BalanceAfter, "balance_after off the grid")
		require.True(t, k >= 1 && k <= n, "balance_after out of range: %d", e.BalanceAfter)
		require.False(t, seen[e.BalanceAfter], "two charges left the same balance %d", e.BalanceAfter)
		seen[e.BalanceAfter] = true
	}
}
