package sqliteprobe

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// The statements of storage/sqlite's PlaceHold and SettleHold (without an
// idempotency key, as the inference service places them), verbatim.
const (
	entryCols = `id, account, type, status, amount, balance_after, description, chain_id, tx_hash, model, input_tokens, output_tokens, idempotency_key, fingerprint, created_at`

	sqlHoldAccount = `UPDATE accounts SET held = held + ?1 WHERE address = ?2 AND balance - held >= ?1 RETURNING held`
	sqlHoldInsert  = `INSERT INTO holds (id, account, amount, status, created_at, expires_at, idempotency_key, fingerprint) VALUES (?, ?, ?, 'open', ?, ?, ?, ?)`
	sqlSettleHold  = `UPDATE holds SET status = 'settled', settled_amount = min(?2, amount), resolved_at = ?3
			 WHERE id = ?1 AND status = 'open' RETURNING account, amount`
	sqlSettleAccount = `UPDATE accounts SET held = held - ?1, balance = balance - ?2 WHERE address = ?3 RETURNING balance`
	sqlEntryInsert   = `INSERT INTO entries (` + entryCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlBalance       = `SELECT balance, held FROM accounts WHERE address = ?`
)

const (
	acct     = "0x0000000000000000000000000000000000000be0"
	holdAmt  = int64(5 * billing.Cent)
	settled  = int64(1234)
	holdFP   = "hold|0x0000000000000000000000000000000000000be0|5000000|0" // about as long as the store's
	entryDsc = "Chat: bench/fake (25 in / 64 out tokens)"
)

// probeDB is a fresh database opened like storage/sqlite.Open does.
type probeDB struct {
	path string
	w    *sql.DB // one connection, BEGIN IMMEDIATE
	r    *sql.DB // read pool
}

// openProbe creates a database file with storage/sqlite's DSN and
// migrations and funds acct.
func openProbe(b *testing.B) *probeDB {
	b.Helper()
	path := filepath.Join(b.TempDir(), "probe.db")
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	base := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		b.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := sql.Open("sqlite", base+"&mode=ro")
	if err != nil {
		b.Fatal(err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	b.Cleanup(func() { r.Close(); w.Close() })
	names, err := filepath.Glob("../../storage/sqlite/migrations/*.sql")
	if err != nil || len(names) == 0 {
		b.Fatalf("migrations not found (%v): run from the repository", err)
	}
	sort.Strings(names)
	for _, n := range names {
		body, err := os.ReadFile(n)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Exec(string(body)); err != nil {
			b.Fatalf("%s: %v", n, err)
		}
	}
	if _, err := w.Exec(`INSERT INTO accounts (address, balance, held) VALUES (?, ?, 0)`, acct, int64(1)<<50); err != nil {
		b.Fatal(err)
	}
	return &probeDB{path: path, w: w, r: r}
}

// sender sends one of the statements within tx, by index in stmts.
type sender interface {
	row(ctx context.Context, tx *sql.Tx, i int, args ...any) *sql.Row
	exec(ctx context.Context, tx *sql.Tx, i int, args ...any) error
}

var stmts = []string{sqlHoldAccount, sqlHoldInsert, sqlSettleHold, sqlSettleAccount, sqlEntryInsert}

const (
	iHoldAccount = iota
	iHoldInsert
	iSettleHold
	iSettleAccount
	iEntryInsert
)

// unprepared sends the SQL text each time, as storage/sqlite did before
// its statement cache: the driver parses and compiles every statement on
// every call.
type unprepared struct{}

func (unprepared) row(ctx context.Context, tx *sql.Tx, i int, args ...any) *sql.Row {
	return tx.QueryRowContext(ctx, stmts[i], args...)
}

func (unprepared) exec(ctx context.Context, tx *sql.Tx, i int, args ...any) error {
	_, err := tx.ExecContext(ctx, stmts[i], args...)
	return err
}

// prepared sends statements prepared once on the writer connection.
type prepared struct{ ps []*sql.Stmt }

func prepare(b *testing.B, db *sql.DB) prepared {
	var p prepared
	for _, s := range stmts {
		ps, err := db.Prepare(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ps.Close() })
		p.ps = append(p.ps, ps)
	}
	return p
}

func (p prepared) row(ctx context.Context, tx *sql.Tx, i int, args ...any) *sql.Row {
	return tx.StmtContext(ctx, p.ps[i]).QueryRowContext(ctx, args...)
}

func (p prepared) exec(ctx context.Context, tx *sql.Tx, i int, args ...any) error {
	_, err := tx.StmtContext(ctx, p.ps[i]).ExecContext(ctx, args...)
	return err
}

// placeHold runs PlaceHold's statements in tx.
func placeHold(ctx context.Context, tx *sql.Tx, s sender) (string, error) {
	var held int64
	if err := s.row(ctx, tx, iHoldAccount, holdAmt, acct).Scan(&held); err != nil {
		return "", err
	}
	id := uuid.NewString()
	now := time.Now()
	return id, s.exec(ctx, tx, iHoldInsert, id, acct, holdAmt, now.UnixMicro(), now.Add(15*time.Minute).UnixMicro(), nil, holdFP)
}

// settleHold runs SettleHold's statements in tx.
func settleHold(ctx context.Context, tx *sql.Tx, s sender, holdID string) error {
	now := time.Now().UnixMicro()
	var account string
	var amount, bal int64
	if err := s.row(ctx, tx, iSettleHold, holdID, settled, now).Scan(&account, &amount); err != nil {
		return err
	}
	debit := min(settled, amount)
	if err := s.row(ctx, tx, iSettleAccount, amount, debit, account).Scan(&bal); err != nil {
		return err
	}
	return s.exec(ctx, tx, iEntryInsert, uuid.NewString(), account, string(billing.ChatInference), string(billing.Completed),
		-debit, bal, entryDsc, int64(0), nil, "bench/fake", int64(25), int64(64), nil, nil, now)
}

// inTx runs fn in a write transaction.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	return tx.Commit()
}

