package memory_test

import (
	"testing"

	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) func(t *testing.T) storagetest.Store {
		s := memory.New()
		return func(*testing.T) storagetest.Store { return s }
	})
}
