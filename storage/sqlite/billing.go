package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// The billing store. Holds live in memory and settlements go through a
// journal (see book and SettleHold); every other write runs in one BEGIN
// IMMEDIATE transaction under the writer lock. The money invariants are
// decided by the book (which counts the holds) and still written into the
// statements: debits are conditional updates on the available balance,
// the accounts table CHECKs it, and unique indexes make idempotency keys,
// payments and subscription periods apply once.

var _ billing.Store = (*Store)(nil)

// The hot statements, prepared once (see stmtCache). Their text is what
// runs: keep it as it is, or measure again.
const (
	sqlEntryInsert   = `INSERT INTO entries (` + billEntryCols + `) VALUES ` + sqlEntryRow
	sqlEntryRow      = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlEntryByKey    = `SELECT ` + billEntryCols + ` FROM entries WHERE account = ? AND idempotency_key = ?`
	sqlPaymentCount  = `SELECT count(*) FROM entries WHERE chain_id = ? AND tx_hash = ?`
	sqlDebit         = `UPDATE accounts SET balance = balance - ?1 WHERE address = ?2 AND balance - held >= ?1 RETURNING balance`
	sqlCreditBalance = `SELECT balance FROM accounts WHERE address = ?`
	sqlCreditUpsert  = `INSERT INTO accounts (address, balance, held) VALUES (?1, ?2, 0)
			 ON CONFLICT (address) DO UPDATE SET balance = balance + ?2 RETURNING balance`
	sqlSettle        = `UPDATE accounts SET balance = balance - ?1 WHERE address = ?2 RETURNING balance`
	sqlReleaseOld    = `UPDATE holds SET status = 'released', resolved_at = ? WHERE status = 'open'`
	sqlReleaseOldAcc = `UPDATE accounts SET held = 0 WHERE held <> 0`
	sqlBalance       = `SELECT balance, held FROM accounts WHERE address = ?`
)

// sqlEntryInsertN returns the statement that inserts entryRowsN entries.
func sqlEntryInsertN() string {
	return sqlEntryInsert + strings.Repeat(`, `+sqlEntryRow, entryRowsN-1)
}

// billQuerier is a transaction or the read pool.
type billQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type billScanner interface{ Scan(dest ...any) error }

// billErr passes coded errors through and labels the others.
func billErr(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

func billNullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func billNullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func billMicroTime(us int64) time.Time { return time.UnixMicro(us).UTC() }

const billEntryCols = `id, account, type, status, amount, balance_after, description, chain_id, tx_hash, model, input_tokens, output_tokens, idempotency_key, fingerprint, created_at`

// billScanEntry scans billEntryCols; it also returns the fingerprint.
func billScanEntry(r billScanner) (billing.Entry, string, error) {
	var (
		e                               billing.Entry
		typ, status                     string
		amount, after, chain, created   int64
		in, out                         int64
		txHash, model, key, fingerprint sql.NullString
	)
	if err := r.Scan(&e.ID, &e.Account, &typ, &status, &amount, &after, &e.Description, &chain, &txHash, &model, &in, &out, &key, &fingerprint, &created); err != nil {
		return billing.Entry{}, "", err
	}
	e.Type, e.Status = billing.TxType(typ), billing.TxStatus(status)
	e.Amount, e.BalanceAfter = billing.MicroCents(amount), billing.MicroCents(after)
	e.ChainID, e.TxHash = uint64(chain), txHash.String
	if model.Valid {
		e.Usage = &billing.Usage{Model: model.String, InputTokens: in, OutputTokens: out}
	}
	e.IdempotencyKey = key.String
	e.CreatedAt = billMicroTime(created)
	return e, fingerprint.String, nil
}

// billInsertEntry writes e (its ID set) with fingerprint fp.
func billInsertEntry(ctx context.Context, tx *wtx, e billing.Entry, fp string) error {
	_, err := tx.ExecContext(ctx, sqlEntryInsert, billEntryArgs(nil, e, fp)...)
	if billIsUnique(err) && e.TxHash != "" {
		return billrules.AlreadyProcessed()
	}
	return err
}

// billEntryArgs appends the arguments of sqlEntryInsert for e.
func billEntryArgs(args []any, e billing.Entry, fp string) []any {
	var model any
	var in, out int64
	if e.Usage != nil {
		model, in, out = e.Usage.Model, e.Usage.InputTokens, e.Usage.OutputTokens
	}
	return append(args, e.ID, e.Account, string(e.Type), string(e.Status), int64(e.Amount), int64(e.BalanceAfter), e.Description,
		int64(e.ChainID), billNullString(e.TxHash), model, in, out, billNullString(e.IdempotencyKey), billNullString(fp), e.CreatedAt.UnixMicro())
}

// billIsUnique reports whether err is a violated unique constraint.
func billIsUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// billEntryFor builds the entry a posting writes.
func billEntryFor(p billing.Posting, amount, after billing.MicroCents) billing.Entry {
	return billing.Entry{
		ID: billrules.NewID(), Account: p.Account, Type: p.Type, Status: billing.Completed,
		Amount: amount, BalanceAfter: after, Description: p.Description,
		ChainID: p.ChainID, TxHash: p.TxHash, Usage: p.Usage,
		IdempotencyKey: p.IdempotencyKey, CreatedAt: p.At,
	}
}

// billKeyed returns the entry stored under the account's idempotency key.
func billKeyed(ctx context.Context, q billQuerier, account, key string) (billing.Entry, string, bool, error) {
	if key == "" {
		return billing.Entry{}, "", false, nil
	}
	e, fp, err := billScanEntry(q.QueryRowContext(ctx, sqlEntryByKey, account, key))
	if errors.Is(err, sql.ErrNoRows) {
		return billing.Entry{}, "", false, nil
	}
	return e, fp, err == nil, err
}

// billReplay returns the earlier result of a keyed posting: found reports
// whether the key was used, err is a Conflict if by a different request.
func billReplay(ctx context.Context, q billQuerier, p billing.Posting, fp string) (billing.Entry, bool, error) {
	prev, prevFP, found, err := billKeyed(ctx, q, p.Account, p.IdempotencyKey)
	if err != nil || !found {
		return billing.Entry{}, false, err
	}
	if prevFP != fp {
		return billing.Entry{}, true, billrules.KeyConflict()
	}
	return prev, true, nil
}

// billCheckPayment refuses an on-chain payment already credited.
func billCheckPayment(ctx context.Context, q billQuerier, p billing.Posting) error {
	if p.TxHash == "" {
		return nil
	}
	var n int
	err := q.QueryRowContext(ctx, sqlPaymentCount, int64(p.ChainID), p.TxHash).Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return billrules.AlreadyProcessed()
	}
	return nil
}

