package storagetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// TestLedger checks a backend's billing.Ledger: entries and balances,
// holds (exact and "up to"), idempotency, purchases, exactness of tiny
// charges, a randomized sequence checked against a model, and races across
// two handles (two processes' worth of connections) that must never
// overdraw an account.
func TestLedger(t *testing.T, f Factory) {
	t.Run("CreditDebit", func(t *testing.T) { testLedgerCreditDebit(t, f) })
	t.Run("Validation", func(t *testing.T) { testLedgerValidation(t, f) })
	t.Run("InsufficientFunds", func(t *testing.T) { testLedgerInsufficient(t, f) })
	t.Run("Holds", func(t *testing.T) { testLedgerHolds(t, f) })
	t.Run("HoldUpTo", func(t *testing.T) { testLedgerHoldUpTo(t, f) })
	t.Run("HoldResolvesOnce", func(t *testing.T) { testLedgerHoldResolvesOnce(t, f) })
	t.Run("ReleaseExpiredHolds", func(t *testing.T) { testLedgerReleaseExpired(t, f) })
	t.Run("Idempotency", func(t *testing.T) { testLedgerIdempotency(t, f) })
	t.Run("IdempotencyRace", func(t *testing.T) { testLedgerIdempotencyRace(t, f) })
	t.Run("KeyedDebitDrainsRace", func(t *testing.T) { testLedgerKeyedDebitDrainsRace(t, f) })
	t.Run("Purchases", func(t *testing.T) { testLedgerPurchases(t, f) })
	t.Run("PurchaseRace", func(t *testing.T) { testLedgerPurchaseRace(t, f) })
	t.Run("EntriesOrderAndFilter", func(t *testing.T) { testLedgerEntries(t, f) })
	t.Run("Usage", func(t *testing.T) { testLedgerUsage(t, f) })
	t.Run("AccountCase", func(t *testing.T) { testLedgerAccountCase(t, f) })
	t.Run("ExactTinyCharges", func(t *testing.T) { testLedgerTinyCharges(t, f) })
	t.Run("ConcurrentHoldsAndDebits", func(t *testing.T) { testLedgerConcurrent(t, f) })
	t.Run("ConcurrentHoldsUpTo", func(t *testing.T) { testLedgerHoldUpToRace(t, f) })
	t.Run("RandomizedModel", func(t *testing.T) { testLedgerModel(t, f) })
	t.Run("ChainUnderConcurrency", func(t *testing.T) { testLedgerChain(t, f) })
	t.Run("Rules", func(t *testing.T) { testLedgerRules(t, f) })
	t.Run("SettleBeyondHold", func(t *testing.T) { testLedgerSettleBeyondHold(t, f) })
	t.Run("SettleBeyondHoldRace", func(t *testing.T) { testLedgerSettleBeyondHoldRace(t, f) })
}

// TestPointsStore checks a backend's billing.PointsStore: awards, sums,
// history order, idempotency (also racing across two handles) and
// metadata. Metadata numbers come back as float64.
func TestPointsStore(t *testing.T, f Factory) {
	t.Run("AwardAndHistory", func(t *testing.T) { testPointsAward(t, f) })
	t.Run("Idempotent", func(t *testing.T) { testPointsIdempotent(t, f) })
	t.Run("Metadata", func(t *testing.T) { testPointsMetadata(t, f) })
	t.Run("Validation", func(t *testing.T) { testPointsValidation(t, f) })
	t.Run("IdempotencyRace", func(t *testing.T) { testPointsRace(t, f) })
}

// TestSubscriptionStore checks a backend's billing.SubscriptionStore:
// creation with its first charge, exactly-once period charges by
// compare-and-swap, lapsing when funds run out, cancellation, due lists,
// and two handles ticking the same periods concurrently.
func TestSubscriptionStore(t *testing.T, f Factory) {
	t.Run("CreateAndCharge", func(t *testing.T) { testSubsCreateAndCharge(t, f) })
	t.Run("CreateConflict", func(t *testing.T) { testSubsCreateConflict(t, f) })
	t.Run("CreateInsufficient", func(t *testing.T) { testSubsCreateInsufficient(t, f) })
	t.Run("IdempotentCreate", func(t *testing.T) { testSubsIdempotentCreate(t, f) })
	t.Run("Lapse", func(t *testing.T) { testSubsLapse(t, f) })
	t.Run("Cancel", func(t *testing.T) { testSubsCancel(t, f) })
	t.Run("Due", func(t *testing.T) { testSubsDue(t, f) })
	t.Run("List", func(t *testing.T) { testSubsList(t, f) })
	t.Run("Validation", func(t *testing.T) { testSubsValidation(t, f) })
	t.Run("ConcurrentTicks", func(t *testing.T) { testSubsConcurrentTicks(t, f) })
	t.Run("ExclusiveRace", func(t *testing.T) { testSubsExclusiveRace(t, f) })
}

// billT0 is the suite's reference time: microsecond precision, UTC.
func billT0() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 678000, time.UTC) }

// billAddr is the n-th test wallet address.
func billAddr(n int) string { return fmt.Sprintf("0x%040x", n) }

// billFar is an expiry no test reaches.
func billFar() time.Time { return billT0().Add(240 * time.Hour) }

// billRequireCode fails unless err carries code c.
func billRequireCode(t testing.TB, err error, c fault.Code) {
	t.Helper()
	require.Error(t, err)
	require.Truef(t, errors.Is(err, c), "want %v, got %v (code %v)", c, err, fault.CodeOf(err))
}

// billRequireTime fails unless got is want, in UTC.
func billRequireTime(t testing.TB, want, got time.Time) {
	t.Helper()
	require.Truef(t, want.Equal(got), "want time %v, got %v", want, got)
	if !got.IsZero() {
		require.Equal(t, time.UTC, got.Location(), "times come back in UTC")
	}
}

// billCredit credits amt to acct and fails the test on error.
func billCredit(t testing.TB, l billing.Ledger, acct string, amt billing.MicroCents, at time.Time) billing.Entry {
	t.Helper()
	e, err := l.Credit(context.Background(), billing.Posting{Account: acct, Type: billing.Purchase, Amount: amt, Description: "top-up", At: at})
	require.NoError(t, err)
	return e
}

// billRequireBooks checks an account's books: the sum of its entries equals
// its balance, nothing held is negative, the available balance is not
// negative, and the balance is want. It returns the entries.
func billRequireBooks(t testing.TB, l billing.Ledger, acct string, want billing.Balance) []billing.Entry {
	t.Helper()
	ctx := context.Background()
	bal, err := l.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, want, bal, "balance of %s", acct)
	require.GreaterOrEqual(t, bal.Held, billing.MicroCents(0), "held")
	require.GreaterOrEqual(t, bal.Available(), billing.MicroCents(0), "available")
	es, err := billing.AllEntries(ctx, l, acct, billing.EntryFilter{})
	require.NoError(t, err)
	var sum billing.MicroCents
	for _, e := range es {
		sum += e.Amount
		require.Equal(t, acct, e.Account)
		require.Equal(t, billing.Completed, e.Status)
		require.GreaterOrEqual(t, e.BalanceAfter, billing.MicroCents(0))
	}
	require.Equal(t, bal.Total, sum, "sum of entries of %s", acct)
	return es
}
