// Package sqliteprobe holds benchmarks only: they take the SQLite store's
// hold and settle transactions apart, so that the cost of each part
// (parsing statements, executing them, committing to the WAL) and of the
// alternatives (prepared statements, several operations per commit) can be
// read off one run on one machine:
//
//	go test -run '^$' -bench . -benchtime 2s ./bench/sqliteprobe
//
// The benchmarks open a database file with the same DSN (WAL,
// synchronous=NORMAL, busy timeout, foreign keys, BEGIN IMMEDIATE on one
// writer connection) and the same migrations as storage/sqlite, and run
// that package's statements verbatim; only the way they are sent differs.
// They change nothing in storage/sqlite: they are measurements for deciding
// what to change there. Results are recorded in BENCHMARKS.md.
package sqliteprobe
