package storagetest

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// testLedgerRules checks the money rules every store applies (billing's
// package doc): accounts are wallet addresses; only Purchase and Grant
// credit; only inference, feed and domain types debit, settle or charge
// a subscription. A Grant credits, shows with its type, carries no
// payment and is not a completed purchase.
func testLedgerRules(t *testing.T, f Factory) {
	s := fresh(t, f)
	l := as[billing.Ledger](t, s)
	ctx := t.Context()
	acct := billAddr(1)
	billCredit(t, l, acct, 1000, billT0())

	for _, bad := range []string{"bob", "0xab", "0x" + "g000000000000000000000000000000000000000", billAddr(1) + "0", "00" + billAddr(1)[2:]} {
		_, err := l.Credit(ctx, billing.Posting{Account: bad, Type: billing.Purchase, Amount: 1})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.Credit(ctx, billing.Posting{Account: bad, Type: billing.Grant, Amount: 1})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.Debit(ctx, billing.Posting{Account: bad, Type: billing.ChatInference, Amount: 1})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.PlaceHold(ctx, billing.HoldRequest{Account: bad, Amount: 1, ExpiresAt: billFar()})
		billRequireCode(t, err, fault.Invalid)
		_, err = l.Balance(ctx, bad)
		billRequireCode(t, err, fault.Invalid)
	}
	for _, typ := range []billing.TxType{billing.ChatInference, billing.SttInference, billing.NewsFeed, billing.Domain, "Refund"} {
		_, err := l.Credit(ctx, billing.Posting{Account: acct, Type: typ, Amount: 1})
		billRequireCode(t, err, fault.Invalid)
	}
	for _, typ := range []billing.TxType{billing.Purchase, billing.Grant, "Refund"} {
		_, err := l.Debit(ctx, billing.Posting{Account: acct, Type: typ, Amount: 1})
		billRequireCode(t, err, fault.Invalid)
		h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 1, ExpiresAt: billFar()})
		require.NoError(t, err)
		_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1, Type: typ})
		billRequireCode(t, err, fault.Invalid)
		require.NoError(t, l.ReleaseHold(ctx, h.ID))
	}
	// A Grant carries no payment.
	_, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Grant, Amount: 1, ChainID: 8453,
		TxHash: "0x" + "11111111111111111111111111111111" + "11111111111111111111111111111111"})
	billRequireCode(t, err, fault.Invalid)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000})

	if subs, ok := s.(billing.SubscriptionStore); ok {
		_, _, err := subs.CreateSubscription(ctx, billing.Subscription{Account: acct, Kind: "feed", Resource: "news",
			Type: billing.Purchase, HourlyCost: 10}, billing.Posting{Amount: 10, At: billT0()})
		billRequireCode(t, err, fault.Invalid)
		_, _, err = subs.CreateSubscription(ctx, billing.Subscription{Account: "bob", Kind: "feed", Resource: "news",
			Type: billing.NewsFeed, HourlyCost: 10}, billing.Posting{Amount: 10, At: billT0()})
		billRequireCode(t, err, fault.Invalid)
	}

	// A Grant to a wallet that never bought anything.
	granted := billAddr(2)
	g, err := l.Credit(ctx, billing.Posting{Account: granted, Type: billing.Grant, Amount: 500, Description: "trial credit", At: billT0()})
	require.NoError(t, err)
	require.Equal(t, billing.Grant, g.Type)
	require.Equal(t, billing.MicroCents(500), g.Amount)
	bought, err := l.HasCompletedPurchase(ctx, granted)
	require.NoError(t, err)
	require.False(t, bought, "a Grant is not a purchase")
	_, err = l.Debit(ctx, billing.Posting{Account: granted, Type: billing.ChatInference, Amount: 200, At: billT0()})
	require.NoError(t, err)
	es := billRequireBooks(t, l, granted, billing.Balance{Total: 300})
	require.Equal(t, billing.Grant, es[0].Type)
	require.Equal(t, "trial credit", es[0].Description)
	p, err := l.Entries(ctx, granted, billing.EntryFilter{Types: []billing.TxType{billing.Grant}}, page.Request{})
	require.NoError(t, err)
	require.Len(t, p.Items, 1)
	billCredit(t, l, granted, 100, billT0())
	bought, err = l.HasCompletedPurchase(ctx, granted)
	require.NoError(t, err)
	require.True(t, bought)
}

