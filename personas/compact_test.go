package personas

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
)

// noLedger refuses every hold: compaction bills nothing itself.
type noLedger struct{}

func (noLedger) PlaceHold(context.Context, billing.HoldRequest) (billing.Hold, error) {
	return billing.Hold{}, errors.New("no ledger")
}
func (noLedger) SettleHold(context.Context, billing.Settlement) (billing.Entry, error) {
	return billing.Entry{}, errors.New("no ledger")
}
func (noLedger) ReleaseHold(context.Context, string) error { return errors.New("no ledger") }

// The compacted history fits the budget by the count that refuses a
// prompt (o200k_base, as inference counts it), whatever the summary's
// length: the newest turns are kept, the latest always, the oldest
// dropped when the summary does not fit with them; a system prompt past
// half the budget is cut.
func TestCompactFitsTheBudgetByTheInferenceCount(t *testing.T) {
	cat, err := inference.NewCatalog(inference.DevModel())
	require.NoError(t, err)
	inf, err := inference.NewService(inference.Options{Catalog: cat, Providers: []inference.ModelProvider{inference.NewDevProvider()}, Ledger: noLedger{}})
	require.NoError(t, err)
	for _, budget := range []int{300, 600, 2000, 20000} {
		for _, system := range []string{"You are Jensen.", strings.Repeat("0123456789abcdef", 8000)} {
			t.Run(fmt.Sprint(budget, "/", len(system)), func(t *testing.T) {
				s := NewService(nil, Options{Inference: inf, Model: inference.DevModelID, ContextTokens: budget})
				var msgs []inference.Message
				for i := range 80 {
					role := inference.RoleUser
					if i%2 == 1 {
						role = inference.RoleAssistant
					}
					msgs = append(msgs, inference.Message{Role: role, Content: strings.Repeat(fmt.Sprintf("%x", i*7919), 40)})
				}
				out, su, err := s.compact(t.Context(), system, msgs, nil)
				require.NoError(t, err)
				require.Equal(t, inference.RoleSystem, out[0].Role)
				require.Equal(t, msgs[len(msgs)-1], out[len(out)-1], "the latest turn is kept")
				require.LessOrEqual(t, inf.PromptTokens(out), int64(budget))
				if len(out) < len(msgs)+1 && su != nil {
					require.Positive(t, su.usage.PromptTokens)
				}
			})
		}
	}
}
