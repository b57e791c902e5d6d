// Package sqlite is the embedded SQLite store, Perceptron's default backend.
//
// It uses the pure Go driver modernc.org/sqlite (no cgo), WAL journaling and
// a busy timeout. Writes go through a single connection whose transactions
// begin with BEGIN IMMEDIATE, so a write transaction holds SQLite's write
// lock from its first statement and never fails half-way with SQLITE_BUSY;
// reads use a separate pool and run concurrently with the writer.
//
// A database file belongs to one process: Open takes an exclusive lock on
// a file next to it (path + ".lock") and fails if another process holds
// it. Because no one else writes the file, the store keeps the ledger's
// holds, and the balances of the accounts that have them, in memory: a
// hold is decided and placed without a database round trip (see book),
// and key lookups are cached.
//
// A settlement is made durable by appending one checksummed record to a
// journal next to the file (path + "-settle") with one write(2), and
// returns. A background goroutine writes the journal into the database in
// batches: it lets settlements gather for a tenth of a second and writes
// up to 512 in one transaction, one debit per account and multi-row entry
// inserts (see applyLoop). Every other write, and every read of entries,
// applies the journal first, so no caller ever sees the database behind
// the journal; Open replays what a crash left in it, skipping what is
// already in the database. With Options.Sync at its default, SyncFull, a
// write that returned survives a power loss: commits are
// synchronous=FULL, and a settlement waits for an fsync of the journal
// that it shares with the settlements written meanwhile (group commit).
// Nonces and key usage times, which a power loss may take back without
// harm, commit without waiting for an fsync. Holds are released by a crash
// anyway. For more than one server process, use the postgres package.
//
// The WAL is checkpointed in the background and truncated once it passes
// 32 MB, so a steady stream of writes cannot grow it without bound.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"

	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a SQLite database holding every Perceptron table.