// testLedgerSettleBeyondHold checks Settlement.ExceedHold: the excess
// over the hold comes from the available balance (never from another
// open hold), capped at what is available, in one entry; without it the
// settlement is clamped to the hold.
func testLedgerSettleBeyondHold(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	billCredit(t, l, acct, 1000, billT0())
	hold := func(amt billing.MicroCents) billing.Hold {
		t.Helper()
		h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, ExpiresAt: billFar(), At: billT0()})
		require.NoError(t, err)
		return h
	}
	settle := func(h billing.Hold, amt billing.MicroCents, beyond bool) billing.Entry {
		t.Helper()
		e, err := l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: amt, Type: billing.SttInference,
			ExceedHold: beyond, Description: "beyond", At: billT0()})
		require.NoError(t, err)
		return e
	}

	// Within the hold, ExceedHold changes nothing.
	e := settle(hold(100), 40, true)
	require.Equal(t, billing.MicroCents(-40), e.Amount)
	billRequireBooks(t, l, acct, billing.Balance{Total: 960})
	// Without it, the hold caps the debit.
	e = settle(hold(100), 300, false)
	require.Equal(t, billing.MicroCents(-100), e.Amount)
	billRequireBooks(t, l, acct, billing.Balance{Total: 860})
	// With it, 300 on a hold of 100: 200 more from the available balance.
	e = settle(hold(100), 300, true)
	require.Equal(t, billing.MicroCents(-300), e.Amount)
	require.Equal(t, billing.MicroCents(560), e.BalanceAfter)
	billRequireBooks(t, l, acct, billing.Balance{Total: 560})
	// Another open hold is not touched: 10,000 on a hold of 100 while 200
	// are held elsewhere takes the hold and the 260 available, no more.
	other := hold(200)
	e = settle(hold(100), 10_000, true)
	require.Equal(t, billing.MicroCents(-360), e.Amount)
	require.Equal(t, billing.MicroCents(200), e.BalanceAfter)
	billRequireBooks(t, l, acct, billing.Balance{Total: 200, Held: 200})
	// Clamped to the hold; then nothing available beyond the hold.
	require.NoError(t, l.ReleaseHold(ctx, other.ID))
	e = settle(hold(50), 10_000, false)
	require.Equal(t, billing.MicroCents(-50), e.Amount)
	e = settle(hold(150), 10_000, true)
	require.Equal(t, billing.MicroCents(-150), e.Amount)
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 0})
	require.Len(t, es, 7, "one entry per settlement")
	// A settled hold stays settled.
	_, err := l.SettleHold(ctx, billing.Settlement{HoldID: other.ID, Amount: 1, Type: billing.SttInference, ExceedHold: true})
	billRequireCode(t, err, fault.NotFound)
}

// testLedgerSettleBeyondHoldRace races settlements beyond their holds
// against debits and holds of the same account over two handles: the
// available balance never goes below zero, and the entries add up.
func testLedgerSettleBeyondHoldRace(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	acct := billAddr(1)
	const funds = 10_000
	billCredit(t, ls[0], acct, funds, billT0())
	billWarmLedgers(ls, 8)
	ctx := context.Background()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 8 {
		wg.Go(func() {
			l := ls[i%2]
			<-start
			for range 10 {
				if i%2 == 0 {
					h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 50, ExpiresAt: billFar(), At: billT0()})
					if err != nil {
						assert.ErrorIs(t, err, fault.InsufficientFunds)
						continue
					}
					_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 400, Type: billing.SttInference, ExceedHold: true, At: billT0()})
					assert.NoError(t, err)
				} else {
					_, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 150, At: billT0()})
					if err != nil {
						assert.ErrorIs(t, err, fault.InsufficientFunds)
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	bal, err := ls[0].Balance(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, bal.Held)
	require.GreaterOrEqual(t, bal.Total, billing.MicroCents(0))
	es := billRequireBooks(t, ls[0], acct, bal)
	var spent billing.MicroCents
	for _, e := range es[1:] {
		spent -= e.Amount
	}
	require.Equal(t, billing.MicroCents(funds)-bal.Total, spent)
}
