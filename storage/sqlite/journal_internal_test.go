package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
)

// stopApplier stops the goroutine that writes the journal into the
// database; Close still works afterwards.
func stopApplier(s *Store) {
	s.stopApply()
	<-s.applyDone
	s.stopApply = func() {}
	s.applyDone = make(chan struct{})
	close(s.applyDone)
}

// crash drops the store like a killed process would: nothing pending is
// applied, nothing is flushed, the lock goes away.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.stopApply()
	<-s.applyDone
	s.stopCk()
	<-s.ckDone
	require.NoError(t, s.jn.f.Close())
	_ = s.ck.Close()
	_ = s.ws.close()
	_ = s.rd.stmts.close()
	_ = s.r.Close()
	_ = s.w.Close()
	require.NoError(t, s.lock.Unlock())
	s.closeOnce.Do(func() {}) // Close must not run after this
}

// A settlement that returned is in the database after a crash: the next
// Open applies the journal, once, and ignores a torn last record.
func TestJournaledSettlementsSurviveACrash(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	const acct = "0x00000000000000000000000000000000000000e1"
	s, err := Open(ctx, path, Options{})
	require.NoError(t, err)
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	stopApplier(s) // the settlements stay in the journal only
	var want []billing.Entry
	for i := range 3 {
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 10 * billing.Cent, ExpiresAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		e, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(i+1) * billing.Cent, Type: billing.ChatInference,
			Description: "Chat", Usage: &billing.Usage{Model: "m", InputTokens: 3, OutputTokens: int64(i)}, At: time.Now()})
		require.NoError(t, err)
		want = append(want, e)
	}
	require.Equal(t, billing.MicroCents(94*billing.Cent), want[2].BalanceAfter)
	var n int
	require.NoError(t, s.r.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE type = 'ChatInference'`).Scan(&n))
	require.Zero(t, n, "not applied before the crash")
	crash(t, s)

	// A torn record, as a crash in the middle of a write leaves.
	f, err := os.OpenFile(path+"-settle", os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`0badc0de {"id":"torn","account":"` + acct + `","amount":5`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	for range 2 { // the second Open finds nothing more to apply
		s, err = Open(ctx, path, Options{})
		require.NoError(t, err)
		bal, err := s.Balance(ctx, acct)
		require.NoError(t, err)
		require.Equal(t, billing.Balance{Total: 94 * billing.Cent}, bal)
		got, err := billing.AllEntries(ctx, s, acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
		require.NoError(t, err)
		for i := range got {
			got[i].Seq = 0 // SettleHold's entries have none yet
		}
		require.Equal(t, want, got)
		require.NoError(t, s.Close())
	}
	fi, err := os.Stat(path + "-settle")
	require.NoError(t, err)
	require.Zero(t, fi.Size(), "an applied journal is emptied")
}

// Writes that change a balance see every settlement that returned: a
// debit's entry comes after them, with the balance they left.
func TestWritesApplyTheJournalFirst(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	const acct = "0x00000000000000000000000000000000000000e2"
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	for range 50 {
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.Cent, ExpiresAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.Cent / 2, Type: billing.ChatInference})
		require.NoError(t, err)
		_, err = s.Debit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: billing.Cent / 4})
		require.NoError(t, err)
	}
	es, err := billing.AllEntries(ctx, s, acct, billing.EntryFilter{})
	require.NoError(t, err)
	bal := billing.MicroCents(0)
	for _, e := range es {
		bal += e.Amount
		require.Equal(t, bal, e.BalanceAfter, "entry %s", e.ID)
	}
	require.Equal(t, billing.Dollar-50*(billing.Cent/2+billing.Cent/4), bal)
}

// When settlements come faster than the applier writes them, SettleHold
// writes the backlog itself: the journal never holds much more than
// maxBacklog settlements.
func TestSettlementBacklogIsBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	stopApplier(s) // only the backlog rule writes
	const acct = "0x00000000000000000000000000000000000000e3"
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	most := 0
	for range maxBacklog + 100 {
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 1000, ExpiresAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1, Type: billing.ChatInference})
		require.NoError(t, err)
		most = max(most, s.jn.backlog())
	}
	require.LessOrEqual(t, most, maxBacklog)
	var n int
	require.NoError(t, s.r.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE type = 'ChatInference'`).Scan(&n))
	require.GreaterOrEqual(t, n, maxBacklog, "the backlog was written by the callers")
	es, err := billing.AllEntries(ctx, s, acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	require.Len(t, es, maxBacklog+100)
}