// billDebitTx subtracts p.Amount if the available balance covers it and
// writes entry e (ID set by the caller).
func billDebitTx(ctx context.Context, tx *wtx, p billing.Posting, id, fp string) (billing.Entry, error) {
	if err := billCheckPayment(ctx, tx, p); err != nil {
		return billing.Entry{}, err
	}
	// The book decides, counting the holds that live only in memory; the
	// statement checks again against the database.
	if err := tx.reserve(ctx, p.Account, int64(p.Amount)); err != nil {
		return billing.Entry{}, err
	}
	var bal int64
	err := tx.QueryRowContext(ctx, sqlDebit,
		int64(p.Amount), p.Account).Scan(&bal)
	if errors.Is(err, sql.ErrNoRows) {
		return billing.Entry{}, billrules.Insufficient()
	}
	if err != nil {
		return billing.Entry{}, err
	}
	tx.delta(p.Account, -int64(p.Amount))
	e := billEntryFor(p, -p.Amount, billing.MicroCents(bal))
	e.ID = id
	return e, billInsertEntry(ctx, tx, e, fp)
}

// Credit adds p.Amount to the account, creating it if needed. A retry
// under the same idempotency key returns the first entry; a second credit
// of one (chain ID, tx hash) is fault.Conflict.
func (s *Store) Credit(ctx context.Context, p billing.Posting) (billing.Entry, error) {
	if err := billrules.Credit(&p); err != nil {
		return billing.Entry{}, err
	}
	fp := billrules.PostingFP("credit", p)
	var out billing.Entry
	err := s.write(ctx, func(tx *wtx) error {
		prev, found, err := billReplay(ctx, tx, p, fp)
		if found || err != nil {
			out = prev
			return err
		}
		if err := billCheckPayment(ctx, tx, p); err != nil {
			return err
		}
		var bal int64
		err = tx.QueryRowContext(ctx, sqlCreditBalance, p.Account).Scan(&bal)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := tx.touch(ctx, p.Account); err != nil {
			return err
		}
		if bal > math.MaxInt64-int64(p.Amount) {
			return fault.New(fault.Invalid, "amount out of range")
		}
		if err := tx.QueryRowContext(ctx, sqlCreditUpsert,
			p.Account, int64(p.Amount)).Scan(&bal); err != nil {
			return err
		}
		out = billEntryFor(p, p.Amount, billing.MicroCents(bal))
		if err := billInsertEntry(ctx, tx, out, fp); err != nil {
			return err
		}
		tx.delta(p.Account, int64(p.Amount))
		return nil
	})
	if err != nil {
		return billing.Entry{}, billErr("credit", err)
	}
	return out, nil
}

// Debit subtracts p.Amount if the available balance covers it, else
// returns fault.InsufficientFunds.
func (s *Store) Debit(ctx context.Context, p billing.Posting) (billing.Entry, error) {
	if err := billrules.Debit(&p); err != nil {
		return billing.Entry{}, err
	}
	fp := billrules.PostingFP("debit", p)
	var out billing.Entry
	err := s.write(ctx, func(tx *wtx) error {
		prev, found, err := billReplay(ctx, tx, p, fp)
		if found || err != nil {
			out = prev
			return err
		}
		out, err = billDebitTx(ctx, tx, p, billrules.NewID(), fp)
		return err
	})
	if err != nil {
		return billing.Entry{}, billErr("debit", err)
	}
	return out, nil
}