type Store struct {
	// The stores written once for both SQL backends (auth.go wraps some
	// of Auth's methods with the key cache).
	sqlstore.Releases
	sqlstore.Auth
	sqlstore.Points
	sqlstore.Subscriptions
	sqlstore.Domains
	sqlstore.Feeds
	sqlstore.Personas

	w  *sql.DB // one connection, for write transactions
	r  *sql.DB // many connections, for reads
	ws stmtCache
	rd reader
	// ck runs WAL checkpoints in the background, so that no request's
	// commit pays for one (see checkpointLoop).
	ck     *sql.DB
	stopCk context.CancelFunc
	ckDone chan struct{}
	// missed, if set (by tests), is called with each query that runs as
	// text because it is not in the cache.
	missed func(query string)

	lock *flock.Flock // the exclusive lock on the file

	// wmu is the writer lock: every write transaction runs under it, and
	// a balance-changing one applies its delta to the book before
	// releasing it.
	wmu  sync.Mutex
	sync Sync // Options.Sync
	// relaxed is set (under wmu) while the writer connection runs with
	// synchronous=NORMAL for writeRelaxed.
	relaxed bool
	book    *book
	keys    *keyCache

	// The settlement journal and the goroutine that applies it (see
	// SettleHold).
	jn        *journal
	stopApply context.CancelFunc
	applyDone chan struct{}
	log       *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Sync says what a write must reach before it returns: what survives a
// crash.
type Sync int

const (
	// SyncFull, the default, makes every write that returned survive a
	// power loss: database commits are synchronous=FULL (the WAL is
	// fsynced at each commit) and settlements wait for an fsync of their
	// journal, shared by the settlements written meanwhile (a group
	// commit). BENCHMARKS.md, section 12, measures what it costs.
	SyncFull Sync = iota
	// SyncNormal fsyncs nothing but checkpoints: a write that returned
	// survives a crash of the process, not of the machine (the
	// synchronous=NORMAL of SQLite's WAL mode). For disposable data, or a
	// disk that does not lose acknowledged writes.
	SyncNormal
)

// String returns "full" or "normal".
func (y Sync) String() string {
	if y == SyncNormal {
		return "normal"
	}
	return "full"
}

// ParseSync parses "full" or "normal" ("" is full).
func ParseSync(v string) (Sync, error) {
	switch v {
	case "", "full":
		return SyncFull, nil
	case "normal":
		return SyncNormal, nil
	}
	return 0, fmt.Errorf("sqlite: sync must be full or normal, not %q", v)
}

// Options configure [Open]. The zero value is the default.
type Options struct {
	// Sync is what a write survives; the zero value is SyncFull.
	Sync Sync
	// Logger receives what the store cannot return to a caller (a
	// settlement it could not apply yet, and retries; a damaged journal
	// found at Open). Nil discards it.
	Logger *slog.Logger
}

// Open opens (creating if needed) the database file at path and applies
// any pending migrations.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || strings.HasPrefix(path, ":memory:") {
		return nil, errors.New("sqlite: a file path is required (use the memory store for an in-memory database)")
	}
	q := url.Values{}
	sync := "synchronous(FULL)"
	if opts.Sync == SyncNormal {
		sync = "synchronous(NORMAL)"
	}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", sync, "foreign_keys(1)",
		// Checkpoints run in the background (checkpointLoop), not in the
		// commit of whichever write crosses the threshold; the WAL file is
		// truncated back to this size after a checkpoint.
		"wal_autocheckpoint(0)", "journal_size_limit(67108864)"} {
		q.Add("_pragma", p)
	}
	base := "file:" + path + "?" + q.Encode()
	lock := flock.New(path + ".lock")
	locked, err := lock.TryLock()
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock %s: %w", lock.Path(), err)
	}
	if !locked {
		return nil, fmt.Errorf("sqlite: %s is in use by another process (it holds %s); a SQLite database serves one process, use PostgreSQL for several", path, lock.Path())
	}
	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		lock.Unlock()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", base+"&mode=ro")
	if err != nil {
		w.Close()
		lock.Unlock()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	r.SetConnMaxIdleTime(0)
	s := &Store{w: w, r: r, rd: reader{db: r}, lock: lock, sync: opts.Sync, book: newBook(), keys: newKeyCache(), log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.Releases = sqlstore.Releases{B: sqlBackend{s}}
	s.Auth = sqlstore.Auth{B: sqlBackend{s}}
	s.Points = sqlstore.Points{B: sqlBackend{s}}
	s.Subscriptions = sqlstore.Subscriptions{B: sqlBackend{s}, L: sqlBackend{s}}
	s.Domains = sqlstore.Domains{B: sqlBackend{s}, Subs: s.Subscriptions}
	s.Feeds = sqlstore.Feeds{B: sqlBackend{s}}
	s.Personas = sqlstore.Personas{B: sqlBackend{s}}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	// This process owns the file now: whatever holds an earlier version
	// of the store left open in the database belong to a process that is
	// gone, so they are released.
	if err := s.write(ctx, func(tx *wtx) error {
		if _, err := tx.ExecContext(ctx, sqlReleaseOld, time.Now().UnixMicro()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, sqlReleaseOldAcc)
		return err
	}); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: release holds of an earlier process: %w", err)
	}
	s.wmu.Lock()
	err = s.openJournal(ctx, path+"-settle", opts.Sync == SyncFull)
	s.wmu.Unlock()
	if err != nil {
		s.Close()
		return nil, err
	}
	// The tables exist now: prepare the hot statements.
	if s.ws, err = prepareStmts(ctx, w, writeStmts()); err == nil {
		s.rd.stmts, err = prepareStmts(ctx, r, readStmts())
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	ck, err := sql.Open("sqlite", base)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	ck.SetMaxOpenConns(1)
	ckCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.ck, s.stopCk, s.ckDone = ck, stop, make(chan struct{})
	go s.checkpointLoop(ckCtx, path+"-wal")
	applyCtx, stopApply := context.WithCancel(context.WithoutCancel(ctx))
	s.stopApply, s.applyDone = stopApply, make(chan struct{})
	go s.applyLoop(applyCtx)
	return s, nil
}

// checkpointEvery is how often the background checkpointer runs a
// passive checkpoint; walCheckEvery is how often it looks at the WAL's
// size.
const (
	checkpointEvery = time.Second
	walCheckEvery   = 50 * time.Millisecond
)

// walTruncateAt is the WAL size past which the checkpointer truncates it.
const walTruncateAt = 32 << 20

// checkpointLoop copies the WAL into the database file, on a connection
// of its own. A PASSIVE checkpoint, every checkpointEvery, never blocks
// writers or readers; with SQLite's automatic checkpoint turned off, this
// keeps request commits from stalling on a checkpoint's fsync. But SQLite
// starts the WAL over only when a writer finds every frame of it copied,
// and under a steady stream of writes (a flood of challenges: 40,000 made
// it 570 MB) a passive checkpoint never catches up, so the file grows
// without bound and journal_size_limit never applies. So once the WAL is
// past walTruncateAt, the checkpointer takes the writer lock, which stops
// new writes for as long as it takes to copy what is left (the passive
// checkpoints copied most of it already), and runs a TRUNCATE checkpoint,
// which copies every frame and empties the file. A last passive
// checkpoint runs when the store closes.
func (s *Store) checkpointLoop(ctx context.Context, wal string) {
	defer close(s.ckDone)
	t := time.NewTicker(walCheckEvery)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			_, _ = s.ck.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
			return
		case now := <-t.C:
			if fi, err := os.Stat(wal); err == nil && fi.Size() > walTruncateAt {
				s.truncateWAL(ctx)
				last = now
			} else if now.Sub(last) >= checkpointEvery {
				_, _ = s.ck.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
				last = now
			}
		}
	}
}