// A journal that grew past its limit is compacted to the settlements not
// yet applied, and those survive a crash right after.
func TestJournalCompactionKeepsPending(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	s, err := Open(ctx, path, Options{})
	require.NoError(t, err)
	const acct = "0x00000000000000000000000000000000000000e4"
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	stopApplier(s)
	settle := func(n int) {
		for range n {
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: 100, ExpiresAt: time.Now().Add(time.Hour)})
			require.NoError(t, err)
			_, err = s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: 1, Type: billing.ChatInference})
			require.NoError(t, err)
		}
	}
	settle(100)
	s.wmu.Lock()
	_, err = s.applySome(ctx, 60) // 60 applied, 40 pending
	require.NoError(t, err)
	s.jn.mu.Lock()
	require.NoError(t, s.jn.compact())
	s.jn.mu.Unlock()
	s.wmu.Unlock()
	require.Len(t, readJournalFile(t, path+"-settle"), 40, "only the pending records are left")
	settle(5) // appends go to the new file
	require.Len(t, readJournalFile(t, path+"-settle"), 45)
	crash(t, s)

	s, err = Open(ctx, path, Options{})
	require.NoError(t, err)
	defer s.Close()
	es, err := billing.AllEntries(ctx, s, acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	require.Len(t, es, 105)
	bal, err := s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.Dollar - 105}, bal)
}

func readJournalFile(t *testing.T, path string) []journalRec {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	recs, bad := readJournal(f)
	require.Zero(t, bad, "no damaged lines")
	return recs
}

// Replay never stops the store from opening: a journal whose database
// lost the credits behind its settlements (a restored backup, or
// SyncNormal after a power loss) debits what each account has, for an
// account the database no longer knows too; a damaged line in the middle
// is skipped, the records after it applied, and the damaged journal kept.
func TestReplayNeverBlocksOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.db")
	const poor, gone = "0x00000000000000000000000000000000000000e5", "0x00000000000000000000000000000000000000e6"
	s, err := Open(ctx, path, Options{})
	require.NoError(t, err)
	_, err = s.Credit(ctx, billing.Posting{Account: poor, Type: billing.Purchase, Amount: 3 * billing.Cent})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	line := func(r journalRec) string {
		b, err := appendLine(nil, r)
		require.NoError(t, err)
		return string(b)
	}
	at := time.Now().UnixMicro()
	journal := line(journalRec{ID: "00000000-0000-7000-8000-0000000000a1", Account: poor, Type: "ChatInference", Amount: 2 * int64(billing.Cent), At: at}) +
		"0badc0de {\"id\":\"damaged\"}\n" + // damage in the middle
		line(journalRec{ID: "00000000-0000-7000-8000-0000000000a2", Account: poor, Type: "ChatInference", Amount: 5 * int64(billing.Cent), At: at}) +
		line(journalRec{ID: "00000000-0000-7000-8000-0000000000a3", Account: gone, Type: "ChatInference", Amount: 7, At: at})
	require.NoError(t, os.WriteFile(path+"-settle", []byte(journal), 0o600))

	s, err = Open(ctx, path, Options{})
	require.NoError(t, err, "the store opens")
	defer s.Close()
	es, err := billing.AllEntries(ctx, s, poor, billing.EntryFilter{})
	require.NoError(t, err)
	require.Len(t, es, 3)
	require.Equal(t, -2*billing.Cent, es[1].Amount, "covered: debited in full")
	require.Equal(t, -1*billing.Cent, es[2].Amount, "5 cents with 1 left: debits the 1")
	require.Zero(t, es[2].BalanceAfter)
	bal, err := s.Balance(ctx, poor)
	require.NoError(t, err)
	require.Zero(t, bal.Total)
	es, err = billing.AllEntries(ctx, s, gone, billing.EntryFilter{})
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Zero(t, es[0].Amount, "an account the database lost: nothing to debit")
	kept, err := filepath.Glob(path + "-settle.damaged-*")
	require.NoError(t, err)
	require.Len(t, kept, 1, "the damaged journal is kept for the operator")
	b, err := os.ReadFile(kept[0])
	require.NoError(t, err)
	require.Equal(t, journal, string(b))
}

// After a failed fsync of the journal, a settlement still returns only
// once it is durable: committed to the database (synchronously) instead.
func TestFailedJournalSyncCommitsThroughTheDatabase(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	require.NoError(t, err)
	defer s.Close()
	const acct = "0x00000000000000000000000000000000000000e7"
	_, err = s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar})
	require.NoError(t, err)
	stopApplier(s)
	s.jn.mu.Lock()
	s.jn.syncFile = func(*os.File) error { return syscall.EIO }
	s.jn.mu.Unlock()
	for i := range 3 {
		h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.Cent, ExpiresAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		e, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.Cent, Type: billing.ChatInference})
		require.NoError(t, err, "settlement %d", i)
		var n int
		require.NoError(t, s.r.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE id = ?`, e.ID).Scan(&n))
		require.Equal(t, 1, n, "settlement %d is in the database when it returns", i)
	}
}
