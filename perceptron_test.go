package perceptron_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/release"
)

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]perceptron.Config{
		"unknown database":          {DB: "mysql://x"},
		"bad receiving address":     {Billing: perceptron.BillingConfig{ReceivingAddress: "0x123", Chains: evm.DefaultChains()}},
		"chains without an address": {Billing: perceptron.BillingConfig{Chains: evm.DefaultChains()}},
		"bad dev receiving address": {Dev: true, Billing: perceptron.BillingConfig{ReceivingAddress: "nope"}},
		"model without provider":    {Inference: perceptron.InferenceConfig{Models: []inference.Model{{ID: "m", ContextLength: 10, MaxOutputTokens: 5, Providers: []string{"missing"}}}}},
		"bad release version":       {Dev: true, Releases: []release.Release{{Version: "one"}}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := perceptron.New(ctx, cfg)
			require.Error(t, err)
			require.Nil(t, p)
		})
	}
}

func TestZeroConfigWorks(t *testing.T) {
	p, err := perceptron.New(context.Background(), perceptron.Config{})
	require.NoError(t, err)
	require.Equal(t, perceptron.Version, p.Version())
	require.Empty(t, p.Billing.ReceivingAddress()) // purchases are off until configured
	require.Empty(t, p.Inference.Catalog().Models())
	require.Nil(t, p.Devnet)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close()) // idempotent
}

// A hold left behind by a crashed process is released when a new process
// starts after it expired, and the money is available again.
func TestCrashedHoldsAreReleasedOnRestart(t *testing.T) {
	ctx := context.Background()
	db := "sqlite:" + filepath.Join(t.TempDir(), "p.db")
	now := time.Unix(1_748_000_000, 0)
	clock := func() time.Time { return now }
	const acct = "0x00000000000000000000000000000000000000cc"

	p1, err := perceptron.New(ctx, perceptron.Config{DB: db, Now: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p1.Close() }) // stops its background work; the store is already gone
	_, err = p1.Billing.Ledger().Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "grant", At: now})
	require.NoError(t, err)
	_, err = p1.Billing.Ledger().PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 80 * billing.Cent, ExpiresAt: now.Add(15 * time.Minute), At: now})
	require.NoError(t, err)
	// The process dies without settling: only the store is closed.
	require.NoError(t, p1.Store().Close())

	now = now.Add(16 * time.Minute)
	p2, err := perceptron.New(ctx, perceptron.Config{DB: db, Now: clock})
	require.NoError(t, err)
	defer p2.Close()
	bal, err := p2.Billing.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.Dollar}, bal)
}
