// Package postgres is the PostgreSQL store, for deployments where several
// server processes share one database.
//
// It uses pgx's pool. Transactions run at Read Committed; the invariants
// that money and keys need are enforced by the statements themselves
// (conditional updates, row locks taken in a fixed order, unique indexes),
// not by Go code, so they hold across processes. The hot path of a chat
// request, a hold and its settlement without an idempotency key, is one
// statement each, run as its own implicit transaction: the wallet's
// account row is locked for one statement, not over several round trips,
// which is what bounds one wallet's concurrent requests. Migrations are
// embedded and applied at Open under an advisory lock, so processes
// starting together do not race.
package postgres

import (
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"

	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configures [Open].
type Options struct {
	// Schema, if set, is created if missing and used as the search path for
	// every connection: tests use it to get a database of their own.
	Schema string
	// MaxConns bounds the pool; zero means pgx's default.
	MaxConns int32
}

// Store is a PostgreSQL database holding every Perceptron table.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	broker pgBrokerOnce
	// The stores written once for both SQL backends.
	sqlstore.Releases
	sqlstore.Auth
	sqlstore.Points
	sqlstore.Subscriptions
	sqlstore.Domains
	sqlstore.Feeds
	sqlstore.Personas
}

// Open connects to the database at url (a postgres:// URL or DSN) and
// applies any pending migrations.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.Schema != "" {
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
		boot, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
		if err != nil {
			return nil, fmt.Errorf("postgres: connect: %w", err)
		}
		_, err = boot.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{opts.Schema}.Sanitize())
		boot.Close(ctx)
		if err != nil && !isUniqueViolation(err) {
			return nil, fmt.Errorf("postgres: create schema: %w", err)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool, schema: opts.Schema}
	s.Releases = sqlstore.Releases{B: sqlBackend{s}}
	s.Auth = sqlstore.Auth{B: sqlBackend{s}}
	s.Points = sqlstore.Points{B: sqlBackend{s}}
	s.Subscriptions = sqlstore.Subscriptions{B: sqlBackend{s}, L: sqlBackend{s}}
	s.Domains = sqlstore.Domains{B: sqlBackend{s}, Subs: s.Subscriptions}
	s.Feeds = sqlstore.Feeds{B: sqlBackend{s}}
	s.Personas = sqlstore.Personas{B: sqlBackend{s}}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the persona broker's listener, if it runs, and closes the
// pool.
func (s *Store) Close() error {
	s.broker.stop()
	s.pool.Close()
	return nil
}

// Pool returns the underlying pool, for operators' own queries.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func (s *Store) migrate(ctx context.Context) error {
	return sqlstore.Migrate(ctx, sqlBackend{s}, migrationFS)
}

// tx runs fn in a Read Committed transaction and commits it if fn returns
// nil. Serialization failures and deadlocks are retried a few times.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.retry(ctx, func() error { return pgx.BeginFunc(ctx, s.pool, fn) })
}

// retry runs fn, and again after a short wait if it failed with a
// serialization failure or a deadlock, a few times. fn is a transaction,
// or one statement in its own implicit transaction.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = fn()
		if !isRetryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	return err
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isRetryable(err error) bool {
	c := pgCode(err)
	return c == "40001" || c == "40P01"
}

func isUniqueViolation(err error) bool { return pgCode(err) == "23505" }
