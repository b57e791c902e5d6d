package inference_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

// ChargeUsage bills once per key, whatever the usage of a retry, at most
// what the wallet has; OnHold sees the hold a request settles, and
// ReleaseHold then tells that it was billed.
func TestChargeUsageOncePerKey(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	cat, err := inference.NewCatalog(inference.DevModel())
	require.NoError(t, err)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Providers: []inference.ModelProvider{inference.NewDevProvider()}, Ledger: st})
	require.NoError(t, err)
	acct := "0x00000000000000000000000000000000000000aa"
	_, err = st.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 10 * billing.Cent, At: time.Now()})
	require.NoError(t, err)

	u := inference.Usage{PromptTokens: 1000, CompletionTokens: 100} // 0.1 + 0.02 cents
	e, err := svc.ChargeUsage(ctx, acct, inference.DevModelID, u, "persona X, history summary", "k1")
	require.NoError(t, err)
	require.Equal(t, -120_000*billing.MicroCent, e.Amount)
	require.Equal(t, "Chat: perceptron/dev (1000 in / 100 out tokens) · persona X, history summary", e.Description)
	_, err = svc.ChargeUsage(ctx, acct, inference.DevModelID, u, "persona X, history summary", "k1")
	require.True(t, errors.Is(err, fault.Conflict), "%v", err)
	_, err = svc.ChargeUsage(ctx, acct, inference.DevModelID, inference.Usage{PromptTokens: 5}, "x", "k1")
	require.True(t, errors.Is(err, fault.Conflict), "%v", err)
	// More than the wallet has: what it has.
	e, err = svc.ChargeUsage(ctx, acct, inference.DevModelID, inference.Usage{PromptTokens: 1_000_000_000}, "x", "k2")
	require.NoError(t, err)
	require.Equal(t, -(10*billing.Cent - 120_000), e.Amount)
	b, err := st.Balance(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, b.Total)
	_, err = svc.ChargeUsage(ctx, acct, inference.DevModelID, u, "x", "k3")
	require.True(t, errors.Is(err, fault.InsufficientFunds), "%v", err)

	// OnHold, then ReleaseHold: NotFound once the request is billed.
	_, err = st.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 10 * billing.Cent, At: time.Now()})
	require.NoError(t, err)
	var hold string
	ss, err := svc.StreamWith(ctx, acct, &inference.ChatRequest{Model: inference.DevModelID, Messages: []inference.Message{{Role: "user", Content: "hello there"}}},
		inference.CallOptions{OnHold: func(_ context.Context, id string) error { hold = id; return nil }})
	require.NoError(t, err)
	require.NotEmpty(t, hold)
	for {
		if _, err := ss.Recv(); err != nil {
			break
		}
	}
	require.NoError(t, ss.Close())
	require.True(t, errors.Is(svc.ReleaseHold(ctx, hold), fault.NotFound))
	// An OnHold error fails the call and releases its hold.
	_, err = svc.StreamWith(ctx, acct, &inference.ChatRequest{Model: inference.DevModelID, Messages: []inference.Message{{Role: "user", Content: "hello"}}},
		inference.CallOptions{OnHold: func(_ context.Context, id string) error { hold = id; return fault.New(fault.NotFound, "gone") }})
	require.True(t, errors.Is(err, fault.NotFound))
	b, err = st.Balance(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, b.Held)
}
