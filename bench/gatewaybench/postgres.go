package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// envPostgres is the environment variable that -postgres defaults to:
	// the one the repository's PostgreSQL tests read, which CI sets and
	// .ci/postgres.sh prints.
	envPostgres = "PERCEPTRON_TEST_POSTGRES"
	// schemaPrefix starts the name of every schema a gateway creates.
	schemaPrefix = "gatewaybench_"
	// postgresMaxConns bounds a gateway's connection pool. pgx's default
	// (the larger of 4 and the number of CPUs) would make requests queue
	// for a connection in the pool at c=32 and measure pgxpool rather
	// than the database; 64 is twice the largest default concurrency, so
	// that no request of a c=32 cell ever waits for one, and still far
	// below the max_connections of 300 of the throwaway server of
	// .ci/postgres.sh (and the default 100 of a stock server) with one
	// gateway at a time on it.
	postgresMaxConns = 64
	// postgresAdminTimeout bounds the short-lived connections of
	// postgresInfo and dropSchema.
	postgresAdminTimeout = 30 * time.Second
)

// checkPostgresURL checks the -postgres value when the postgres backend
// is asked for: it must be set and parse as a pgx connection string.
func checkPostgresURL(url string) error {
	if url == "" {
		return fmt.Errorf("-backends postgres needs a PostgreSQL server: pass -postgres URL or set %s (bash .ci/postgres.sh starts a throwaway one and prints the export line)", envPostgres)
	}
	if _, err := pgx.ParseConfig(url); err != nil { // pgconn redacts the password
		return fmt.Errorf("-postgres: %w", err)
	}
	return nil
}

// newSchemaName names a gateway's schema: unique per process and moment,
// so that concurrent runs on one server never share a ledger.
func newSchemaName() string {
	return fmt.Sprintf("%s%d_%d", schemaPrefix, time.Now().UnixNano(), os.Getpid())
}

// dropSchema drops schema and everything in it, over a connection of its
// own. It does not take the run's context: it runs at close, often once
// that context is over (an interrupt, a child's stdin at EOF).
func dropSchema(url, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), postgresAdminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("postgres: dropping schema %s: %w", schema, err)
	}
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	if err != nil {
		err = fmt.Errorf("postgres: dropping schema %s: %w", schema, err)
	}
	return errors.Join(err, conn.Close(ctx))
}

// postgresInfo describes the server at url for the report: where it is
// (never the password), its version and the settings that decide what a
// commit costs. Connecting also checks that the server is there before
// any other server of the benchmark starts.
func postgresInfo(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, postgresAdminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", fmt.Errorf("postgres backend: %w", err)
	}
	defer conn.Close(ctx)
	var version, fsync, syncCommit string
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')`).
		Scan(&version, &fsync, &syncCommit); err != nil {
		return "", fmt.Errorf("postgres backend: %w", err)
	}
	c := conn.Config()
	return fmt.Sprintf("PostgreSQL %s at %s:%d, database %s (fsync %s, synchronous_commit %s); each gateway on a schema of its own (%s...), dropped at the end, with a pool of up to %d connections",
		version, c.Host, c.Port, c.Database, fsync, syncCommit, schemaPrefix, postgresMaxConns), nil
}
