package billrules_test

import (
	"testing"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

// Fingerprints are stored with idempotency keys, so their format is
// pinned: a change would make retries of recorded requests conflict.
func TestFingerprintsArePinned(t *testing.T) {
	p := billing.Posting{
		Account: "0xab", Type: "usage", Amount: 1500, ChainID: 8453, TxHash: "0xff",
		Usage: &billing.Usage{Model: "m", InputTokens: 3, OutputTokens: 4},
	}
	sub := billing.Subscription{Kind: "feed", Resource: "news", HourlyCost: 10, Anchor: time.UnixMicro(1_700_000_000_000_001)}
	for _, c := range []struct{ got, want string }{
		{billrules.PostingFP("debit", p), `debit|"usage"|1500|8453|"0xff"|"m"/3/4`},
		{billrules.PostingFP("credit", billing.Posting{Type: "purchase", Amount: 7}), `credit|"purchase"|7|0|""|-`},
		{billrules.HoldFP(billing.HoldRequest{Amount: 42}), "hold|42"},
		{billrules.SubscriptionFP(sub, p), `subscribe|"feed"|"news"|10|1700000000000001|"usage"|1500|8453|"0xff"|"m"/3/4`},
	} {
		if c.got != c.want {
			t.Errorf("fingerprint %q, want %q", c.got, c.want)
		}
	}
}
