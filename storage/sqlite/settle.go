package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

// Settlements go through a journal.
//
// Every chat request ends with a settlement, so settlements are most of
// the store's writes, and a SQLite write transaction costs a few hundred
// microseconds of CPU in the pure-Go driver. SettleHold therefore makes
// the settlement durable by appending one record to the settlement
// journal (path + "-settle", one write(2) of a few hundred bytes), applies
// it to the book, and returns. A goroutine (applyLoop) then writes the
// journaled settlements into the database, as many as are waiting in one
// transaction, in journal order; every other write transaction first
// applies whatever is waiting, and Entries does too, so readers and
// writers of the database always see every settlement that returned.
//
// Durability is that of the database's own commits: like a commit in WAL
// mode with synchronous=NORMAL, a journal record is written to the
// operating system without fsync, so it survives a crash of the process
// (Open applies every record the database does not have yet, once: a
// record is skipped if its entry ID is already in the database), not a
// crash of the machine. A torn last record (a crash mid-write) fails its
// checksum and was never acknowledged. Once the journal has grown past
// journalTruncateAt it is compacted to the records not yet applied.

// journalTruncateAt is the size past which the journal is compacted to
// the records not yet applied (see compact).
const journalTruncateAt = 4 << 20

// applyDelay is how long applyLoop lets settlements gather before it
// writes them into the database. A transaction's fixed cost (its commit
// writes the changed pages to the WAL) is shared by every settlement in
// it, so gathering more costs less CPU, and fewer transactions disturb
// the requests running beside them less: at one request at a time, the
// gateway's added p99 over SQLite went from 1.1–1.4 ms with 10 ms and
// slices of 16 to 0.45–0.87 ms with 100 ms and batches of 512
// (BENCHMARKS.md, section 8). Nothing waits for the applier: readers of
// entries and every other write apply the journal themselves first.
const applyDelay = 100 * time.Millisecond

// applyBatch is the most settlements applyLoop writes in one transaction
// (BenchmarkApplySettlements: 23–26 µs a settlement in transactions of
// 16, 13–15 µs in transactions of 512).
const applyBatch = 512

// maxBacklog is how many journaled settlements may wait for the applier
// before SettleHold writes them itself.
const maxBacklog = 4096

// applyTimeout bounds one apply transaction.
const applyTimeout = 30 * time.Second

// journalRec is one settlement as the journal keeps it.
type journalRec struct {
	ID           string `json:"id"`
	Account      string `json:"account"`
	Type         string `json:"type"`
	Amount       int64  `json:"amount"` // debited, > 0 or 0
	BalanceAfter int64  `json:"balance_after"`
	Description  string `json:"description,omitempty"`
	Model        string `json:"model,omitempty"`
	In           int64  `json:"in,omitempty"`
	Out          int64  `json:"out,omitempty"`
	HasUsage     bool   `json:"has_usage,omitempty"`
	At           int64  `json:"at"` // Unix microseconds
}

func recFor(e billing.Entry) journalRec {
	r := journalRec{ID: e.ID, Account: e.Account, Type: string(e.Type), Amount: -int64(e.Amount),
		BalanceAfter: int64(e.BalanceAfter), Description: e.Description, At: e.CreatedAt.UnixMicro()}
	if e.Usage != nil {
		r.HasUsage, r.Model, r.In, r.Out = true, e.Usage.Model, e.Usage.InputTokens, e.Usage.OutputTokens
	}
	return r
}

func (r journalRec) entry() billing.Entry {
	e := billing.Entry{ID: r.ID, Account: r.Account, Type: billing.TxType(r.Type), Status: billing.Completed,
		Amount: -billing.MicroCents(r.Amount), BalanceAfter: billing.MicroCents(r.BalanceAfter),
		Description: r.Description, CreatedAt: billMicroTime(r.At)}
	if r.HasUsage {
		e.Usage = &billing.Usage{Model: r.Model, InputTokens: r.In, OutputTokens: r.Out}
	}
	return e
}

// journal is the append-only settlement journal.
type journal struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	buf     []byte
	pending []journalRec // written, not yet applied, in order
	wake    chan struct{}
	log     *slog.Logger
}

// backlog is how many settlements wait to be applied.
func (j *journal) backlog() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending)
}

// appendRecord writes r as one line: CRC-32 (hex) of the JSON, a space,
// the JSON. The caller holds the book's lock, so records of one account
// are in the order of its balance changes.
func (j *journal) appendRecord(r journalRec) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if j.buf, err = appendLine(j.buf[:0], r); err != nil {
		return err
	}
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	if err != nil {
		if n > 0 {
			// A partial record fails its checksum when read; cut it off
			// so the next record starts on a line of its own.
			if terr := j.f.Truncate(j.size - int64(n)); terr == nil {
				j.size -= int64(n)
			}
		}
		return fmt.Errorf("sqlite: settlement journal: %w", err)
	}
	j.pending = append(j.pending, r)
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return nil
}

