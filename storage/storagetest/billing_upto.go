package storagetest

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// testLedgerHoldUpTo checks "hold up to" requests (HoldRequest.MinAmount
// > 0): the whole amount when the available balance covers it, the
// available balance when it covers only the minimum, a refusal below the
// minimum, validation, and idempotent replay of what was held.
func testLedgerHoldUpTo(t *testing.T, f Factory) {
	l := as[billing.Ledger](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	t0 := billT0()
	upTo := func(amount, minAmount billing.MicroCents) (billing.Hold, error) {
		return l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amount, MinAmount: minAmount, ExpiresAt: t0.Add(time.Minute), At: t0})
	}

	// Unknown account: nothing available.
	_, err := upTo(100, 1)
	billRequireCode(t, err, fault.InsufficientFunds)
	require.Equal(t, "insufficient credits", fault.MessageOf(err))
	billRequireBooks(t, l, acct, billing.Balance{})

	billCredit(t, l, acct, 1000, t0)

	// Exact: the available balance covers the amount, so all of it is held.
	h1, err := upTo(300, 50)
	require.NoError(t, err)
	require.NotEmpty(t, h1.ID)
	require.Equal(t, acct, h1.Account)
	require.Equal(t, billing.MicroCents(300), h1.Amount)
	billRequireTime(t, t0, h1.CreatedAt)
	billRequireTime(t, t0.Add(time.Minute), h1.ExpiresAt)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 300})

	// A minimum equal to the amount is an exact hold.
	h2, err := upTo(200, 200)
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(200), h2.Amount)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 500})

	// Partial: 500 available, 800 asked, at least 400: 500 held.
	h3, err := upTo(800, 400)
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(500), h3.Amount, "what was held: the whole available balance")
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 1000})
	require.Len(t, es, 1, "a hold writes no entry")

	// Below the minimum: nothing available, then less than the minimum.
	_, err = upTo(10, 1)
	billRequireCode(t, err, fault.InsufficientFunds)
	require.NoError(t, l.ReleaseHold(ctx, h2.ID))
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 800})
	_, err = upTo(1000, 201)
	billRequireCode(t, err, fault.InsufficientFunds)
	_, err = upTo(201, 201)
	billRequireCode(t, err, fault.InsufficientFunds)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 800})
	// Exactly the minimum available: held.
	h4, err := upTo(1000, 200)
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(200), h4.Amount)
	billRequireBooks(t, l, acct, billing.Balance{Total: 1000, Held: 1000})

	// A partial hold settles and releases like any other: clamped to what
	// was held.
	e, err := l.SettleHold(ctx, billing.Settlement{HoldID: h3.ID, Amount: 700, Type: billing.ChatInference})
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(-500), e.Amount)
	require.Equal(t, billing.MicroCents(500), e.BalanceAfter)
	require.NoError(t, l.ReleaseHold(ctx, h4.ID))
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h1.ID, Amount: 100, Type: billing.ChatInference})
	require.NoError(t, err)
	billRequireBooks(t, l, acct, billing.Balance{Total: 400})

	// Validation: the minimum is neither negative nor above the amount.
	for _, m := range []billing.MicroCents{-1, 401} {
		_, err = upTo(400, m)
		billRequireCode(t, err, fault.Invalid)
	}
	billRequireBooks(t, l, acct, billing.Balance{Total: 400})

	// Idempotent replay: a retry returns what was held the first time,
	// whatever is available now, and holds nothing more.
	r := billing.HoldRequest{Account: acct, Amount: 1000, MinAmount: 100, ExpiresAt: billFar(), IdempotencyKey: "upto-1", At: t0}
	k1, err := l.PlaceHold(ctx, r)
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(400), k1.Amount)
	billRequireBooks(t, l, acct, billing.Balance{Total: 400, Held: 400})
	billCredit(t, l, acct, 5000, t0)
	r2 := r
	r2.ExpiresAt = billFar().Add(time.Hour) // a retry may compute a fresh expiry
	k2, err := l.PlaceHold(ctx, r2)
	require.NoError(t, err)
	require.Equal(t, k1, k2, "a retry returns the first hold, for what it held")
	billRequireBooks(t, l, acct, billing.Balance{Total: 5400, Held: 400})
	// The same key for another request: another minimum, another amount,
	// or an exact hold of the same amount.
	for _, other := range []billing.HoldRequest{
		{Account: acct, Amount: 1000, MinAmount: 99, ExpiresAt: billFar(), IdempotencyKey: "upto-1"},
		{Account: acct, Amount: 999, MinAmount: 100, ExpiresAt: billFar(), IdempotencyKey: "upto-1"},
		{Account: acct, Amount: 1000, ExpiresAt: billFar(), IdempotencyKey: "upto-1"},
	} {
		_, err = l.PlaceHold(ctx, other)
		billRequireCode(t, err, fault.Conflict)
	}
	// After the hold is settled, a retry still returns it and holds nothing.
	_, err = l.SettleHold(ctx, billing.Settlement{HoldID: k1.ID, Amount: 150, Type: billing.ChatInference})
	require.NoError(t, err)
	k3, err := l.PlaceHold(ctx, r)
	require.NoError(t, err)
	require.Equal(t, k1, k3)
	billRequireBooks(t, l, acct, billing.Balance{Total: 5250})

	// A refused keyed up-to hold does not use up its key.
	poor := billAddr(2)
	billCredit(t, l, poor, 50, t0)
	rp := billing.HoldRequest{Account: poor, Amount: 500, MinAmount: 60, ExpiresAt: billFar(), IdempotencyKey: "upto-2", At: t0}
	_, err = l.PlaceHold(ctx, rp)
	billRequireCode(t, err, fault.InsufficientFunds)
	billCredit(t, l, poor, 10, t0)
	kp, err := l.PlaceHold(ctx, rp)
	require.NoError(t, err)
	require.Equal(t, billing.MicroCents(60), kp.Amount)
	// An exact hold whose minimum equals its amount shares the exact
	// hold's key: it is the same request.
	billCredit(t, l, poor, 100, t0)
	ke, err := l.PlaceHold(ctx, billing.HoldRequest{Account: poor, Amount: 70, ExpiresAt: billFar(), IdempotencyKey: "exact", At: t0})
	require.NoError(t, err)
	ke2, err := l.PlaceHold(ctx, billing.HoldRequest{Account: poor, Amount: 70, MinAmount: 70, ExpiresAt: billFar(), IdempotencyKey: "exact", At: t0})
	require.NoError(t, err)
	require.Equal(t, ke, ke2)
	billRequireBooks(t, l, poor, billing.Balance{Total: 160, Held: 130})
}

