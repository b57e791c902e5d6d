package storagetest

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// billHandles opens two handles on one fresh database, as two server
// processes would, and returns their ledgers.
func billHandles(t *testing.T, f Factory) [2]billing.Ledger {
	open := f(t)
	a, b := open(t), open(t)
	return [2]billing.Ledger{as[billing.Ledger](t, a), as[billing.Ledger](t, b)}
}

// billWarm calls fn from n goroutines at once and waits for them, so that
// connection pools have connections open before a race starts and the
// racers really overlap.
func billWarm(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

// billWarmLedgers opens connections on both ledgers' pools.
func billWarmLedgers(ls [2]billing.Ledger, n int) {
	billWarm(n, func(i int) { _, _ = ls[i%2].Balance(context.Background(), billAddr(0)) })
}

// testLedgerIdempotencyRace sends one keyed debit and one keyed hold from
// 8 goroutines over two handles: each applies once and every caller gets
// the same result.
func testLedgerIdempotencyRace(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	acct := billAddr(1)
	billCredit(t, ls[0], acct, 1000, billT0())

	const n = 8
	billWarmLedgers(ls, 2*n)
	var wg sync.WaitGroup
	entries := make([]billing.Entry, n)
	holds := make([]billing.Hold, n)
	errs := make([]error, 2*n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			entries[i], errs[i] = ls[i%2].Debit(context.Background(), billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 300, IdempotencyKey: "same-debit", At: billT0()})
		}()
		go func() {
			defer wg.Done()
			<-start
			holds[i], errs[n+i] = ls[(i+1)%2].PlaceHold(context.Background(), billing.HoldRequest{Account: acct, Amount: 200, ExpiresAt: billFar(), IdempotencyKey: "same-hold", At: billT0()})
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for i := 1; i < n; i++ {
		require.Equal(t, entries[0], entries[i])
		require.Equal(t, holds[0], holds[i])
	}
	es := billRequireBooks(t, ls[1], acct, billing.Balance{Total: 700, Held: 200})
	require.Len(t, es, 2)
}

// testLedgerKeyedDebitDrainsRace sends one keyed debit that takes the
// whole balance from 8 goroutines over two handles, several times: the
// debit applies once and every caller gets its entry, never
// InsufficientFunds because a duplicate got there first.
func testLedgerKeyedDebitDrainsRace(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	const n = 8
	billWarmLedgers(ls, n)
	for round := range 5 {
		acct := billAddr(10 + round)
		billCredit(t, ls[0], acct, 300, billT0())
		var wg sync.WaitGroup
		entries := make([]billing.Entry, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				entries[i], errs[i] = ls[i%2].Debit(context.Background(), billing.Posting{
					Account: acct, Type: billing.ChatInference, Amount: 300, IdempotencyKey: "drain", At: billT0(),
				})
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i], "round %d caller %d", round, i)
			require.Equal(t, entries[0], entries[i])
		}
		es := billRequireBooks(t, ls[1], acct, billing.Balance{Total: 0})
		require.Len(t, es, 2)
	}
}