// appendLine appends r's journal line to buf.
func appendLine(buf []byte, r journalRec) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return buf, err
	}
	buf = hex.AppendEncode(buf, binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(body)))
	return append(append(append(buf, ' '), body...), '\n'), nil
}

// compact shrinks a journal that grew past journalTruncateAt, keeping the
// records still pending: it empties the file when none is, and otherwise
// writes them to a new file that atomically replaces it (so a crash at any
// point leaves one complete journal). j.mu must be held. A failure leaves
// the journal as it was, to be compacted later.
func (j *journal) compact() error {
	if len(j.pending) == 0 {
		if err := j.f.Truncate(0); err != nil {
			return err
		}
		j.size = 0
		return nil
	}
	var buf []byte
	for _, r := range j.pending {
		var err error
		if buf, err = appendLine(buf, r); err != nil {
			return err
		}
	}
	// The new file is written and opened before it replaces the old one,
	// so appends never go to a file that is no longer the journal.
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return err
	}
	_ = j.f.Close()
	j.f, j.size = f, int64(len(buf))
	return nil
}

// readJournal returns the journal's valid records; reading stops at the
// first record that is torn or fails its checksum.
func readJournal(f io.Reader) []journalRec {
	var out []journalRec
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		sum, body, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			break
		}
		want, err := hex.DecodeString(string(sum))
		if err != nil || !bytes.Equal(want, binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(body))) {
			break
		}
		var r journalRec
		if err := json.Unmarshal(body, &r); err != nil {
			break
		}
		out = append(out, r)
	}
	return out
}

// openJournal opens the journal at path, applies the records the
// database does not have yet and empties it. The caller holds s.wmu.
func (s *Store) openJournal(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: settlement journal: %w", err)
	}
	s.jn = &journal{path: path, f: f, wake: make(chan struct{}, 1), log: s.log}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	recs := readJournal(f)
	if len(recs) > 0 {
		if err := s.writeLocked(ctx, func(tx *wtx) error { return applyRecs(ctx, tx, recs, true) }); err != nil {
			return fmt.Errorf("sqlite: replaying the settlement journal: %w", err)
		}
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("sqlite: settlement journal: %w", err)
	}
	return nil
}

// entryRowsN is how many entries one multi-row insert writes.
const entryRowsN = 16

