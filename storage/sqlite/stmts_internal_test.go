package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// TestHotPathsUsePreparedStatements runs every operation of a chat request
// (key lookups, holds, settlements, releases, debits, credits, the balance,
// the touch of keys), keyed and not, and fails if any of their statements
// ran as text instead of from the statement cache.
func TestHotPathsUsePreparedStatements(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "perceptron.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	require.Len(t, s.ws, len(writeStmts()), "write statements are distinct and all prepared")
	require.Len(t, s.rd.stmts, len(readStmts()), "read statements are distinct and all prepared")

	// Set-up that is not on the hot path.
	const acct = "0x00000000000000000000000000000000000000a1"
	now := time.Now()
	require.NoError(t, s.SetMasterKey(ctx, acct, []byte("master-hash"), now))
	require.NoError(t, s.CreateClientKey(ctx, auth.ClientKeyRecord{ID: "k1", Address: acct, Hash: []byte("client-hash"), Prefix: "pct-", CreatedAt: now}, 10))

	var mu sync.Mutex
	var missed []string
	record := func(q string) { mu.Lock(); missed = append(missed, q); mu.Unlock() }
	s.missed, s.rd.missed = record, record

	for range 2 { // the second time, every statement is reused
		_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
		require.NoError(t, err)
		_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, ChainID: 1, TxHash: "0x" + now.Format("150405.000000000"), IdempotencyKey: "credit-" + now.String()})
		require.NoError(t, err)
		now = now.Add(time.Second)
		_, err = s.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 10})
		require.NoError(t, err)
		_, err = s.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: 10, IdempotencyKey: "debit"})
		require.NoError(t, err)
		for _, r := range []billing.HoldRequest{
			{Account: acct, Amount: 5 * billing.Cent, ExpiresAt: now.Add(time.Hour)},
			{Account: acct, Amount: 5 * billing.Cent, ExpiresAt: now.Add(time.Hour), IdempotencyKey: "hold"},
			{Account: acct, Amount: 10 * billing.Cent, MinAmount: 5 * billing.Cent, ExpiresAt: now.Add(time.Hour)},
		} {
			h, err := s.PlaceHold(ctx, r)
			require.NoError(t, err)
			if r.IdempotencyKey != "" {
				continue // its replay is settled once, below
			}
			_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1234, Type: billing.ChatInference, Usage: &billing.Usage{Model: "m"}})
			require.NoError(t, err)
		}
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 5 * billing.Cent, MinAmount: billing.Cent, ExpiresAt: now.Add(time.Hour)})
		require.NoError(t, err)
		require.NoError(t, s.ReleaseHold(ctx, h.ID))
		_, err = s.Balance(ctx, acct)
		require.NoError(t, err)
		_, err = s.ClientKeyByHash(ctx, []byte("client-hash"))
		require.NoError(t, err)
		owner, err := s.MasterKeyOwner(ctx, []byte("master-hash"))
		require.NoError(t, err)
		require.Equal(t, acct, owner)
		require.NoError(t, s.TouchClientKeys(ctx, map[string]time.Time{"k1": now, "k2": now}))
	}
	require.Empty(t, missed, "statements of the hot paths that ran as text")
}

// HasCompletedPurchase reads the partial index of completed purchases,
// whose condition its literals must match (and match the domain's names).
func TestHasCompletedPurchaseUsesItsIndex(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "perceptron.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	require.Contains(t, sqlHasCompletedPurchase, "type = '"+string(billing.Purchase)+"'")
	require.Contains(t, sqlHasCompletedPurchase, "status = '"+string(billing.Completed)+"'")
	plan := queryPlan(t, s, sqlHasCompletedPurchase, "0x00000000000000000000000000000000000000a1")
	require.Contains(t, plan, "entries_completed_purchase", "query plan: %v", plan)
}

// queryPlan returns SQLite's plan for q, one step a line.
func queryPlan(t *testing.T, s *Store, q string, args ...any) string {
	t.Helper()
	rows, err := s.r.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+q, args...)
	require.NoError(t, err)
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
		plan = append(plan, detail)
	}
	require.NoError(t, rows.Err())
	return strings.Join(plan, "\n")
}

// Pages of entries read an index in seq order, with or without a lower
// bound on time (which finds its first seq in entries_account_created),
// instead of scanning and sorting the account's history.
func TestEntriesPagesUseTheirIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "perceptron.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	acct := "0x00000000000000000000000000000000000000a1"
	for _, c := range []struct {
		f     billing.EntryFilter
		after page.Key
	}{
		{},
		{after: page.Key{Order: 1000}},
		{f: billing.EntryFilter{Since: time.Unix(1e9, 0)}, after: page.Key{Order: 1000}},
	} {
		f := c.f
		q, args := sqlstore.EntriesQuery(acct, f, c.after, 501)
		p := queryPlan(t, s, q, args...)
		require.Contains(t, p, "entries_account_seq", "%+v: query plan: %v", f, p)
		require.NotContains(t, p, "TEMP B-TREE", "%+v: no sort: %v", f, p)
		if !f.Since.IsZero() {
			require.Contains(t, p, "entries_account_created", "%+v: query plan: %v", f, p)
		}
	}
}
