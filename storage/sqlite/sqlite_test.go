package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/perceptron-cloud/perceptron/storage/sqlite"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) func(t *testing.T) storagetest.Store {
		// A SQLite file belongs to one process, so every handle the suite
		// asks for is the one store.
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "perceptron.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return func(t *testing.T) storagetest.Store { return s }
	})
}