// truncateWAL copies the whole WAL into the database and empties it,
// under the writer lock.
func (s *Store) truncateWAL(ctx context.Context) {
	// Most frames first, without stopping writers.
	_, _ = s.ck.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var busy, logFrames, done int
	err := s.ck.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done)
	if err != nil || busy != 0 {
		s.log.Warn("sqlite: could not truncate the WAL; retrying", "err", err, "busy", busy)
	}
}

// Close applies the journaled settlements, closes the database and
// releases the file's lock. Open holds are dropped: they were never
// written. Calling Close again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var jErr error
		if s.stopApply != nil {
			s.stopApply()
			<-s.applyDone
		}
		if s.jn != nil {
			// Apply what is journaled; what cannot be applied stays in
			// the journal for the next Open.
			s.wmu.Lock()
			if err := s.applyPending(context.Background()); err == nil {
				_ = s.jn.f.Truncate(0)
			} else {
				_ = s.jn.flush()
			}
			jErr = s.jn.f.Close()
			s.wmu.Unlock()
		}
		var ckErr error
		if s.stopCk != nil {
			s.stopCk()
			<-s.ckDone
			ckErr = s.ck.Close()
		}
		s.closeErr = errors.Join(jErr, s.ws.close(), s.rd.stmts.close(), s.r.Close(), s.w.Close(), ckErr, s.lock.Unlock())
	})
	return s.closeErr
}

// writeStmts are the statements prepared on the writer: those of
// settlements, debits and credits, and the batched touch of client keys.
func writeStmts() []string {
	return []string{
		sqlSettle, sqlEntryInsert, sqlEntryInsertN(),
		sqlDebit, sqlEntryByKey, sqlPaymentCount, sqlCreditBalance, sqlCreditUpsert,
		sqlstore.SQLTouchClientKey,
	}
}

// readStmts are the statements prepared on the read pool: those every
// API request runs (key lookups) and the balance.
func readStmts() []string {
	return []string{sqlstore.SQLClientKeyByHash, sqlstore.SQLMasterKeyOwner, sqlBalance}
}

// stmtCache maps the SQL text of the hot statements to the statement
// prepared on one handle (the writer or the read pool). It is filled by
// Open and only read afterwards, so it needs no lock. A query that is not
// in it runs as text, parsed and compiled on every call.
//
// modernc.org/sqlite keeps no statement cache of its own: every query sent
// as text is parsed and compiled again, which costs more than executing
// most of these statements. A statement of the cache is compiled once per
// connection: on the one writer connection at Open, and on each read
// connection the first time it runs there (database/sql remembers the
// statement per connection). The SQL, and so what runs, is the same.
type stmtCache map[string]*sql.Stmt

