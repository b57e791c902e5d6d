package memory_test

import (
	"testing"

	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

// BenchmarkHoldSettle measures ledger holds+settles (storagetest.BenchmarkHoldSettle)
// on a fresh in-memory store.
func BenchmarkHoldSettle(b *testing.B) {
	storagetest.BenchmarkHoldSettle(b, func(*testing.B) storagetest.Store { return memory.New() })
}
