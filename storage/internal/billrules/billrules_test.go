package billrules_test

import (
	"errors"
	"testing"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
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
		{billrules.HoldFP(billing.HoldRequest{Amount: 42, MinAmount: 5}), "hold|42|5"},
		{billrules.SubscriptionFP(sub, p), `subscribe|"feed"|"news"|10|1700000000000001|"usage"|1500|8453|"0xff"|"m"/3/4`},
	} {
		if c.got != c.want {
			t.Errorf("fingerprint %q, want %q", c.got, c.want)
		}
	}
}

// A hold whose minimum equals its amount is an exact hold, with an exact
// hold's fingerprint; minimums below zero or above the amount are invalid.
func TestHoldRequestMinAmount(t *testing.T) {
	far := time.Unix(2_000_000_000, 0)
	r := billing.HoldRequest{Account: "0x00000000000000000000000000000000000000AB", Amount: 42, MinAmount: 42, ExpiresAt: far}
	if err := billrules.HoldRequest(&r); err != nil {
		t.Fatal(err)
	}
	if r.MinAmount != 0 || billrules.HoldFP(r) != "hold|42" {
		t.Errorf("min = amount: got MinAmount %d, fingerprint %q; want an exact hold", r.MinAmount, billrules.HoldFP(r))
	}
	r = billing.HoldRequest{Account: "0x00000000000000000000000000000000000000ab", Amount: 42, MinAmount: 41, ExpiresAt: far}
	if err := billrules.HoldRequest(&r); err != nil || r.MinAmount != 41 {
		t.Errorf("min < amount: err %v, MinAmount %d", err, r.MinAmount)
	}
	for _, m := range []billing.MicroCents{-1, 43} {
		r := billing.HoldRequest{Account: "0x00000000000000000000000000000000000000ab", Amount: 42, MinAmount: m, ExpiresAt: far}
		if err := billrules.HoldRequest(&r); !errors.Is(err, fault.Invalid) {
			t.Errorf("MinAmount %d: got %v, want fault.Invalid", m, err)
		}
	}
}

// Settled: within the hold whatever ExceedHold says; beyond it only with
// ExceedHold, and then no further than what is available.
func TestSettled(t *testing.T) {
	for _, c := range []struct {
		amount, held, avail billing.MicroCents
		beyond              bool
		want                billing.MicroCents
	}{
		{40, 100, 0, false, 40},
		{40, 100, 0, true, 40},
		{300, 100, 1000, false, 100},
		{300, 100, 1000, true, 300},
		{300, 100, 50, true, 150},
		{300, 100, 0, true, 100},
		{300, 100, -5, true, 100},
	} {
		got := billrules.Settled(billing.Settlement{Amount: c.amount, ExceedHold: c.beyond}, c.held, c.avail)
		if got != c.want {
			t.Errorf("Settled(%d of a hold of %d, %d available, beyond %v) = %d, want %d", c.amount, c.held, c.avail, c.beyond, got, c.want)
		}
	}
}
