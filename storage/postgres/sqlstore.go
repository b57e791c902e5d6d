package postgres

import (
	"context"
	"errors"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/personas"
	"github.com/perceptron-cloud/perceptron/tunnel"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// The statements this store shares with SQLite (storage/internal/sqlstore)
// run through sqlBackend, on the pool or in a transaction of it.

type sqlBackend struct{ s *Store }

var _ sqlstore.Backend = sqlBackend{}

var pgDialect = sqlstore.Dialect{
	Name:      "postgres",
	Binary:    ` COLLATE "C"`,
	NoRows:    func(err error) bool { return errors.Is(err, pgx.ErrNoRows) },
	Unique:    isUniqueViolation,
	ForUpdate: " FOR UPDATE",
	Types: sqlstore.Types{BigInt: "BIGINT", Bool: "BOOLEAN", True: "true", False: "false", Bytes: "BYTEA",
		Serial: "BIGINT GENERATED ALWAYS AS IDENTITY", Strict: ""},
	SkipLocked: " FOR UPDATE SKIP LOCKED",
	Serialize: func(ctx context.Context, q sqlstore.Querier, scope string) error {
		_, err := q.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, serializeLockClass, scope)
		return err
	},
}

func (b sqlBackend) Dialect() sqlstore.Dialect { return pgDialect }

func (b sqlBackend) Read() sqlstore.Querier { return pgQuerier{b.s.pool} }

// Write runs fn in a transaction, again after a serialization failure or
// a deadlock (see Store.retry).
func (b sqlBackend) Write(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return b.s.tx(ctx, func(tx pgx.Tx) error { return fn(pgQuerier{tx}) })
}

// WriteRelaxed is Write: PostgreSQL's durability is its own setting
// (synchronous_commit).
func (b sqlBackend) WriteRelaxed(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return b.Write(ctx, fn)
}

// The ledger inside a write transaction, for the shared stores that
// charge.
var _ sqlstore.LedgerTx = sqlBackend{}

func (b sqlBackend) KeyedEntry(ctx context.Context, q sqlstore.Querier, account, key string) (billing.Entry, string, bool, error) {
	pq, ok := q.(pgQuerier)
	if !ok {
		return billing.Entry{}, "", false, errors.New("postgres: a querier of another store")
	}
	return billKeyed(ctx, pq.c, account, key)
}

func (b sqlBackend) DebitTx(ctx context.Context, q sqlstore.Querier, p billing.Posting, id, fp string) (billing.Entry, error) {
	pq, ok := q.(pgQuerier)
	tx, isTx := pq.c.(pgx.Tx)
	if !ok || !isTx {
		return billing.Entry{}, errors.New("postgres: a debit outside a write transaction")
	}
	return billDebitTx(ctx, tx, p, id, fp)
}

// pgConn is what the pool and a transaction have in common.
type pgConn interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// pgQuerier is a pool or a transaction as a sqlstore.Querier.
type pgQuerier struct{ c pgConn }

func (q pgQuerier) QueryRow(ctx context.Context, sql string, args ...any) sqlstore.Row {
	return q.c.QueryRow(ctx, sql, args...)
}

func (q pgQuerier) Query(ctx context.Context, sql string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.c.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q pgQuerier) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.c.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

var _ tunnel.Store = (*Store)(nil)
var _ feeds.Store = (*Store)(nil)
var _ personas.Store = (*Store)(nil)