// prepareStmts prepares each query on db.
func prepareStmts(ctx context.Context, db *sql.DB, queries []string) (stmtCache, error) {
	c := make(stmtCache, len(queries))
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("sqlite: prepare %q: %w", q, err), c.close())
		}
		c[q] = st
	}
	return c, nil
}

// close closes every statement.
func (c stmtCache) close() error {
	var errs []error
	for _, st := range c {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// wtx is a write transaction. Its methods run the statement of the
// writer's cache when query is one, bound to the transaction with
// tx.StmtContext, which reuses the statement already prepared on the one
// writer connection; other queries run as text.
type wtx struct {
	tx     *sql.Tx
	stmts  stmtCache
	missed func(query string)
	s      *Store

	// What the transaction does to the book (see finish).
	busy     map[string]bool // accounts marked busy, by write
	reserved []bookDelta     // debits' reservations, released at the end
	deltas   []bookDelta     // balance changes, applied if it commits
}

// errRetry asks write to apply the journal and run the transaction again:
// an account it changes has settlements that are not in the database yet.
var errRetry = errors.New("sqlite: settlements pending; retry")

// own marks the account busy for this write (settlements of it wait until
// the write ends) and returns it, loaded. If settlements of it are
// journaled but not applied, it returns errRetry. b.mu must be held, and
// the writer lock.
func (t *wtx) own(ctx context.Context, account string) (*bookAcct, error) {
	a, err := t.s.load(ctx, account)
	if err != nil {
		return nil, err
	}
	if !t.busy[account] {
		a.busy++
		a.refs++
		t.busy[account] = true
	}
	if a.unapplied > 0 {
		return nil, errRetry
	}
	return a, nil
}

// touch marks the account busy for a write that changes its balance.
func (t *wtx) touch(ctx context.Context, account string) error {
	b := t.s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := t.own(ctx, account)
	return err
}

type bookDelta struct {
	account string
	amount  int64
}

// delta records a change of the account's balance, applied to the book
// when the transaction commits.
func (t *wtx) delta(account string, amount int64) {
	t.deltas = append(t.deltas, bookDelta{account, amount})
}

// reserve keeps amount of the account's available balance (its balance
// less its holds and the debits in flight) for this transaction's debit,
// or fails with fault.InsufficientFunds. The reservation ends with the
// transaction; if it commits, the debit's delta replaces it.
func (t *wtx) reserve(ctx context.Context, account string, amount int64) error {
	b := t.s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	a, err := t.own(ctx, account)
	if err != nil {
		return err
	}
	if a.balance-a.held < amount {
		return billrules.Insufficient()
	}
	a.held += amount
	t.reserved = append(t.reserved, bookDelta{account, amount})
	return nil
}

// resync reads the balances the transaction touched into the book again,
// after a commit whose outcome is unknown. The caller holds s.wmu. An
// account that cannot be read is dropped from the book if it can be, and
// otherwise keeps its balance, which errs on the safe side for a debit.
func (t *wtx) resync(ctx context.Context) {
	b := t.s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range t.deltas {
		a := b.accts[d.account]
		if a == nil {
			continue
		}
		var bal, held int64
		if err := t.s.read().QueryRowContext(context.WithoutCancel(ctx), sqlBalance, d.account).Scan(&bal, &held); err == nil {
			a.balance = bal
		} else if a.refs == 0 {
			delete(b.accts, d.account)
		}
	}
}

// finish ends the transaction's reservations and, if it committed,
// applies its balance changes to the cached accounts.
func (t *wtx) finish(committed bool) {
	if len(t.reserved) == 0 && (!committed || len(t.deltas) == 0) {
		return
	}
	b := t.s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range t.reserved {
		b.accts[r.account].held -= r.amount
	}
	if committed {
		for _, d := range t.deltas {
			if a := b.accts[d.account]; a != nil {
				a.balance += d.amount
			}
		}
	}
}

// stmt returns the transaction's statement for query, or nil if query is
// not cached.
func (t *wtx) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.stmts[query]; st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	if t.missed != nil {
		t.missed(query)
	}
	return nil
}

// prepare returns a statement for query that runs in the transaction and
// is closed with it: the cached one, or one prepared now.
func (t *wtx) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st, nil
	}
	return t.tx.PrepareContext(ctx, query)
}

