package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
)

// BenchmarkApplySettlements measures what the background applier spends
// writing journaled settlements into the database, per settlement, in
// transactions of n settlements from one account. The applier's CPU is
// not on a request's path, but it shares the machine with requests:
//
//	go test -run '^$' -bench ApplySettlements -benchtime 20000x ./storage/sqlite
func BenchmarkApplySettlements(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "p.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const acct = "0x00000000000000000000000000000000000000b1"
	if _, err := s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1 << 50}); err != nil {
		b.Fatal(err)
	}
	stopApplier(s)
	settle := func() {
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 5 * billing.Cent, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1234, Type: billing.ChatInference,
			Description: "Chat completion: bench/fake (12 input + 64 output tokens)",
			Usage:       &billing.Usage{Model: "bench/fake", InputTokens: 12, OutputTokens: 64}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{16, 64, applyBatch} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for done := 0; done < b.N; done += n {
				b.StopTimer()
				for range n {
					settle()
				}
				b.StartTimer()
				s.wmu.Lock()
				_, err := s.applySome(ctx, n)
				s.wmu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