// cycle is one hold and its settlement, in two transactions, as the
// gateway does per request.
func cycle(ctx context.Context, db *sql.DB, s sender) error {
	var id string
	if err := inTx(ctx, db, func(tx *sql.Tx) (err error) { id, err = placeHold(ctx, tx, s); return err }); err != nil {
		return err
	}
	return inTx(ctx, db, func(tx *sql.Tx) error { return settleHold(ctx, tx, s, id) })
}

// requestCtx is a cancellable context, like an HTTP request's: with it
// database/sql watches every transaction with a goroutine, and the driver
// installs its busy handler.
func requestCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkHoldSettle times one hold plus its settlement (two write
// transactions), by the store and by the same statements sent in other
// ways. Every sub-benchmark reports ns per hold+settle.
func BenchmarkHoldSettle(b *testing.B) {
	b.Run("store", func(b *testing.B) {
		// storage/sqlite itself (its statements prepared once), with a
		// request-like context.
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "store.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		ctx := requestCtx(b)
		if _, err := s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1 << 50}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.MicroCents(holdAmt), ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(settled), Type: billing.ChatInference,
				Description: entryDsc, Usage: &billing.Usage{Model: "bench/fake", InputTokens: 25, OutputTokens: 64}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("store-upto", func(b *testing.B) {
		// The same with the hold placed as inference.Service places it: a
		// "hold up to" (MinAmount set) for more than a request costs.
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "store.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		ctx := requestCtx(b)
		if _, err := s.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1 << 50}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.MicroCents(holdAmt), MinAmount: 5 * billing.Cent / 2, ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.SettleHold(ctx, billing.Settlement{HoldID: h.ID, Amount: billing.MicroCents(settled), Type: billing.ChatInference,
				Description: entryDsc, Usage: &billing.Usage{Model: "bench/fake", InputTokens: 25, OutputTokens: 64}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unprepared", func(b *testing.B) {
		db := openProbe(b)
		ctx := requestCtx(b)
		for b.Loop() {
			if err := cycle(ctx, db.w, unprepared{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unprepared-bgctx", func(b *testing.B) {
		db := openProbe(b)
		for b.Loop() {
			if err := cycle(context.Background(), db.w, unprepared{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("prepared", func(b *testing.B) {
		db := openProbe(b)
		p := prepare(b, db.w)
		ctx := requestCtx(b)
		for b.Loop() {
			if err := cycle(ctx, db.w, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{8, 32} {
		// Group commit: n requests' holds in one transaction, then their n
		// settlements in another, each operation in its own SAVEPOINT so
		// that one failing (insufficient funds) would not undo the others.
		b.Run(fmt.Sprintf("prepared-group%d", n), func(b *testing.B) {
			db := openProbe(b)
			p := prepare(b, db.w)
			sp := prepareSavepoints(b, db.w)
			ctx := requestCtx(b)
			ids := make([]string, n)
			for b.Loop() {
				err := inTx(ctx, db.w, func(tx *sql.Tx) error {
					for i := range ids {
						if err := sp.run(ctx, tx, func() (err error) { ids[i], err = placeHold(ctx, tx, p); return err }); err != nil {
							return err
						}
					}
					return nil
				})
				if err == nil {
					err = inTx(ctx, db.w, func(tx *sql.Tx) error {
						for _, id := range ids {
							if err := sp.run(ctx, tx, func() error { return settleHold(ctx, tx, p, id) }); err != nil {
								return err
							}
						}
						return nil
					})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/holdsettle")
		})
	}
}

// savepoints are the prepared statements of one SAVEPOINT scope.
type savepoints struct{ begin, rollback, release *sql.Stmt }

func prepareSavepoints(b *testing.B, db *sql.DB) savepoints {
	var sp savepoints
	for _, x := range []struct {
		s   **sql.Stmt
		sql string
	}{{&sp.begin, `SAVEPOINT op`}, {&sp.rollback, `ROLLBACK TO op`}, {&sp.release, `RELEASE op`}} {
		ps, err := db.Prepare(x.sql)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ps.Close() })
		*x.s = ps
	}
	return sp
}

// run runs fn inside SAVEPOINT op ... RELEASE op, rolling back to
// the savepoint if fn fails.
func (sp savepoints) run(ctx context.Context, tx *sql.Tx, fn func() error) error {
	if _, err := tx.StmtContext(ctx, sp.begin).ExecContext(ctx); err != nil {
		return err
	}
	if err := fn(); err != nil {
		_, rerr := tx.StmtContext(ctx, sp.rollback).ExecContext(ctx)
		return errors.Join(err, rerr)
	}
	_, err := tx.StmtContext(ctx, sp.release).ExecContext(ctx)
	return err
}

// BenchmarkServiceHold times how inference.Service reserves money for a
// request through storage/sqlite, with a request-like context:
// "balance+hold" is how it did before "hold up to" existed (a Balance read
// on the read pool, then an exact PlaceHold), "upto" is how it does now
// (one PlaceHold with MinAmount). The hold is released in the same
// iteration, so the account never runs low; that release is in both.
func BenchmarkServiceHold(b *testing.B) {
	open := func(b *testing.B) *sqlite.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "store.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		if _, err := s.Credit(context.Background(), billing.Posting{Account: acct, Type: billing.Purchase, Amount: 1 << 50}); err != nil {
			b.Fatal(err)
		}
		return s
	}
	b.Run("balance+hold", func(b *testing.B) {
		s := open(b)
		ctx := requestCtx(b)
		for b.Loop() {
			bal, err := s.Balance(ctx, acct)
			if err != nil {
				b.Fatal(err)
			}
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: min(billing.MicroCents(holdAmt), bal.Available()), ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.ReleaseHold(ctx, h.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("upto", func(b *testing.B) {
		s := open(b)
		ctx := requestCtx(b)
		for b.Loop() {
			h, err := s.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.MicroCents(holdAmt), MinAmount: 5 * billing.Cent / 2, ExpiresAt: time.Now().Add(time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.ReleaseHold(ctx, h.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParts times the parts of a hold+settle separately.
func BenchmarkParts(b *testing.B) {
	b.Run("empty-write-tx", func(b *testing.B) {
		// BEGIN IMMEDIATE; COMMIT: the floor of any write transaction.
		db := openProbe(b)
		ctx := requestCtx(b)
		for b.Loop() {
			if err := inTx(ctx, db.w, func(*sql.Tx) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one-page-write-tx", func(b *testing.B) {
		// A transaction that changes one row of accounts (one WAL frame),
		// with a prepared statement: the floor plus one page written.
		db := openProbe(b)
		ctx := requestCtx(b)
		ps, err := db.w.Prepare(`UPDATE accounts SET held = held WHERE address = ?`)
		if err != nil {
			b.Fatal(err)
		}
		defer ps.Close()
		for b.Loop() {
			if err := inTx(ctx, db.w, func(tx *sql.Tx) error {
				_, err := tx.StmtContext(ctx, ps).ExecContext(ctx, acct)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse-5-statements", func(b *testing.B) {
		// What preparing the five statements of a hold+settle costs,
		// which the unprepared path pays on every request.
		db := openProbe(b)
		ctx := requestCtx(b)
		conn, err := db.w.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		for b.Loop() {
			for _, s := range stmts {
				ps, err := conn.PrepareContext(ctx, s)
				if err != nil {
					b.Fatal(err)
				}
				ps.Close()
			}
		}
	})
	b.Run("balance-read", func(b *testing.B) {
		// What inference.Service read before every hold until it placed
		// "hold up to" requests.
		db := openProbe(b)
		ctx := requestCtx(b)
		for b.Loop() {
			var bal, held int64
			if err := db.r.QueryRowContext(ctx, sqlBalance, acct).Scan(&bal, &held); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wal-frames", func(b *testing.B) {
		// WAL frames (pages written) per hold+settle: with automatic
		// checkpoints off, the WAL only grows, by one frame of page
		// size + 24 bytes per page a commit writes. Each frame is two
		// pwrite calls (header, page).
		db := openProbe(b)
		ctx := requestCtx(b)
		var pageSize int64
		if err := db.w.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
			b.Fatal(err)
		}
		for range 200 { // grow the tables past their first pages
			if err := cycle(ctx, db.w, unprepared{}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := db.w.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatal(err)
		}
		if _, err := db.w.Exec(`PRAGMA wal_autocheckpoint = 0`); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := cycle(ctx, db.w, unprepared{}); err != nil {
				b.Fatal(err)
			}
		}
		st, err := os.Stat(db.path + "-wal")
		if err != nil {
			b.Fatal(err)
		}
		frames := float64(st.Size()-32) / float64(pageSize+24)
		b.ReportMetric(frames/float64(b.N), "frames/holdsettle")
		b.ReportMetric(float64(pageSize), "page-bytes")
	})
}