// testLedgerHoldUpToRace races 32 goroutines over two handles doing "hold
// up to" requests on one account (after 8 sending one keyed hold that
// takes all of an account's money, which must be placed once). First every goroutine keeps its hold:
// together they ask for far more than the balance, so the holds granted
// must add up to at most the balance, each between its minimum and its
// amount, and a refused request must really have found less than its
// minimum. Then they churn,
// holding up to, settling and releasing through either handle while a
// monitor reads the balance: the available balance never goes negative,
// and the books add up to what the callers were told.
func testLedgerHoldUpToRace(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	acct := billAddr(1)
	const initial = billing.MicroCents(10_000)
	billCredit(t, ls[0], acct, initial, billT0())
	ctx := context.Background()
	const workers = 32
	billWarmLedgers(ls, workers)

	// Phase 0: one keyed hold sent by 8 workers at once, on other
	// accounts, that takes all the money (the copies that come second find
	// none left): it is placed once, and every caller gets it. Up to, then
	// exact.
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
	)
	for n, req := range []billing.HoldRequest{
		{Account: billAddr(2), Amount: 1000, MinAmount: 100, ExpiresAt: billFar(), IdempotencyKey: "same", At: billT0()},
		{Account: billAddr(3), Amount: 700, ExpiresAt: billFar(), IdempotencyKey: "same", At: billT0()},
	} {
		billCredit(t, ls[0], req.Account, 700, billT0())
		holds := make([]billing.Hold, 8)
		errs := make([]error, 8)
		start = make(chan struct{})
		for i := range holds {
			wg.Go(func() {
				<-start
				holds[i], errs[i] = ls[i%2].PlaceHold(ctx, req)
			})
		}
		close(start)
		wg.Wait()
		for i := range holds {
			require.NoError(t, errs[i], "request %d, caller %d", n, i)
			require.Equal(t, holds[0], holds[i])
		}
		require.Equal(t, billing.MicroCents(700), holds[0].Amount)
		billRequireBooks(t, ls[1], req.Account, billing.Balance{Total: 700, Held: 700})
	}

	// Phase 1: every worker places one up-to hold and keeps it.
	type result struct {
		req billing.HoldRequest
		h   billing.Hold
		err error
	}
	results := make([]result, workers)
	start = make(chan struct{})
	for w := range workers {
		results[w].req = billing.HoldRequest{
			Account: acct, Amount: billing.MicroCents(600 + 37*w), MinAmount: billing.MicroCents(50 + w),
			ExpiresAt: billFar(),
		}
		wg.Go(func() {
			<-start
			results[w].h, results[w].err = ls[w%2].PlaceHold(ctx, results[w].req)
		})
	}
	close(start)
	wg.Wait()
	var held billing.MicroCents
	var granted, partial, refused int
	for _, r := range results {
		if r.err != nil {
			billRequireCode(t, r.err, fault.InsufficientFunds)
			refused++
			continue
		}
		granted++
		require.GreaterOrEqual(t, r.h.Amount, r.req.MinAmount, "held at least the minimum")
		require.LessOrEqual(t, r.h.Amount, r.req.Amount, "held at most the amount")
		if r.h.Amount < r.req.Amount {
			partial++
		}
		held += r.h.Amount
	}
	t.Logf("phase 1: %d granted (%d partial), %d refused", granted, partial, refused)
	require.Positive(t, refused, "the workers ask for more than the balance")
	require.LessOrEqual(t, partial, 1, "a partial hold takes everything available: at most one per drain")
	billRequireBooks(t, ls[1], acct, billing.Balance{Total: initial, Held: held})
	for _, r := range results {
		if r.err != nil {
			// Nothing was released, so the available balance only fell:
			// a refusal means less than its minimum was left, then and now.
			require.Greater(t, r.req.MinAmount, initial-held, "refused with its minimum available")
			continue
		}
		require.NoError(t, ls[0].ReleaseHold(ctx, r.h.ID))
	}
	billRequireBooks(t, ls[0], acct, billing.Balance{Total: initial})

	// Phase 2: churn.
	const ops = 6
	var (
		moved, written, refusals atomic.Int64
		openHeld                 atomic.Int64 // sum of the holds left open
		lowest                   atomic.Int64
		done                     = make(chan struct{})
		monitor                  sync.WaitGroup
	)
	lowest.Store(int64(initial))
	check := func(l billing.Ledger) {
		b, err := l.Balance(ctx, acct)
		if err != nil {
			t.Errorf("balance: %v", err)
			return
		}
		for {
			cur := lowest.Load()
			if int64(b.Available()) >= cur || lowest.CompareAndSwap(cur, int64(b.Available())) {
				break
			}
		}
		assert.GreaterOrEqual(t, b.Held, billing.MicroCents(0))
	}
	monitor.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				check(ls[1])
				time.Sleep(time.Millisecond)
			}
		}
	})
	start = make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			l := ls[w%2]
			r := rand.New(rand.NewPCG(uint64(w), 7))
			<-start
			for range ops {
				amt := billing.MicroCents(1 + r.IntN(4000))
				minAmt := billing.MicroCents(1 + r.IntN(int(amt)))
				h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, MinAmount: minAmt, ExpiresAt: billFar()})
				if err != nil {
					if fault.CodeOf(err) != fault.InsufficientFunds {
						t.Errorf("hold: unexpected error %v", err)
					}
					refusals.Add(1)
					continue
				}
				if h.Amount < minAmt || h.Amount > amt {
					t.Errorf("held %d for a request of %d, at least %d", h.Amount, amt, minAmt)
				}
				check(l)
				other := ls[r.IntN(2)] // resolve through either handle
				switch r.IntN(5) {
				case 0:
					if err := other.ReleaseHold(ctx, h.ID); err != nil {
						t.Errorf("release: %v", err)
					}
				case 1:
					openHeld.Add(int64(h.Amount)) // left open to the end
				default:
					e, err := other.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(r.IntN(int(h.Amount) * 3 / 2)), Type: billing.ChatInference})
					if err != nil {
						t.Errorf("settle: %v", err)
						break
					}
					if e.Amount > 0 || -e.Amount > h.Amount {
						t.Errorf("settled %d on a hold of %d", e.Amount, h.Amount)
					}
					moved.Add(int64(e.Amount))
					written.Add(1)
				}
				check(l)
			}
		})
	}
	close(start)
	wg.Wait()
	close(done)
	monitor.Wait()

	require.GreaterOrEqual(t, lowest.Load(), int64(0), "available balance went negative")
	require.Positive(t, refusals.Load(), "the race should have refused some requests; the test is too gentle")
	want := billing.Balance{Total: initial + billing.MicroCents(moved.Load()), Held: billing.MicroCents(openHeld.Load())}
	es := billRequireBooks(t, ls[0], acct, want)
	require.Len(t, es, 1+int(written.Load()))
	billRequireBooks(t, ls[1], acct, want)
}
