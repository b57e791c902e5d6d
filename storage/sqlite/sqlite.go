// Package sqlite is the embedded SQLite store, Perceptron's default backend.
//
// It uses the pure Go driver modernc.org/sqlite (no cgo), WAL journaling and
// a busy timeout. Writes go through a single connection whose transactions
// begin with BEGIN IMMEDIATE, so a write transaction holds SQLite's write
// lock from its first statement and never fails half-way with SQLITE_BUSY;
// reads use a separate pool and run concurrently with the writer. Several
// processes may open one file, but SQLite serialises their writes: for more
// than one machine use the postgres package.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is a SQLite database holding every Perceptron table.
type Store struct {
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
}

// Open opens (creating if needed) the database file at path and applies
// any pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.HasPrefix(path, ":memory:") {
		return nil, errors.New("sqlite: a file path is required (use the memory store for an in-memory database)")
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)",
		// Checkpoints run in the background (checkpointLoop), not in the
		// commit of whichever write crosses the threshold; the WAL file is
		// truncated back to this size after a checkpoint.
		"wal_autocheckpoint(0)", "journal_size_limit(67108864)"} {
		q.Add("_pragma", p)
	}
	base := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", base+"&mode=ro")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	r.SetConnMaxIdleTime(0)
	s := &Store{w: w, r: r, rd: reader{db: r}}
	if err := s.migrate(ctx); err != nil {
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
	go s.checkpointLoop(ckCtx, checkpointEvery)
	return s, nil
}

// checkpointEvery is how often the background checkpointer runs.
const checkpointEvery = 250 * time.Millisecond

// checkpointLoop copies the WAL into the database file every interval, on
// a connection of its own. A PASSIVE checkpoint never blocks writers or
// readers; with SQLite's automatic checkpoint turned off, this is what
// keeps the WAL short, and request commits never stall on a checkpoint's
// fsync. A last passive checkpoint runs when the store closes.
func (s *Store) checkpointLoop(ctx context.Context, every time.Duration) {
	defer close(s.ckDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_, _ = s.ck.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
			return
		case <-t.C:
			_, _ = s.ck.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

// Close closes the database.
func (s *Store) Close() error {
	var ckErr error
	if s.stopCk != nil {
		s.stopCk()
		<-s.ckDone
		ckErr = s.ck.Close()
	}
	return errors.Join(s.ws.close(), s.rd.stmts.close(), s.r.Close(), s.w.Close(), ckErr)
}

// writeStmts are the statements prepared on the writer: those of holds,
// settlements, releases, debits and credits, and the batched touch of
// client keys.
func writeStmts() []string {
	return []string{
		sqlHoldByKey, sqlHoldReserve, sqlHoldInsert, sqlHoldUpTo,
		sqlSettleHold, sqlSettleAccount, sqlEntryInsert,
		sqlReleaseHold, sqlReleaseHeld,
		sqlDebit, sqlEntryByKey, sqlPaymentCount, sqlCreditBalance, sqlCreditUpsert,
		sqlTouchClientKey,
	}
}

// readStmts are the statements prepared on the read pool: those every
// API request runs (key lookups) and the balance.
func readStmts() []string { return []string{sqlClientKeyByHash, sqlMasterKeyOwner, sqlBalance} }

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
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	return s.write(ctx, func(tx *wtx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)`); err != nil {
			return err
		}
		for _, name := range names {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE name = ?`, name).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			body, err := migrationFS.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("sqlite: migration %s: %w", name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES (?)`, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// write runs fn in a write transaction (BEGIN IMMEDIATE) and commits it if
// fn returns nil.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := fn(&wtx{tx: tx, stmts: s.ws, missed: s.missed}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// read returns the pool for queries that do not write.
func (s *Store) read() *reader { return &s.rd }
