package sqlite

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// powerCut is the state of a store's files at one moment, as a power loss
// would leave them, and what had been acknowledged by then.
type powerCut struct {
	db, wal, journal []byte
	// durable is how much of journal had been fsynced: a power loss keeps
	// at least that much of it.
	durable int64
	acked   []string // entry IDs of writes that had returned
}

// snapshot takes a powerCut of s. Holding the writer lock, no transaction
// or truncating checkpoint is running, so the database and WAL copies
// are of committed states (each commit was fsynced: SyncFull); the
// journal keeps growing meanwhile, and only its durable prefix counts.
func snapshot(t *testing.T, s *Store, path string, ackedNow func() []string) powerCut {
	t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	acked := ackedNow() // before durable: everything acked is within it
	s.jn.mu.Lock()
	durable := s.jn.durable - s.jn.base
	s.jn.mu.Unlock()
	var c powerCut
	var err error
	c.journal, err = os.ReadFile(path + "-settle")
	require.NoError(t, err)
	c.db, err = os.ReadFile(path)
	require.NoError(t, err)
	c.wal, err = os.ReadFile(path + "-wal")
	if !errors.Is(err, os.ErrNotExist) {
		require.NoError(t, err)
	}
	require.GreaterOrEqual(t, int64(len(c.journal)), durable)
	c.durable, c.acked = durable, acked
	return c
}

// A simulated power loss at random moments of a busy store: the journal
// loses a random part of what was not yet fsynced (cut at a random point,
// mid-record too), the WAL gets a torn frame after its last commit. The
// store opens every time, with every acknowledged settlement and credit,
// every balance equal to its entries, every chain intact. Then the same
// files damaged beyond what a power loss does (both cut anywhere, losing
// synced data): the store still opens, with books that add up.
func TestJournalSurvivesPowerLoss(t *testing.T) {
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	path := filepath.Join(dir, "p.db")
	s, err := Open(ctx, path, Options{})
	require.NoError(t, err)
	accts := []string{"0x00000000000000000000000000000000000000c1", "0x00000000000000000000000000000000000000c2", "0x00000000000000000000000000000000000000c3"}

	var mu sync.Mutex
	var acked []string
	ack := func(id string) {
		mu.Lock()
		acked = append(acked, id)
		mu.Unlock()
	}
	ackedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), acked...)
	}
	for _, a := range accts {
		e, err := s.Credit(ctx, billing.Posting{Account: a, Type: billing.Purchase, Amount: billing.Dollar, At: time.Now()})
		require.NoError(t, err)
		ack(e.ID)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := accts[r.IntN(len(accts))]
				if r.IntN(50) == 0 {
					e, err := s.Credit(ctx, billing.Posting{Account: a, Type: billing.Purchase, Amount: 10 * billing.Cent, At: time.Now()})
					if err != nil {
						t.Error(err)
						return
					}
					ack(e.ID)
					continue
				}
				h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: a, Amount: 5000, At: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
				if errors.Is(err, fault.InsufficientFunds) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				e, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(1 + r.IntN(5000)), Type: billing.ChatInference, At: time.Now()})
				if err != nil {
					t.Error(err)
					return
				}
				ack(e.ID)
			}
		}()
	}
	var cuts []powerCut
	for range 8 {
		time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond)
		cuts = append(cuts, snapshot(t, s, path, ackedNow))
	}
	close(stop)
	wg.Wait()
	require.NoError(t, s.Close())

	for i, c := range cuts {
		// As a power loss leaves them.
		journal := c.journal[:c.durable+rng.Int64N(int64(len(c.journal))-c.durable+1)]
		torn := make([]byte, 24+rng.IntN(4096))
		for k := range torn {
			torn[k] = byte(rng.Uint32())
		}
		ids := reopen(t, dir, i, "power", c.db, append(c.wal[:len(c.wal):len(c.wal)], torn...), journal, accts)
		for _, id := range c.acked {
			if !ids[id] {
				t.Fatalf("cut %d: acknowledged entry %s was lost (journal %d of %d bytes kept, %d durable)", i, id, len(journal), len(c.journal), c.durable)
			}
		}
		t.Logf("cut %d: %d acknowledged writes kept; journal cut at %d of %d bytes (%d durable)", i, len(c.acked), len(journal), len(c.journal), c.durable)

		// Damage beyond a power loss: synced data lost too.
		reopen(t, dir, i, "damaged", c.db, c.wal[:rng.IntN(len(c.wal)+1)], c.journal[:rng.IntN(len(c.journal)+1)], accts)
	}
}

// reopen writes the files into a directory of their own, opens the store
// there, checks its books and returns the IDs of every entry.
func reopen(t *testing.T, dir string, i int, kind string, db, wal, journal []byte, accts []string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	d := filepath.Join(dir, kind, string(rune('a'+i)))
	require.NoError(t, os.MkdirAll(d, 0o700))
	path := filepath.Join(d, "p.db")
	require.NoError(t, os.WriteFile(path, db, 0o600))
	require.NoError(t, os.WriteFile(path+"-wal", wal, 0o600))
	require.NoError(t, os.WriteFile(path+"-settle", journal, 0o600))
	s, err := Open(ctx, path, Options{})
	require.NoError(t, err, "%s cut %d: the store opens", kind, i)
	defer s.Close()
	ids := map[string]bool{}
	for _, a := range accts {
		bal, err := s.Balance(ctx, a)
		require.NoError(t, err)
		require.GreaterOrEqual(t, bal.Available(), billing.MicroCents(0))
		es, err := billing.AllEntries(ctx, s, a, billing.EntryFilter{})
		require.NoError(t, err)
		var prev billing.MicroCents
		for k, e := range es {
			if prev+e.Amount != e.BalanceAfter {
				t.Fatalf("%s cut %d: %s entry %d breaks the chain: %d + %d != %d", kind, i, a, k, prev, e.Amount, e.BalanceAfter)
			}
			prev = e.BalanceAfter
			ids[e.ID] = true
		}
		require.Equal(t, bal.Total, prev, "%s cut %d: %s: the balance is its entries' sum", kind, i, a)
	}
	return ids
}