func (t *wtx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t *wtx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *wtx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

// reader runs queries on the read pool: the statement of its cache when
// query is one, else the text.
type reader struct {
	db     *sql.DB
	stmts  stmtCache
	missed func(query string)
}

// stmt returns the cached statement for query, or nil.
func (r *reader) stmt(query string) *sql.Stmt {
	st := r.stmts[query]
	if st == nil && r.missed != nil {
		r.missed(query)
	}
	return st
}

func (r *reader) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := r.stmt(query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return r.db.QueryRowContext(ctx, query, args...)
}

func (r *reader) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := r.stmt(query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return r.db.QueryContext(ctx, query, args...)
}

// migrate applies the embedded migrations in name order, each once.
func (s *Store) migrate(ctx context.Context) error {
	return sqlstore.Migrate(ctx, sqlBackend{s}, migrationFS)
}

// write runs fn in a write transaction (BEGIN IMMEDIATE) under the writer
// lock and commits it if fn returns nil. Journaled settlements are applied
// first, so fn sees every settlement that returned.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	busy := map[string]bool{}
	defer s.releaseBusy(busy)
	for attempt := 0; ; attempt++ {
		if err := s.applyPending(ctx); err != nil {
			return fmt.Errorf("sqlite: applying settlements: %w", err)
		}
		err := s.writeTx(ctx, busy, fn)
		if errors.Is(err, errRetry) && attempt < 100 {
			continue
		}
		return err
	}
}

// writeRelaxed is write for data a power loss may take back without
// harm: nonces (a lost challenge is asked for again; a lost consumption is
// made durable by the master key's commit after it, since the WAL is
// synced in order) and key usage times. With SyncFull its commit does not
// wait for an fsync: the writer connection runs it with
// synchronous=NORMAL, and the next synchronous commit syncs its frames
// with its own. Under a flood of challenges this keeps the fsyncs for the
// writes that need them.
func (s *Store) writeRelaxed(ctx context.Context, fn func(tx *wtx) error) error {
	if s.sync != SyncFull {
		return s.write(ctx, fn)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.applyPending(ctx); err != nil {
		return fmt.Errorf("sqlite: applying settlements: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	s.relaxed = true
	err := s.runTx(ctx, nil, fn)
	if _, serr := s.w.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous=FULL"); serr == nil {
		s.relaxed = false
	}
	return err
}

// releaseBusy ends write's marks on its accounts and wakes the
// settlements that wait for them.
func (s *Store) releaseBusy(busy map[string]bool) {
	if len(busy) == 0 {
		return
	}
	b := s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	for account := range busy {
		a := b.accts[account]
		a.busy--
		a.refs--
	}
	b.idle.Broadcast()
}

// writeLocked runs fn in a write transaction for a caller that holds
// s.wmu; fn must not change balances through the book (see write).
func (s *Store) writeLocked(ctx context.Context, fn func(tx *wtx) error) error {
	return s.writeTx(ctx, nil, fn)
}

// writeTx runs one write transaction; the caller holds s.wmu.
func (s *Store) writeTx(ctx context.Context, busy map[string]bool, fn func(tx *wtx) error) error {
	if s.relaxed {
		// A relaxed write could not restore synchronous=FULL: no
		// synchronous write runs until it is.
		if _, err := s.w.ExecContext(ctx, "PRAGMA synchronous=FULL"); err != nil {
			return fmt.Errorf("sqlite: restoring synchronous=FULL: %w", err)
		}
		s.relaxed = false
	}
	return s.runTx(ctx, busy, fn)
}

// runTx is writeTx without the check of the synchronous setting.
func (s *Store) runTx(ctx context.Context, busy map[string]bool, fn func(tx *wtx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	t := &wtx{tx: tx, stmts: s.ws, missed: s.missed, s: s, busy: busy}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		t.finish(false)
		return err
	}
	if err := tx.Commit(); err != nil {
		// Whether it committed is unknown: read the touched balances again.
		t.finish(false)
		t.resync(ctx)
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	t.finish(true)
	return nil
}

// read returns the pool for queries that do not write.
func (s *Store) read() *reader { return &s.rd }
