package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/perceptron-cloud/perceptron/storage/sqlite"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

// BenchmarkHoldSettle measures ledger holds+settles (storagetest.BenchmarkHoldSettle)
// on a fresh database file.
func BenchmarkHoldSettle(b *testing.B) {
	storagetest.BenchmarkHoldSettle(b, func(b *testing.B) storagetest.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "perceptron.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
