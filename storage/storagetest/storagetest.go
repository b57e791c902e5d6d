// Package storagetest is the conformance suite every storage backend must
// pass, in the manner of testing/slogtest and gocloud.dev's drivertest: a
// backend's test calls [RunConformanceTests] once with a [Factory], and the
// backend is done when the whole suite passes.
package storagetest

import "testing"

// Store is a handle on a backend's database. A complete backend implements
// every domain store interface on it (auth.Store, billing.Store,
// release.Store, tunnel.Store, feeds.Store, personas.Store); each part of the suite asserts the interface it tests and
// fails if it is missing.
type Store interface {
	Close() error
}

// as asserts that s implements T, failing the test if not.
func as[T any](t *testing.T, s Store) T {
	t.Helper()
	v, ok := s.(T)
	if !ok {
		var zero *T
		t.Fatalf("store %T does not implement %T", s, zero)
	}
	return v
}

// Factory creates a fresh, empty database for one test and returns a
// function that opens a handle on it. Every handle opened from one Factory
// call sees the same data; each acts as a separate server process would.
// For backends whose database belongs to one process (memory, SQLite),
// the handles are the same value. The
// Factory registers cleanup with t.
type Factory func(t *testing.T) (open func(t *testing.T) Store)

// RunConformanceTests runs the whole suite against a backend.
func RunConformanceTests(t *testing.T, f Factory) {
	t.Run("Auth", func(t *testing.T) { TestAuthStore(t, f) })
	t.Run("Release", func(t *testing.T) { TestReleaseStore(t, f) })
	t.Run("Ledger", func(t *testing.T) { TestLedger(t, f) })
	t.Run("Points", func(t *testing.T) { TestPointsStore(t, f) })
	t.Run("Subscriptions", func(t *testing.T) { TestSubscriptionStore(t, f) })
	t.Run("Domains", func(t *testing.T) { TestDomainStore(t, f) })
	t.Run("Feeds", func(t *testing.T) { TestFeedStore(t, f) })
	t.Run("Personas", func(t *testing.T) { TestPersonaStore(t, f) })
}

// fresh opens one handle on a new database.
func fresh(t *testing.T, f Factory) Store {
	t.Helper()
	return f(t)(t)
}
