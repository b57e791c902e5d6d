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
// Times are stored as Unix microseconds (UTC); money as integer micro-cents.
package storage
