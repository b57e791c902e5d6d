package storage_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/storage"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{"", "memory:"} {
		s, err := storage.Open(ctx, dsn, storage.Options{})
		require.NoError(t, err)
		require.IsType(t, &memory.Store{}, s)
		require.NoError(t, s.Close())
	}
	dir := t.TempDir()
	for _, q := range []string{"", "?sync=full", "?sync=normal"} {
		s, err := storage.Open(ctx, "sqlite:"+filepath.Join(dir, "p"+q[min(len(q), 6):]+".db")+q, storage.Options{})
		require.NoError(t, err, q)
		require.IsType(t, &sqlite.Store{}, s)
		require.NoError(t, s.Close())
	}
	for dsn, want := range map[string]string{
		"mysql://x":                     "unknown database",
		"sqlite:" + dir + "/x?a=b":      `unknown option "a"`,
		"sqlite:" + dir + "/x?sync=off": "sync must be full or normal",
	} {
		_, err := storage.Open(ctx, dsn, storage.Options{})
		require.ErrorContains(t, err, want, dsn)
	}
}
