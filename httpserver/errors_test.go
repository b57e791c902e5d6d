package httpserver_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

// deadlineStore is a memory store whose balance reads can be made to run
// past a server-side deadline, as a stalled database would.
type deadlineStore struct {
	*memory.Store
	stall atomic.Bool
}

func (s *deadlineStore) Balance(ctx context.Context, account string) (billing.Balance, error) {
	if s.stall.Load() {
		return billing.Balance{}, fmt.Errorf("reading the balance: %w", context.DeadlineExceeded)
	}
	return s.Store.Balance(ctx, account)
}

// A deadline of the server's own (a store call that ran out of time) is a
// 503 with type timeout_error, never the 499 of a client that went away,
// and never a 500 that hides what happened.
func TestServerDeadlineIs503(t *testing.T) {
	st := &deadlineStore{Store: memory.New()}
	e := newEnv(t, perceptron.Config{Store: st})
	key := e.login(newWallet(t))
	st.stall.Store(true)
	code, out := e.call("GET", "/api/credits/balance", key, nil)
	require.Equal(t, 503, code, "%v", out)
	errObj := out["error"].(map[string]any)
	require.Equal(t, "timeout_error", errObj["type"])
	require.Equal(t, "request timed out", errObj["message"])
	st.stall.Store(false)
	code, _ = e.call("GET", "/api/credits/balance", key, nil)
	require.Equal(t, 200, code)
}
