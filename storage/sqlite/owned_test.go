package sqlite_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// A database file belongs to one process: a second Open fails with a
// clear error until the first store is closed.
func TestOneProcessPerFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	s1, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	_, err = sqlite.Open(ctx, path, sqlite.Options{})
	require.ErrorContains(t, err, "in use by another process")
	require.NoError(t, s1.Close())
	require.NoError(t, s1.Close(), "Close is idempotent")
	s2, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

// Holds live in memory: closing the store (as a crash would) drops them,
// and the money is available again at the next Open, while every
// settlement committed before stays.
func TestHoldsDoNotOutliveTheProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	const acct = "0x00000000000000000000000000000000000000d1"
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	far := time.Now().Add(time.Hour)
	h1, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 30 * billing.Cent, ExpiresAt: far})
	require.NoError(t, err)
	_, err = s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 60 * billing.Cent, ExpiresAt: far})
	require.NoError(t, err)
	bal, err := s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.Dollar, Held: 90 * billing.Cent}, bal)
	_, err = s.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 20 * billing.Cent})
	require.ErrorIs(t, err, fault.InsufficientFunds, "a debit cannot spend held money")
	_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h1.ID, Amount: 7 * billing.Cent, Type: billing.ChatInference})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s, err = sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	defer s.Close()
	bal, err = s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: 93 * billing.Cent}, bal)
	_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h1.ID, Amount: 1, Type: billing.ChatInference})
	require.ErrorIs(t, err, fault.NotFound)
}

// A key lookup racing with a revocation never leaves the revoked key
// usable: once RevokeClientKey returned, the next lookup fails.
func TestRevokedKeyIsNotServedFromCache(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	require.NoError(t, err)
	defer s.Close()
	const addr = "0x00000000000000000000000000000000000000d2"
	now := time.Now()
	for i := range 200 {
		id, hash := "k"+time.Duration(i).String(), []byte("hash-"+time.Duration(i).String())
		require.NoError(t, s.CreateClientKey(ctx, auth.ClientKeyRecord{ID: id, Address: addr, Hash: hash, Prefix: "pct-", CreatedAt: now}, 1000))
		_, err := s.ClientKeyByHash(ctx, hash) // cached
		require.NoError(t, err)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						_, _ = s.ClientKeyByHash(ctx, hash)
					}
				}
			})
		}
		require.NoError(t, s.RevokeClientKey(ctx, addr, id, now))
		_, err = s.ClientKeyByHash(ctx, hash)
		require.ErrorIs(t, err, fault.NotFound, "lookup right after the revocation, round %d", i)
		close(stop)
		wg.Wait()
		_, err = s.ClientKeyByHash(ctx, hash)
		require.ErrorIs(t, err, fault.NotFound, "lookup after the racing lookups, round %d", i)
	}
}

// Concurrent settlements are committed together and each is exact; the
// ledger adds up.
func TestConcurrentSettlementsAddUp(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	require.NoError(t, err)
	defer s.Close()
	const acct = "0x00000000000000000000000000000000000000d3"
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1000 * billing.Dollar})
	require.NoError(t, err)
	const n = 400
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.Dollar, MinAmount: billing.Cent, ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(i + 1), Type: billing.ChatInference}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	bal, err := s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: 1000*billing.Dollar - n*(n+1)/2}, bal)
	entries, err := billing.AllEntries(ctx, s, acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	require.Len(t, entries, n)
	seen := map[billing.MicroCents]bool{}
	lowest := billing.MicroCents(1 << 62)
	for _, e := range entries {
		require.False(t, seen[e.BalanceAfter], "each entry has its own balance after")
		seen[e.BalanceAfter] = true
		lowest = min(lowest, e.BalanceAfter)
	}
	require.Equal(t, bal.Total, lowest, "the last settlement leaves the balance")
}
