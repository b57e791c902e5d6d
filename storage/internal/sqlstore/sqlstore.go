// Package sqlstore is the SQL that the SQLite and PostgreSQL stores
// share: one text per statement, with $1-style placeholders (modernc's
// SQLite binds them by number, as PostgreSQL does), run through a small
// [Backend] that each store provides, and a [Dialect] for what differs.
// A store built on it is written once, tested by the conformance suite on
// both backends, and cannot drift between them. What really differs (the
// ledger's hot path, locking and connection handling) stays in each
// backend.
//
// Stores moved here so far: releases, auth (a backend may wrap methods of
// it, as SQLite caches key lookups), reward points and subscriptions
// (which debit the ledger inside their transaction through the backend's
// LedgerTx). The ledger itself stays per backend: its hot path really
// differs. The rest move one at a time (see
// the storage package doc).
package sqlstore

import (
	"context"
	"fmt"
	"strconv"
)

// Row is one result row.
type Row interface {
	Scan(dest ...any) error
}

// Rows is a result set, read with Next and Scan; Close releases it.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Querier runs statements: a backend's read pool, or a write transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) Row
	Query(ctx context.Context, sql string, args ...any) (Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
}

// Backend is what a SQL store gives the shared statements.
type Backend interface {
	// Read returns a Querier for statements that do not write.
	Read() Querier
	// Write runs fn in one write transaction, committed if fn returns nil,
	// durably.
	Write(ctx context.Context, fn func(Querier) error) error
	// WriteRelaxed is Write for data a power loss may take back without
	// harm (nonces, key-usage times): a backend may commit it without
	// waiting for an fsync.
	WriteRelaxed(ctx context.Context, fn func(Querier) error) error
	// Dialect says what differs.
	Dialect() Dialect
}

// Dialect is what differs between the backends in the shared statements.
type Dialect struct {
	// Name prefixes error messages: "sqlite" or "postgres".
	Name string
	// Binary is the collation clause that sorts text by bytes: "" in
	// SQLite (BINARY is its default), ` COLLATE "C"` in PostgreSQL.
	Binary string
	// NoRows reports whether err says a query returned no row.
	NoRows func(error) bool
	// Unique reports whether err is a unique-constraint violation.
	Unique func(error) bool
	// ForUpdate ends a SELECT of one row to lock it for the rest of the
	// transaction: " FOR UPDATE" in PostgreSQL, "" in SQLite.
	ForUpdate string
	// SkipLocked ends a subquery that picks rows to delete or update so
	// that rows another transaction holds are skipped: " FOR UPDATE SKIP
	// LOCKED" in PostgreSQL, "" in SQLite (whose writers take turns).
	SkipLocked string
	// Serialize, inside a write transaction, makes it the only one with
	// this scope at a time, in any process (PostgreSQL: an advisory
	// lock); nil where write transactions take turns anyway (SQLite).
	Serialize func(ctx context.Context, q Querier, scope string) error
	// Types are the column types of shared migrations (see Migrate).
	Types Types
}

// wrap prefixes err with the dialect's name and what failed.
func (d Dialect) wrap(what string, err error) error {
	return fmt.Errorf("%s: %s: %w", d.Name, what, err)
}

// wrapIf is wrap for an error that may be nil.
func (d Dialect) wrapIf(what string, err error) error {
	if err == nil {
		return nil
	}
	return d.wrap(what, err)
}

func itoa(n int) string { return strconv.Itoa(n) }
