package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/storage/postgres"
	"github.com/perceptron-cloud/perceptron/storage/storagetest"
)

// PERCEPTRON_TEST_POSTGRES names a server the tests may create schemas in;
// CI always sets it (see .ci/run). Without it these tests cannot run.
const envURL = "PERCEPTRON_TEST_POSTGRES"

func TestConformance(t *testing.T) {
	url := os.Getenv(envURL)
	if url == "" {
		t.Skip(envURL + " is not set; CI sets it to a throwaway server")
	}
	storagetest.RunConformanceTests(t, func(t *testing.T) func(t *testing.T) storagetest.Store {
		schema := fmt.Sprintf("t_%d_%s", time.Now().UnixNano(), strings.NewReplacer("/", "_", "-", "_").Replace(strings.ToLower(t.Name())))
		if len(schema) > 60 {
			schema = schema[:60]
		}
		t.Cleanup(func() {
			conn, err := pgx.Connect(context.Background(), url)
			if err == nil {
				conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
				conn.Close(context.Background())
			}
		})
		return func(t *testing.T) storagetest.Store {
			s, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema, MaxConns: 16})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}