// testLedgerPurchaseRace credits one on-chain payment from 8 goroutines
// over two handles, to two accounts: exactly one credit happens.
func testLedgerPurchaseRace(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	hash := "0x" + strings.Repeat("cd", 32)
	const n = 8
	billWarmLedgers(ls, n)
	var wg sync.WaitGroup
	var won, refused atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := ls[i%2].Credit(context.Background(), billing.Posting{Account: billAddr(1 + i%4/2), Type: billing.Purchase, Amount: 5 * billing.Dollar, ChainID: 56, TxHash: hash, At: billT0()})
			switch {
			case err == nil:
				won.Add(1)
			case fault.CodeOf(err) == fault.Conflict && fault.MessageOf(err) == billing.MsgAlreadyProcessed:
				refused.Add(1)
			default:
				t.Errorf("credit: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	require.Equal(t, int32(1), won.Load(), "exactly one credit")
	require.Equal(t, int32(n-1), refused.Load())
	b1, err := ls[0].Balance(t.Context(), billAddr(1))
	require.NoError(t, err)
	b2, err := ls[0].Balance(t.Context(), billAddr(2))
	require.NoError(t, err)
	require.Equal(t, 5*billing.Dollar, b1.Total+b2.Total)
	billRequireBooks(t, ls[1], billAddr(1), b1)
	billRequireBooks(t, ls[1], billAddr(2), b2)
}

// testLedgerConcurrent races 64 goroutines over two handles doing holds,
// settles, releases, debits and small credits against one account with a
// small balance. The account must never overdraw, and afterwards the
// entries must add up to the balance and to what the callers were told.
func testLedgerConcurrent(t *testing.T, f Factory) {
	ls := billHandles(t, f)
	acct := billAddr(1)
	const initial = billing.MicroCents(10_000)
	billCredit(t, ls[0], acct, initial, billT0())

	const workers, ops = 64, 5
	var (
		wg               sync.WaitGroup
		moved            atomic.Int64 // sum of the amounts of the entries written
		written          atomic.Int64 // number of entries written
		refused          atomic.Int64 // InsufficientFunds answers
		lowest           atomic.Int64 // lowest Available seen by anyone
		done             = make(chan struct{})
		start            = make(chan struct{})
		monitorWG        sync.WaitGroup
		checkBalance     func(billing.Ledger)
		expiry           = billFar()
		ctx              = context.Background()
		unexpected       = func(what string, err error) { t.Errorf("%s: unexpected error %v", what, err) }
		recordEntry      = func(e billing.Entry) { moved.Add(int64(e.Amount)); written.Add(1) }
		okOrInsufficient = func(what string, err error) bool {
			if err == nil {
				return true
			}
			if fault.CodeOf(err) == fault.InsufficientFunds {
				refused.Add(1)
			} else {
				unexpected(what, err)
			}
			return false
		}
	)
	lowest.Store(int64(initial))
	billWarmLedgers(ls, workers)
	checkBalance = func(l billing.Ledger) {
		b, err := l.Balance(ctx, acct)
		if err != nil {
			unexpected("balance", err)
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
	// A monitor reads the balance throughout.
	monitorWG.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				checkBalance(ls[1])
				time.Sleep(time.Millisecond)
			}
		}
	})
	for w := range workers {
		wg.Go(func() {
			l := ls[w%2]
			r := rand.New(rand.NewPCG(uint64(w), 42))
			<-start
			for range ops {
				switch r.IntN(10) {
				case 0, 1, 2: // debit
					e, err := l.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: billing.MicroCents(1 + r.IntN(1500))})
					if okOrInsufficient("debit", err) {
						recordEntry(e)
					}
				case 3: // small credit
					e, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.MicroCents(1 + r.IntN(300))})
					if err != nil {
						unexpected("credit", err)
					} else {
						recordEntry(e)
					}
				default: // hold, then settle (sometimes over) or release
					amt := billing.MicroCents(1 + r.IntN(3000))
					h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: amt, ExpiresAt: expiry})
					if !okOrInsufficient("hold", err) {
						break
					}
					checkBalance(l)
					other := ls[r.IntN(2)] // resolve through either handle
					if r.IntN(4) == 0 {
						if err := other.ReleaseHold(ctx, h.ID); err != nil {
							unexpected("release", err)
						}
						break
					}
					e, err := other.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(r.IntN(int(amt) * 3 / 2)), Type: billing.ChatInference})
					if err != nil {
						unexpected("settle", err)
						break
					}
					if e.Amount > 0 || -e.Amount > amt {
						t.Errorf("settled %d on a hold of %d", e.Amount, amt)
					}
					recordEntry(e)
				}
				checkBalance(l)
			}
		})
	}
	close(start)
	wg.Wait()
	close(done)
	monitorWG.Wait()

	require.GreaterOrEqual(t, lowest.Load(), int64(0), "available balance went negative")
	require.Positive(t, refused.Load(), "the race should have refused some requests; the test is too gentle")
	es := billRequireBooks(t, ls[0], acct, billing.Balance{Total: initial + billing.MicroCents(moved.Load())})
	require.Len(t, es, 1+int(written.Load()))
	billRequireBooks(t, ls[1], acct, billing.Balance{Total: initial + billing.MicroCents(moved.Load())})
}
