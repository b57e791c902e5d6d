package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
// the settlement durable with one record of a few hundred bytes in the
// settlement journal (path + "-settle"), applies it to the book, and
// returns once the record is written (see journal: the records of
// concurrent settlements share one write(2), and one fsync). A goroutine (applyLoop) then writes the
// journaled settlements into the database, as many as are waiting in one
// transaction, in journal order; every other write transaction first
// applies whatever is waiting, and Entries does too, so readers and
// writers of the database always see every settlement that returned.
//
// Durability (Options.Sync). With SyncFull, the default, SettleHold
// returns only once its record is on stable storage: it waits for an
// fsync of the journal that began after its record was written. The
// fsyncs are a group commit: one caller at a time runs fsync, for every
// record written until then, and the records written while it runs wait
// for the next one, so under load one fsync covers many settlements
// (syncTo). Database commits are synchronous=FULL too, and the journal
// drops a record only once the transaction that applied it has committed,
// so a settlement that returned survives a power loss. With SyncNormal
// nothing is fsynced: a settlement survives a crash of the process, not
// of the machine.
//
// Open applies every record the database does not have yet, once (a
// record is skipped if its entry ID is already in the database). A torn
// last record (a crash mid-write) fails its checksum and was never
// acknowledged. Replay never stops the store from opening: a damaged
// record is skipped (the journal is kept beside the database as
// path-settle.damaged-UNIXTIME for the operator), and a settlement that
// would take its account below zero (possible only if the database lost
// commits the journal did not, e.g. with SyncNormal or a restored backup)
// debits what the account has and is logged. Once the journal has grown
// past journalTruncateAt it is compacted to the records not yet applied.

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

// journal is the append-only settlement journal. Positions in it are
// logical offsets: bytes appended since the journal was opened, across
// compactions, so that a record's end can be compared with how much of
// the journal is written, or durable, whichever file holds it.
//
// appendRecord only encodes a record into memory (wbuf); the caller then
// waits in syncTo, where one caller at a time, the leader, writes
// everything buffered with one write(2) and, with fsync, syncs it, while
// the records appended meanwhile gather for the next leader. So no
// appender ever blocks in the kernel behind an fsync (Linux holds the
// file's lock during one), and under load one write and one fsync cover
// many settlements: a group commit.
type journal struct {
	mu      sync.Mutex
	flushed sync.Cond // on mu: broadcast when a flush ends
	path    string
	f       *os.File
	size    int64  // of f
	base    int64  // the logical offset of f's first byte
	wbuf    []byte // appended, not yet written; it follows the leader's
	spare   []byte // the leader's buffer, reused
	// inflight is the length of the buffer a leader is writing: the
	// journal's logical end is base + size + inflight + len(wbuf).
	inflight int64
	pending  []journalRec // appended, not yet applied, in order
	wake     chan struct{}
	log      *slog.Logger

	fsync    bool  // Options.Sync == SyncFull
	durable  int64 // with fsync: the logical offset up to which the journal is on stable storage
	flushing bool  // a leader is writing (and syncing) without mu
	ioErr    error // the first write or fsync failure; the journal is not trusted after it
	// syncFile is (*os.File).Sync; tests make it fail.
	syncFile func(*os.File) error
}

// newJournal returns the journal in f at path.
func newJournal(path string, f *os.File, fsync bool, log *slog.Logger) *journal {
	j := &journal{path: path, f: f, wake: make(chan struct{}, 1), log: log, fsync: fsync, syncFile: (*os.File).Sync}
	j.flushed.L = &j.mu
	return j
}

// backlog is how many settlements wait to be applied.
func (j *journal) backlog() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending)
}

// appendRecord buffers r as one line: CRC-32 (hex) of the JSON, a space,
// the JSON, and returns the logical offset of its end, for syncTo. The
// caller holds the book's lock, so records of one account are in the
// order of its balance changes.
func (j *journal) appendRecord(r journalRec) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	if j.wbuf, err = appendLine(j.wbuf, r); err != nil {
		return 0, err
	}
	j.pending = append(j.pending, r)
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return j.base + j.size + j.inflight + int64(len(j.wbuf)), nil
}

// syncTo returns once the journal is written up to the logical offset
// end, and with fsync on stable storage. If no leader is flushing, the
// caller becomes one: it writes everything buffered and syncs it; if one
// is, the caller waits for it and, if that did not cover end, for the
// next, which one of the waiters leads. After a failed write or fsync the
// journal's state on disk is unknown (after a failed fsync the kernel may
// have dropped the pages), so every later call fails too; SettleHold then
// makes settlements durable through the database instead.
func (j *journal) syncTo(end int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.done() < end {
		if j.ioErr != nil {
			return j.ioErr
		}
		if j.flushing {
			j.flushed.Wait()
			continue
		}
		j.flushLocked()
	}
	return nil
}

// done is the logical offset syncTo waits for: written, or with fsync
// durable. j.mu must be held.
func (j *journal) done() int64 {
	if j.fsync {
		return j.durable
	}
	return j.base + j.size
}