// PlaceHold reserves r.Amount if the available balance covers it, else
// returns fault.InsufficientFunds. With r.MinAmount > 0 it reserves
// min(r.Amount, available) if that is at least r.MinAmount. Holds live in
// memory (see book): nothing is written.
func (s *Store) PlaceHold(ctx context.Context, r billing.HoldRequest) (billing.Hold, error) {
	if err := billrules.HoldRequest(&r); err != nil {
		return billing.Hold{}, err
	}
	fp := billrules.HoldFP(r)
	b := s.book
	a, err := s.lockedAcct(ctx, r.Account)
	if err != nil {
		return billing.Hold{}, billErr("place hold", err)
	}
	defer b.mu.Unlock()
	if r.IdempotencyKey != "" {
		if id, ok := b.keys[bookKey{r.Account, r.IdempotencyKey}]; ok {
			h := b.holds[id]
			if h.fp != fp {
				return billing.Hold{}, billrules.KeyConflict()
			}
			return h.h, nil
		}
	}
	held, err := billrules.HoldAmount(r, billing.MicroCents(a.balance-a.held))
	if err != nil {
		return billing.Hold{}, err
	}
	amount := int64(held)
	a.held += amount
	a.refs++
	h := &bookHold{
		h:  billing.Hold{ID: billrules.NewID(), Account: r.Account, Amount: billing.MicroCents(amount), CreatedAt: r.At, ExpiresAt: r.ExpiresAt},
		fp: fp, key: r.IdempotencyKey,
	}
	b.holds[h.h.ID] = h
	if h.key != "" {
		b.keys[bookKey{r.Account, h.key}] = h.h.ID
	}
	return h.h, nil
}

// ReleaseHold releases an open hold without a debit; fault.NotFound if it
// is not open.
func (s *Store) ReleaseHold(_ context.Context, holdID string) error {
	b := s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.holds[holdID]
	if h == nil || h.status != holdOpen {
		return billrules.HoldNotFound()
	}
	h.status = holdResolved
	b.accts[h.h.Account].release(int64(h.h.Amount))
	return nil
}

// ReleaseExpiredHolds releases every open hold that expired at or before
// now, and forgets resolved holds that expired.
func (s *Store) ReleaseExpiredHolds(_ context.Context, now time.Time) (int, error) {
	b := s.book
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, h := range b.holds {
		if h.status == holdOpen && !h.h.ExpiresAt.After(now) {
			h.status = holdResolved
			b.accts[h.h.Account].release(int64(h.h.Amount))
			n++
		}
	}
	b.pruneResolved(now)
	return n, nil
}

// Balance returns the account's balance; zero for an unknown account.
// Held counts the open holds (and debits being written).
func (s *Store) Balance(ctx context.Context, account string) (billing.Balance, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return billing.Balance{}, err
	}
	b := s.book
	b.mu.Lock()
	if a := b.accts[account]; a != nil {
		defer b.mu.Unlock()
		return billing.Balance{Total: billing.MicroCents(a.balance), Held: billing.MicroCents(a.held)}, nil
	}
	b.mu.Unlock()
	// Not cached, so it has no hold: the database's balance is the answer.
	var bal, held int64
	err = s.read().QueryRowContext(ctx, sqlBalance, account).Scan(&bal, &held)
	if errors.Is(err, sql.ErrNoRows) {
		return billing.Balance{}, nil
	}
	if err != nil {
		return billing.Balance{}, billErr("balance", err)
	}
	return billing.Balance{Total: billing.MicroCents(bal), Held: billing.MicroCents(held)}, nil
}

// Entries returns a page of the account's entries, newest first in
// ledger order (see billing.Ledger.Entries), once the journaled
// settlements are in the table.
func (s *Store) Entries(ctx context.Context, account string, f billing.EntryFilter, p page.Request) (page.Page[billing.Entry], error) {
	if err := s.flushSettlements(ctx); err != nil {
		return page.Page[billing.Entry]{}, billErr("entries", err)
	}
	return sqlstore.Entries(ctx, readQuerier{s.read()}, sqliteDialect, account, f, p)
}

// sqlHasCompletedPurchase matches the partial index
// entries_completed_purchase: its type and status are literals for that.
const sqlHasCompletedPurchase = `SELECT EXISTS (SELECT 1 FROM entries WHERE account = ? AND type = 'Purchase' AND status = 'Completed')`

// HasCompletedPurchase reports whether the account has a completed
// Purchase entry.
func (s *Store) HasCompletedPurchase(ctx context.Context, account string) (bool, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return false, err
	}
	var ok bool
	err = s.read().QueryRowContext(ctx,
		sqlHasCompletedPurchase, account).Scan(&ok)
	return ok, billErr("has completed purchase", err)
}