// applyRecs writes journaled settlements: one debit per account of the
// sum of its settlements, and their entries, in journal order, with the
// balance after each computed back from the account's new balance. On
// replay, a record whose entry is already in the database is skipped.
func applyRecs(ctx context.Context, tx *wtx, recs []journalRec, replay bool) error {
	if replay {
		kept := recs[:0:0]
		for _, r := range recs {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE id = ?`, r.ID).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				kept = append(kept, r)
			}
		}
		recs = kept
	}
	entries := make([]billing.Entry, len(recs))
	byAcct := map[string][]int{}
	var order []string
	for i, r := range recs {
		entries[i] = r.entry()
		if _, ok := byAcct[r.Account]; !ok {
			order = append(order, r.Account)
		}
		byAcct[r.Account] = append(byAcct[r.Account], i)
	}
	for _, account := range order {
		idx := byAcct[account]
		var total int64
		for _, i := range idx {
			total += recs[i].Amount
		}
		var bal int64
		if err := tx.QueryRowContext(ctx, sqlSettle, total, account).Scan(&bal); err != nil {
			return fmt.Errorf("settlements of %s: %w", account, err)
		}
		if last := recs[idx[len(idx)-1]]; !replay && bal != last.BalanceAfter {
			// The book and the database disagree: a bug. The database's
			// figures are the ones written.
			tx.s.log.Error("sqlite: a settlement's balance differs from the book's", "entry", last.ID, "account", account,
				"book", last.BalanceAfter, "database", bal)
		}
		after := bal
		for k := len(idx) - 1; k >= 0; k-- {
			entries[idx[k]].BalanceAfter = billing.MicroCents(after)
			after += recs[idx[k]].Amount
		}
	}
	args := make([]any, 0, 15*entryRowsN)
	for len(entries) >= entryRowsN {
		args = args[:0]
		for _, e := range entries[:entryRowsN] {
			args = billEntryArgs(args, e, "")
		}
		if _, err := tx.ExecContext(ctx, sqlEntryInsertN(), args...); err != nil {
			return fmt.Errorf("settlement entries: %w", err)
		}
		entries = entries[entryRowsN:]
	}
	for _, e := range entries {
		if err := billInsertEntry(ctx, tx, e, ""); err != nil {
			return fmt.Errorf("settlement %s of %s: %w", e.ID, e.Account, err)
		}
	}
	return nil
}

// applyPending writes every journaled settlement not yet in the database,
// in one transaction. The caller holds s.wmu. If it fails, the
// settlements stay pending, and the next call tries again.
func (s *Store) applyPending(ctx context.Context) error {
	_, err := s.applySome(ctx, 0)
	return err
}

// applySome is applyPending for at most max settlements (0: all), the
// oldest; more reports whether others are waiting.
func (s *Store) applySome(ctx context.Context, max int) (more bool, err error) {
	j := s.jn
	if j == nil {
		return false, nil
	}
	j.mu.Lock()
	recs := j.pending
	if max > 0 && len(recs) > max {
		recs, j.pending = recs[:max:max], recs[max:]
	} else {
		j.pending = nil
	}
	j.mu.Unlock()
	if len(recs) == 0 {
		return false, nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	defer cancel()
	err = s.writeLocked(actx, func(tx *wtx) error { return applyRecs(actx, tx, recs, false) })
	if err != nil {
		j.mu.Lock()
		j.pending = append(recs, j.pending...)
		j.mu.Unlock()
		return true, err
	}
	b := s.book
	b.mu.Lock()
	for _, r := range recs {
		if a := b.accts[r.Account]; a != nil {
			a.refs-- // the settlement is in the database now
			a.unapplied--
		}
	}
	b.mu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.size > journalTruncateAt {
		if err := j.compact(); err != nil {
			s.log.Error("sqlite: compacting the settlement journal failed; retrying later", "err", err)
		}
	}
	return len(j.pending) > 0, nil
}

// applyLoop applies journaled settlements as they come, until ctx ends.
// After a failure it waits a little before trying again.
func (s *Store) applyLoop(ctx context.Context) {
	defer close(s.applyDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.jn.wake:
		}
		// Let settlements gather: one transaction for many costs far
		// less CPU than one each, and nothing waits for it (readers and
		// writers apply the journal themselves when they need it).
		t := time.NewTimer(applyDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var err error
		for more := true; more && err == nil; {
			// In batches, yielding in between, so that other writers get
			// the writer lock.
			s.wmu.Lock()
			more, err = s.applySome(ctx, applyBatch)
			s.wmu.Unlock()
			runtime.Gosched()
		}
		if err != nil {
			s.log.Error("sqlite: applying settlements failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			select {
			case s.jn.wake <- struct{}{}:
			default:
			}
		}
	}
}

// flushSettlements writes every settlement that returned into the
// database, for readers of entries.
func (s *Store) flushSettlements(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.applyPending(ctx)
}

// SettleHold debits st.Amount (clamped to the hold), releases the rest and
// writes one entry. A hold that is not open is fault.NotFound. It returns
// once the settlement is in the journal (see above); the database has it
// soon after, and before anything reads entries or writes.
func (s *Store) SettleHold(ctx context.Context, st billing.Settlement) (billing.Entry, error) {
	if err := billrules.Settlement(&st); err != nil {
		return billing.Entry{}, err
	}
	if s.jn.backlog() >= maxBacklog {
		// Settlements come faster than the applier writes them: this
		// caller writes the backlog itself, which bounds the journal, the
		// memory it holds and the wait of the next reader.
		s.wmu.Lock()
		err := s.applyPending(ctx)
		s.wmu.Unlock()
		if err != nil {
			return billing.Entry{}, billErr("settle hold", err)
		}
	}
	b := s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.holds[st.HoldID]
	if h == nil || h.status != holdOpen {
		return billing.Entry{}, billrules.HoldNotFound()
	}
	a := b.accts[h.h.Account]
	for a.busy > 0 {
		// A database transaction is changing this account's balance:
		// wait for it, so the journal and the database agree on the order.
		b.idle.Wait()
	}
	if h.status != holdOpen {
		return billing.Entry{}, billrules.HoldNotFound()
	}
	settled := min(st.Amount, h.h.Amount)
	e := billEntryFor(billing.Posting{Account: h.h.Account, Type: st.Type, Description: st.Description, Usage: st.Usage, At: st.At},
		-settled, billing.MicroCents(a.balance)-settled)
	if err := s.jn.appendRecord(recFor(e)); err != nil {
		return billing.Entry{}, err
	}
	h.status = holdResolved
	a.balance -= int64(settled)
	a.held -= int64(h.h.Amount)
	a.unapplied++ // the hold's ref stays until the settlement is applied
	return e, nil
}
