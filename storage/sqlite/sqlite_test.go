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
		path := filepath.Join(t.TempDir(), "perceptron.db")
		return func(t *testing.T) storagetest.Store {
			s, err := sqlite.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}
