package storagetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

// chainDuration is how long testLedgerChain's clients run (2 s with
// -short).
const chainDuration = 10 * time.Second

// testLedgerChain runs 8 clients for chainDuration against two accounts,
// crediting, debiting and settling holds with timestamps taken before each
// call (as the billing service does, so they reach the ledger out of
// order), then reads every entry back in pages, both ways, and checks the
// chain: in ledger order, each entry's BalanceAfter is the previous one's
// plus its Amount, the last is the balance, a debit's amount is never
// positive, and whole-cent figures (billing.Shown) add up the same way.
func testLedgerChain(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	accts := []string{billAddr(1), billAddr(2)}
	for _, a := range accts {
		billCredit(t, l, a, 5*billing.Dollar, time.Now().UTC())
	}
	d := chainDuration
	if testing.Short() {
		d = 2 * time.Second
	}
	stop := time.Now().Add(d)
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 99))
			for time.Now().Before(stop) {
				if err := chainOp(ctx, l, accts[rng.IntN(len(accts))], rng); err != nil {
					errs <- err
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d operations", ops.Load())

	for _, a := range accts {
		bal, err := l.Balance(ctx, a)
		require.NoError(t, err)
		require.Zero(t, bal.Held, "every hold was resolved")
		// Newest first, in pages of 97, then reversed.
		var asc []billing.Entry
		for r := (page.Request{Limit: 97}); ; {
			p, err := l.Entries(ctx, a, billing.EntryFilter{}, r)
			require.NoError(t, err)
			require.LessOrEqual(t, len(p.Items), 97)
			asc = append(asc, p.Items...)
			if !p.More {
				break
			}
			r.After = p.Next
		}
		slices.Reverse(asc)
		var prev billing.MicroCents
		var prevShown int64
		for i, e := range asc { // plain comparisons: there may be a million
			if prev+e.Amount != e.BalanceAfter {
				t.Fatalf("%s: entry %d (%s, %s) breaks the chain: previous balance %d + amount %d != balance after %d",
					a, i, e.ID, e.Type, prev, e.Amount, e.BalanceAfter)
			}
			if e.Type != billing.Purchase && e.Amount > 0 {
				t.Fatalf("%s: entry %d: a %s entry credits %d", a, i, e.Type, e.Amount)
			}
			sh := billing.Shown(e)
			if prevShown+sh.ShownAmount != sh.ShownBalanceAfter {
				t.Fatalf("%s: entry %d: shown cents do not chain: %d + %d != %d", a, i, prevShown, sh.ShownAmount, sh.ShownBalanceAfter)
			}
			if e.Amount < 0 && sh.ShownAmount > 0 {
				t.Fatalf("%s: entry %d: a debit of %d µ¢ shows as a credit of %d ¢", a, i, e.Amount, sh.ShownAmount)
			}
			prev, prevShown = e.BalanceAfter, sh.ShownBalanceAfter
		}
		require.Equal(t, bal.Total, prev, "%s: the last entry's balance is the balance", a)

		// In other pages, through AllEntries: the same entries.
		all, err := billing.AllEntries(ctx, l, a, billing.EntryFilter{})
		require.NoError(t, err)
		require.Len(t, all, len(asc))
		for i := range all {
			if asc[i].ID != all[i].ID {
				t.Fatalf("%s: entry %d is %s in pages of 97, %s in pages of %d", a, i, asc[i].ID, all[i].ID, billing.EntriesPageMax)
			}
		}
	}
}

// chainOp is one random ledger operation of testLedgerChain. Running out
// of funds is not an error.
func chainOp(ctx context.Context, l billing.Ledger, acct string, rng *rand.Rand) error {
	at := time.Now().UTC() // before the call, like the billing service
	amt := billing.MicroCents(1 + rng.Int64N(int64(3*billing.Cent)))
	var err error
	switch n := rng.IntN(10); {
	case n == 0:
		_, err = l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 16 * billing.Dollar / 10, Description: "top-up", At: at})
	case n < 3:
		_, err = l.Debit(ctx, billing.Posting{Account: acct, Type: billing.Domain, Amount: amt, Description: "hour", At: at})
	default:
		var h billing.Hold
		h, err = l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, At: at, ExpiresAt: at.Add(time.Hour)})
		if err != nil {
			break
		}
		if rng.IntN(8) == 0 {
			err = l.ReleaseHold(ctx, h.ID)
			break
		}
		_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(rng.Int64N(int64(amt) + 1)),
			Type: billing.ChatInference, Description: "chat", At: time.Now().UTC()})
	}
	if errors.Is(err, fault.InsufficientFunds) {
		return nil
	}
	return err
}