// flushLocked writes the buffer and, with fsync, syncs the file, with
// j.mu released meanwhile; j.mu must be held and no flush running.
func (j *journal) flushLocked() {
	j.flushing = true
	buf := j.wbuf
	j.wbuf, j.spare = j.spare[:0], nil
	j.inflight = int64(len(buf))
	f, sync, size := j.f, j.syncFile, j.size
	j.mu.Unlock()
	var n int
	var err error
	if len(buf) > 0 {
		n, err = f.Write(buf)
		if err != nil && n > 0 {
			// A partial record fails its checksum when read; cut it off
			// so that a later one does not follow it on its line.
			if terr := f.Truncate(size); terr == nil {
				n = 0
			}
		}
	}
	if err == nil && j.fsync {
		if err = sync(f); err != nil {
			err = fmt.Errorf("fsync: %w", err)
		}
	}
	j.mu.Lock()
	j.flushing = false
	j.size += int64(n)
	j.inflight = 0
	j.spare = buf[:0]
	if err != nil {
		j.ioErr = fmt.Errorf("sqlite: settlement journal: %w", err)
		j.log.Error("sqlite: the settlement journal could not be written; settlements now commit through the database", "err", err)
	} else if j.fsync {
		j.durable = j.base + j.size
	}
	j.flushed.Broadcast()
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
// point leaves one complete journal; with fsync the new file and then its
// directory are synced, so a power loss does too). The records dropped
// are in the database, committed. j.mu must be held; it waits for a
// running fsync, which uses the file. A failure leaves the journal as it
// was, to be compacted later.
func (j *journal) compact() error {
	for j.flushing {
		j.flushed.Wait()
	}
	// Every record, written or still buffered, is either pending (and
	// rewritten below) or applied; the buffer's are kept in the new file
	// or dropped with the old one, and their waiters released.
	dropped := j.size + int64(len(j.wbuf))
	if len(j.pending) == 0 {
		if err := j.f.Truncate(0); err != nil {
			return err
		}
		// What the file held is in the database; if the truncation is
		// lost, replay skips it.
		j.base += dropped
		j.size, j.wbuf = 0, j.wbuf[:0]
		j.durable = max(j.durable, j.base)
		j.flushed.Broadcast()
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
	if j.fsync {
		if err := f.Sync(); err != nil {
			f.Close()
			_ = os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, j.path); err != nil {
		f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if j.fsync {
		// Until the directory is synced, a power loss may bring back the
		// old file, which holds these records too.
		if err := syncDir(filepath.Dir(j.path)); err != nil {
			j.log.Warn("sqlite: syncing the journal's directory failed", "err", err)
		}
	}
	_ = j.f.Close()
	j.base += dropped
	j.f, j.size, j.wbuf = f, int64(len(buf)), j.wbuf[:0]
	if j.fsync {
		j.durable = j.base + j.size // the new file is synced, and holds every pending record
	}
	j.flushed.Broadcast()
	return nil
}

// flush writes (and with fsync syncs) what is buffered, for Close.
func (j *journal) flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.flushing {
		j.flushed.Wait()
	}
	if len(j.wbuf) > 0 && j.ioErr == nil {
		j.flushLocked()
	}
	return j.ioErr
}

// syncDir fsyncs a directory, making a rename in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readJournal returns the journal's valid records, and how many lines it
// skipped: lines that fail their checksum or do not parse. A torn last
// line is the normal trace of a crash mid-write; a bad line with good
// ones after it is damage, and reading goes on past it, since the records
// are independent (each is one settlement, skipped on replay if applied).
func readJournal(f io.Reader) (recs []journalRec, bad int) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if r, ok := parseLine(sc.Bytes()); ok {
			recs = append(recs, r)
		} else {
			bad++
		}
	}
	if sc.Err() != nil {
		bad++ // a line too long to be a record: the rest is unreadable
	}
	return recs, bad
}

// parseLine parses one journal line.
func parseLine(line []byte) (journalRec, bool) {
	var r journalRec
	sum, body, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return r, false
	}
	want, err := hex.DecodeString(string(sum))
	if err != nil || !bytes.Equal(want, binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(body))) {
		return r, false
	}
	if err := json.Unmarshal(body, &r); err != nil || r.ID == "" || r.Account == "" || r.Amount < 0 {
		return journalRec{}, false
	}
	return r, true
}

// openJournal opens the journal at path, applies the records the
// database does not have yet and empties it. The caller holds s.wmu.
func (s *Store) openJournal(ctx context.Context, path string, fsync bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: settlement journal: %w", err)
	}
	s.jn = newJournal(path, f, fsync, s.log)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	recs, bad := readJournal(f)
	if bad > 1 || (bad == 1 && len(recs) > 0 && !tornTail(f)) {
		// Keep a copy of a damaged journal for the operator; what could
		// be read is applied.
		keep := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
		if err := copyFile(path, keep); err != nil {
			return fmt.Errorf("sqlite: settlement journal: keeping a copy of the damaged journal: %w", err)
		}
		s.log.Error("sqlite: the settlement journal is damaged; applying the records that can be read",
			"bad_lines", bad, "records", len(recs), "copy", keep)
	}
	if len(recs) > 0 {
		if err := s.writeLocked(ctx, func(tx *wtx) error { return replayRecs(ctx, tx, recs) }); err != nil {
			return fmt.Errorf("sqlite: replaying the settlement journal: %w", err)
		}
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("sqlite: settlement journal: %w", err)
	}
	return nil
}

