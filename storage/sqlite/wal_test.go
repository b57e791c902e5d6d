package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// A flood of challenges (each one a committed write) does not grow the
// WAL without bound: 40,000 from 8 clients, with readers beside them and
// the nonce sweep running, keep it under 128 MB at every moment, and
// afterwards the sweep removes every expired nonce in bounded batches.
func TestChallengeFloodKeepsTheWALBounded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "perceptron.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	require.NoError(t, err)
	defer s.Close()
	var now atomic.Int64
	now.Store(time.Now().UnixMicro())
	svc := auth.NewService(s, auth.Options{Now: func() time.Time { return time.UnixMicro(now.Load()) }})

	var maxWAL atomic.Int64
	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // the WAL's size, sampled
		defer bg.Done()
		for {
			if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > maxWAL.Load() {
				maxWAL.Store(fi.Size())
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	go func() { // readers holding snapshots, as verifies and key lookups do
		defer bg.Done()
		for {
			_, _ = s.ConsumeNonce(ctx, "00000000-0000-7000-8000-000000000000", time.Now())
			_, _ = s.Balance(ctx, "0x0000000000000000000000000000000000000001")
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	const n, clients = 40_000, 8
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / clients {
				_, err := svc.Challenge(ctx)
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	bg.Wait()
	t.Logf("largest WAL seen: %.1f MB", float64(maxWAL.Load())/1e6)
	require.Less(t, maxWAL.Load(), int64(128<<20), "the WAL stays bounded under a flood of writes")

	now.Add((auth.NonceTTL + time.Second).Microseconds())
	require.NoError(t, svc.Sweep(ctx))
	left, err := s.DeleteExpiredNonces(ctx, time.UnixMicro(now.Load()), 0)
	require.NoError(t, err)
	require.Zero(t, left, "the sweep removed every expired nonce")
}
