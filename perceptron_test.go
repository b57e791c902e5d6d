package perceptron_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]perceptron.Config{
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
	require.Nil(t, p.DevChain)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close()) // idempotent
}

// A hold left behind by a crashed process is released when a new process
// starts after it expired, and the money is available again.
func TestCrashedHoldsAreReleasedOnRestart(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "p.db")
	now := time.Unix(1_748_000_000, 0)
	clock := func() time.Time { return now }
	const acct = "0x00000000000000000000000000000000000000cc"

	s1, err := sqlite.Open(ctx, db, sqlite.Options{})
	require.NoError(t, err)
	p1, err := perceptron.New(ctx, perceptron.Config{Store: s1, Now: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p1.Close() }) // stops its background work; the store is already gone
	_, err = p1.Billing.Ledger().Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "grant", At: now})
	require.NoError(t, err)
	_, err = p1.Billing.Ledger().PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 80 * billing.Cent, ExpiresAt: now.Add(15 * time.Minute), At: now})
	require.NoError(t, err)
	// The process dies without settling: only the store is closed.
	require.NoError(t, s1.Close())

	now = now.Add(16 * time.Minute)
	s2, err := sqlite.Open(ctx, db, sqlite.Options{})
	require.NoError(t, err)
	defer s2.Close()
	p2, err := perceptron.New(ctx, perceptron.Config{Store: s2, Now: clock})
	require.NoError(t, err)
	defer p2.Close()
	bal, err := p2.Billing.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.Dollar}, bal)
}

// The root package and httpserver link no dev chain, no Ethereum node and
// no SQL driver: a program gets those only by importing dev, devnet or a
// storage backend.
func TestLeanRoot(t *testing.T) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command runs the tests")
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}",
		"github.com/perceptron-cloud/perceptron", "github.com/perceptron-cloud/perceptron/httpserver").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/ethereum/go-ethereum/ethclient", "the purchase verifier's client stays")
	for _, d := range deps {
		for _, banned := range []string{
			"github.com/perceptron-cloud/perceptron/devnet", "github.com/perceptron-cloud/perceptron/dev",
			"github.com/ethereum/go-ethereum/eth", "github.com/ethereum/go-ethereum/node", "github.com/ethereum/go-ethereum/p2p/discover",
			"github.com/cockroachdb/pebble", "modernc.org/sqlite", "github.com/jackc/pgx/v5",
		} {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				t.Errorf("the root or httpserver links %s", d)
			}
		}
	}
	// text/template calls methods by reflection, which makes the linker
	// keep every exported method of every type: 6 MB of an embedding
	// binary the one time a store used it.
	out, err = exec.Command(goTool, "list", "-deps", "./examples/embed").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, d := range strings.Fields(string(out)) {
		if d == "text/template" || d == "html/template" {
			t.Errorf("examples/embed links %s", d)
		}
	}
}

// A store is found to implement each service's store by type assertion;
// one that lacks a service's store is refused, with the interface named.
func TestStoreNeedsEachServiceStore(t *testing.T) {
	st := memory.New()
	type authStore interface{ auth.Store }
	type releaseStore interface{ release.Store }
	type authAndReleases struct {
		authStore
		releaseStore
	}
	_, err := perceptron.New(context.Background(), perceptron.Config{Store: authAndReleases{st, st}})
	require.ErrorContains(t, err, "does not implement billing.Store")
	p, err := perceptron.New(context.Background(), perceptron.Config{Store: st})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.Same(t, st, p.Store())
}
