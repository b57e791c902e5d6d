package storage

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/postgres"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// Store is what every backend implements: each domain's store, and Close.
// It has the method set of perceptron.Store.
type Store interface {
	auth.Store
	billing.Store
	release.Store
	Close() error
}

var (
	_ Store = (*memory.Store)(nil)
	_ Store = (*sqlite.Store)(nil)
	_ Store = (*postgres.Store)(nil)
)

// Options configure [Open].
type Options struct {
	// Logger receives what a backend reports but cannot return (SQLite:
	// a settlement it could not apply yet, and retries). Nil discards it.
	Logger *slog.Logger
}

// Open opens a backend from a DSN:
//
//   - "memory:" (or ""): a fresh in-memory store;
//   - "sqlite:PATH": the SQLite file at PATH, created if needed; it may end
//     in "?sync=full" (the default: a write that returned survives a power
//     loss) or "?sync=normal" (it survives a crash of the process only),
//     see sqlite.Sync;
//   - a "postgres://" or "postgresql://" URL.
//
// Open links all three backends; a program that needs one opens it with
// its package instead. The caller closes the store.
func Open(ctx context.Context, dsn string, opts Options) (Store, error) {
	switch {
	case dsn == "" || dsn == "memory:":
		return memory.New(), nil
	case strings.HasPrefix(dsn, "sqlite:"):
		path, query, _ := strings.Cut(strings.TrimPrefix(dsn, "sqlite:"), "?")
		so := sqlite.Options{Logger: opts.Logger}
		if query != "" {
			q, err := url.ParseQuery(query)
			if err != nil {
				return nil, fmt.Errorf("storage: database %q: %w", dsn, err)
			}
			for k := range q {
				if k != "sync" {
					return nil, fmt.Errorf("storage: database %q: unknown option %q (want sync=full or sync=normal)", dsn, k)
				}
			}
			if so.Sync, err = sqlite.ParseSync(q.Get("sync")); err != nil {
				return nil, err
			}
		}
		return sqlite.Open(ctx, path, so)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return postgres.Open(ctx, dsn, postgres.Options{})
	}
	return nil, fmt.Errorf("storage: unknown database %q (want memory:, sqlite:PATH or postgres://...)", dsn)
}
