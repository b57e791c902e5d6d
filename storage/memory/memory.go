// Package memory is an in-process store: maps behind one mutex. It keeps
// every guarantee of the other backends within one process and loses
// everything when the process exits. Use it for tests, examples and
// throwaway servers (-db memory:).
package memory

import (
	"sync"

	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// Store holds everything in memory. It is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	auth     authState
	billing  billingState
	releases map[string]release.Release
	domains  map[string]*tunnel.Domain
	feeds    feedState
	personas personaState
}

// New returns an empty store.
func New() *Store {
	return &Store{
		auth:     newAuthState(),
		billing:  newBillingState(),
		releases: make(map[string]release.Release),
		domains:  make(map[string]*tunnel.Domain),
		feeds:    newFeedState(),
		personas: newPersonaState(),
	}
}

// Close does nothing; it exists so every backend closes alike.
func (s *Store) Close() error { return nil }
