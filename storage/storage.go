// Package storage holds the store implementations behind Perceptron's
// domain interfaces, one package per backend:
//
//   - [github.com/perceptron-cloud/perceptron/storage/memory]: in-process maps
//     behind one mutex; for tests, examples and throwaway servers.
//   - [github.com/perceptron-cloud/perceptron/storage/sqlite]: the embedded
//     default, one file, pure Go driver (modernc.org/sqlite), WAL; for one
//     machine.
//   - [github.com/perceptron-cloud/perceptron/storage/postgres]: PostgreSQL via
//     pgx; several server processes may share one database.
//
// Each backend implements every domain store interface (auth.Store,
// billing.Store, release.Store, ...) on one type and passes the shared
// conformance suite in
// [github.com/perceptron-cloud/perceptron/storage/storagetest].
//
// The two SQL backends share one SQL layer (storage/internal/sqlstore):
// one text per statement, with $N placeholders, over a small Backend
// (reads, write transactions, relaxed writes) and a Dialect (collation,
// row locks, skip-locked, per-scope serialization, error checks). Auth,
// releases, reward points and subscriptions are written once there; each
// backend keeps its own ledger (its hot path really differs: SQLite's
// in-memory book and settlement journal, PostgreSQL's one-statement holds
// and settlements) and gives the shared stores its debit through
// sqlstore.LedgerTx. Open opens any of the three from a DSN.
//
// Times are stored as Unix microseconds (UTC); money as integer micro-cents.
package storage
