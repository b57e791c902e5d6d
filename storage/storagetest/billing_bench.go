package storagetest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/perceptron-cloud/perceptron/billing"
)

// BenchmarkHoldSettle measures the ledger's hot path: each iteration
// places a hold on a funded account and settles it for part of its
// amount (two write transactions). "Serial" runs one caller; "Parallel"
// runs 4*GOMAXPROCS callers (b.RunParallel), each on its own account;
// "OneAccount" runs 16*GOMAXPROCS callers on one account. open
// returns a handle on a fresh, empty database and registers its cleanup.
func BenchmarkHoldSettle(b *testing.B, open func(b *testing.B) Store) {
	s := open(b)
	l, ok := s.(billing.Ledger)
	if !ok {
		b.Fatalf("store %T does not implement billing.Ledger", s)
	}
	ctx := context.Background()
	fund := func(acct string) {
		if _, err := l.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1 << 50}); err != nil {
			b.Fatal(err)
		}
	}
	cycle := func(acct string) error {
		h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 5 * billing.Cent, ExpiresAt: billFar()})
		if err != nil {
			return err
		}
		_, err = l.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1234, Type: billing.ChatInference, Usage: &billing.Usage{Model: "bench", InputTokens: 100, OutputTokens: 100}})
		return err
	}
	b.Run("Serial", func(b *testing.B) {
		acct := billAddr(0xbe0)
		fund(acct)
		for b.Loop() {
			if err := cycle(acct); err != nil {
				b.Fatal(err)
			}
		}
	})
	var next atomic.Int64 // a fresh account for every parallel caller
	next.Store(0xbe0)
	// OneAccount: as Parallel, but every caller bills the same account,
	// as one agent's concurrent requests do: the backend's lock on that
	// account is then what bounds throughput.
	b.Run("OneAccount", func(b *testing.B) {
		acct := billAddr(0xa11) // not among Parallel's accounts
		fund(acct)
		b.SetParallelism(16) // 32 callers on 2 CPUs, as gatewaybench's c=32
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := cycle(acct); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Parallel", func(b *testing.B) {
		b.SetParallelism(4) // 4*GOMAXPROCS callers: a database waits on I/O
		b.RunParallel(func(pb *testing.PB) {
			acct := billAddr(int(next.Add(1)))
			fund(acct)
			for pb.Next() {
				if err := cycle(acct); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
