package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// The statements this store shares with SQLite (storage/internal/sqlstore)
// run through sqlBackend, on the pool or in a transaction of it.

type sqlBackend struct{ pool *pgxpool.Pool }

var _ sqlstore.Backend = sqlBackend{}

var pgDialect = sqlstore.Dialect{
	Name:   "postgres",
	Binary: ` COLLATE "C"`,
	NoRows: func(err error) bool { return errors.Is(err, pgx.ErrNoRows) },
	Unique: isUniqueViolation,
}

func (b sqlBackend) Dialect() sqlstore.Dialect { return pgDialect }

func (b sqlBackend) Read() sqlstore.Querier { return pgQuerier{b.pool} }

func (b sqlBackend) Write(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return fn(pgQuerier{tx}) })
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