// tornTail reports whether the journal's only bad line is its last one
// (a record cut short by a crash).
func tornTail(f *os.File) bool {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	badAt, n := -1, 0
	for sc.Scan() {
		if _, ok := parseLine(sc.Bytes()); !ok {
			badAt = n
		}
		n++
	}
	return sc.Err() == nil && badAt == n-1
}

// copyFile copies src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

// replayRecs applies, one by one, the journal's records whose entries the
// database does not have. Holds were released when the store opened, so
// an account's balance is what it can pay; a settlement larger than that
// (the database lost commits the journal kept) debits what there is, so
// the store opens with every balance and entry chain intact, and is
// logged with its shortfall.
func replayRecs(ctx context.Context, tx *wtx, recs []journalRec) error {
	for _, r := range recs {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM entries WHERE id = ?`, r.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (address, balance, held) VALUES (?, 0, 0) ON CONFLICT (address) DO NOTHING`, r.Account); err != nil {
			return err
		}
		var bal, held int64
		if err := tx.QueryRowContext(ctx, `SELECT balance, held FROM accounts WHERE address = ?`, r.Account).Scan(&bal, &held); err != nil {
			return err
		}
		debit := min(r.Amount, max(bal-held, 0))
		if debit < r.Amount {
			tx.s.log.Error("sqlite: replaying a settlement larger than its account's balance; debiting the balance",
				"entry", r.ID, "account", r.Account, "amount", r.Amount, "debited", debit, "shortfall", r.Amount-debit)
		}
		if err := tx.QueryRowContext(ctx, sqlSettle, debit, r.Account).Scan(&bal); err != nil {
			return fmt.Errorf("settlement %s of %s: %w", r.ID, r.Account, err)
		}
		r.Amount, r.BalanceAfter = debit, bal
		if err := billInsertEntry(ctx, tx, r.entry(), ""); err != nil {
			return fmt.Errorf("settlement %s of %s: %w", r.ID, r.Account, err)
		}
	}
	return nil
}

// entryRowsN is how many entries one multi-row insert writes.
const entryRowsN = 16

// applyRecs writes journaled settlements: one debit per account of the
// sum of its settlements, and their entries, in journal order, with the
// balance after each computed back from the account's new balance.
func applyRecs(ctx context.Context, tx *wtx, recs []journalRec) error {
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
		if last := recs[idx[len(idx)-1]]; bal != last.BalanceAfter {
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
	err = s.writeLocked(actx, func(tx *wtx) error { return applyRecs(actx, tx, recs) })
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

// SettleHold debits st.Amount (clamped to the hold, or with
// st.ExceedHold to the hold plus the available balance the book counts),
// releases the rest of the hold and writes one entry. A hold that is not open is fault.NotFound. It returns
// once the settlement is in the journal, and with SyncFull once the
// journal is synced (see above); the database has it soon after, and
// before anything reads entries or writes.
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
	e, end, err := s.settleInBook(st)
	if err != nil {
		return billing.Entry{}, err
	}
	if err := s.jn.syncTo(end); err != nil {
		// The journal cannot be trusted: commit the settlement (and every
		// other one waiting) to the database, which is synced too.
		s.wmu.Lock()
		err := s.applyPending(ctx)
		s.wmu.Unlock()
		if err != nil {
			return billing.Entry{}, billErr("settle hold", err)
		}
	}
	return e, nil
}

// settleInBook resolves the hold in the book and writes the settlement's
// journal record, returning the entry and the record's end for syncTo.
func (s *Store) settleInBook(st billing.Settlement) (billing.Entry, int64, error) {
	b := s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.holds[st.HoldID]
	if h == nil || h.status != holdOpen {
		return billing.Entry{}, 0, billrules.HoldNotFound()
	}
	a := b.accts[h.h.Account]
	for a.busy > 0 {
		// A database transaction is changing this account's balance:
		// wait for it, so the journal and the database agree on the order.
		b.idle.Wait()
	}
	if h.status != holdOpen {
		return billing.Entry{}, 0, billrules.HoldNotFound()
	}
	// The book's balance and holds are the account's (debits being
	// written count as held), so what it has available is known here.
	settled := billrules.Settled(st, h.h.Amount, billing.MicroCents(a.balance-a.held))
	e := billEntryFor(billing.Posting{Account: h.h.Account, Type: st.Type, Description: st.Description, Usage: st.Usage, At: st.At},
		-settled, billing.MicroCents(a.balance)-settled)
	end, err := s.jn.appendRecord(recFor(e))
	if err != nil {
		return billing.Entry{}, 0, err
	}
	h.status = holdResolved
	a.balance -= int64(settled)
	a.held -= int64(h.h.Amount)
	a.unapplied++ // the hold's ref stays until the settlement is applied
	return e, end, nil
}
