package perceptron_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
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
