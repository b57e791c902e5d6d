package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/storage/postgres"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

// BenchmarkHoldSettle measures ledger holds+settles (storagetest.BenchmarkHoldSettle)
// on a fresh schema; it is skipped without PERCEPTRON_TEST_POSTGRES.
func BenchmarkHoldSettle(b *testing.B) {
	url := os.Getenv(envURL)
	if url == "" {
		b.Skip(envURL + " is not set; CI sets it to a throwaway server")
	}
	storagetest.BenchmarkHoldSettle(b, func(b *testing.B) storagetest.Store {
		schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
		b.Cleanup(func() {
			conn, err := pgx.Connect(context.Background(), url)
			if err == nil {
				conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(context.Background())
			}
		})
		s, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema, MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}
