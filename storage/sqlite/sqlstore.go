package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/personas"
	"github.com/perceptron-cloud/perceptron/tunnel"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// The statements this store shares with PostgreSQL (storage/internal/sqlstore)
// run through sqlBackend: reads on the read pool, writes in the store's
// write transactions (under the writer lock, the journal applied first).

type sqlBackend struct{ s *Store }

var _ sqlstore.Backend = sqlBackend{}

var sqliteDialect = sqlstore.Dialect{
	Name:   "sqlite",
	Binary: "", // BINARY, SQLite's default collation
	NoRows: func(err error) bool { return errors.Is(err, sql.ErrNoRows) },
	Unique: isConstraintUnique,
	Types: sqlstore.Types{BigInt: "INTEGER", Bool: "INTEGER", True: "1", False: "0", Bytes: "BLOB",
		Serial: "INTEGER", Strict: " STRICT"}, // an INTEGER PRIMARY KEY is the rowid: numbered
}

func (b sqlBackend) Dialect() sqlstore.Dialect { return sqliteDialect }

func (b sqlBackend) Read() sqlstore.Querier { return readQuerier{b.s.read()} }

func (b sqlBackend) Write(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return b.s.write(ctx, func(tx *wtx) error { return fn(txQuerier{tx}) })
}

func (b sqlBackend) WriteRelaxed(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return b.s.writeRelaxed(ctx, func(tx *wtx) error { return fn(txQuerier{tx}) })
}

// The ledger inside a write transaction, for the shared stores that
// charge: through the book, as every balance change of this store.
var _ sqlstore.LedgerTx = sqlBackend{}

func (b sqlBackend) KeyedEntry(ctx context.Context, q sqlstore.Querier, account, key string) (billing.Entry, string, bool, error) {
	switch q := q.(type) {
	case txQuerier:
		return billKeyed(ctx, q.tx, account, key)
	case readQuerier:
		return billKeyed(ctx, q.r, account, key)
	}
	return billing.Entry{}, "", false, errors.New("sqlite: a querier of another store")
}

func (b sqlBackend) DebitTx(ctx context.Context, q sqlstore.Querier, p billing.Posting, id, fp string) (billing.Entry, error) {
	tq, ok := q.(txQuerier)
	if !ok {
		return billing.Entry{}, errors.New("sqlite: a debit outside a write transaction")
	}
	return billDebitTx(ctx, tq.tx, p, id, fp)
}

// readQuerier is the read pool as a sqlstore.Querier.
type readQuerier struct{ r *reader }

func (q readQuerier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return q.r.QueryRowContext(ctx, query, args...)
}

func (q readQuerier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q readQuerier) Exec(context.Context, string, ...any) (int64, error) {
	return 0, errors.New("sqlite: a write on the read pool")
}

// txQuerier is a write transaction as a sqlstore.Querier.
type txQuerier struct{ tx *wtx }

func (q txQuerier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return q.tx.QueryRowContext(ctx, query, args...)
}

func (q txQuerier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q txQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Script runs several statements, a migration's: the driver returns no
// result for them, so Exec's RowsAffected would fail.
func (q txQuerier) Script(ctx context.Context, sql string) error {
	_, err := q.tx.ExecContext(ctx, sql)
	return err
}

// sqlRows is *sql.Rows with the Close of sqlstore.Rows.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

var _ tunnel.Store = (*Store)(nil)
var _ feeds.Store = (*Store)(nil)
var _ personas.Store = (*Store)(nil)
