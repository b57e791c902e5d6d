package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
	"github.com/perceptron-cloud/perceptron/storage/internal/sqlstore"
)

// The billing store. Several server processes may share the database, so
// every invariant is enforced by the statements of one Read Committed
// transaction: debits and holds are conditional updates on the available
// balance (re-checked by PostgreSQL after waiting for a concurrent writer
// of the row), the accounts table CHECKs it, rows are locked in a fixed
// order (a subscription or hold before its account; accounts by address),
// and unique indexes make idempotency keys, payments and subscription
// periods apply once. A transaction that loses a unique-index race rolls
// back and runs again: its first reads then see the winner's row and
// return the stored result or the documented conflict.

var _ billing.Store = (*Store)(nil)

// billQuerier is a transaction or the pool.
type billQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// billTx runs fn in a transaction, running it again (a few times) when it
// loses a unique-index race.
func (s *Store) billTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		err = s.tx(ctx, fn)
		if !isUniqueViolation(err) {
			break
		}
	}
	return billErr(op, err)
}

// billErr passes coded errors through, maps constraint violations left
// after billTx's retries to their conflicts, and labels the rest.
func billErr(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505" && pe.ConstraintName == "entries_chain_tx":
			return billrules.AlreadyProcessed()
		case pe.Code == "23505" && pe.ConstraintName == "subscriptions_active":
			return billrules.SubExists()
		case pe.Code == "23505" && pe.ConstraintName == "subscription_periods_pkey":
			return billrules.PeriodConflict()
		case pe.Code == "22003":
			return fault.Wrap(err, fault.Invalid, "amount out of range")
		}
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

func billNullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func billMicroTime(us int64) time.Time { return time.UnixMicro(us).UTC() }

func billStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

const billEntryCols = `id, account, type, status, amount, balance_after, description, chain_id, tx_hash, model, input_tokens, output_tokens, idempotency_key, fingerprint, created_at`

// billScanEntry scans billEntryCols; it also returns the fingerprint.
func billScanEntry(r pgx.Row) (billing.Entry, string, error) {
	var (
		e                               billing.Entry
		typ, status                     string
		amount, after, chain, created   int64
		in, out                         int64
		txHash, model, key, fingerprint *string
	)
	if err := r.Scan(&e.ID, &e.Account, &typ, &status, &amount, &after, &e.Description, &chain, &txHash, &model, &in, &out, &key, &fingerprint, &created); err != nil {
		return billing.Entry{}, "", err
	}
	e.Type, e.Status = billing.TxType(typ), billing.TxStatus(status)
	e.Amount, e.BalanceAfter = billing.MicroCents(amount), billing.MicroCents(after)
	e.ChainID, e.TxHash = uint64(chain), billStr(txHash)
	if model != nil {
		e.Usage = &billing.Usage{Model: *model, InputTokens: in, OutputTokens: out}
	}
	e.IdempotencyKey = billStr(key)
	e.CreatedAt = billMicroTime(created)
	return e, billStr(fingerprint), nil
}

// billInsertEntry writes e (its ID set) with fingerprint fp.
func billInsertEntry(ctx context.Context, tx pgx.Tx, e billing.Entry, fp string) error {
	var model any
	var in, out int64
	if e.Usage != nil {
		model, in, out = e.Usage.Model, e.Usage.InputTokens, e.Usage.OutputTokens
	}
	_, err := tx.Exec(ctx, `INSERT INTO entries (`+billEntryCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		e.ID, e.Account, string(e.Type), string(e.Status), int64(e.Amount), int64(e.BalanceAfter), e.Description,
		int64(e.ChainID), billNullString(e.TxHash), model, in, out, billNullString(e.IdempotencyKey), billNullString(fp), e.CreatedAt.UnixMicro())
	return err
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
	e, fp, err := billScanEntry(q.QueryRow(ctx, `SELECT `+billEntryCols+` FROM entries WHERE account = $1 AND idempotency_key = $2`, account, key))
	if errors.Is(err, pgx.ErrNoRows) {
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

// billCheckPayment refuses an on-chain payment already credited. The
// unique index decides races; this makes the common case cheap.
func billCheckPayment(ctx context.Context, q billQuerier, p billing.Posting) error {
	if p.TxHash == "" {
		return nil
	}
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM entries WHERE chain_id = $1 AND tx_hash = $2)`, int64(p.ChainID), p.TxHash).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return billrules.AlreadyProcessed()
	}
	return nil
}

// billDebitTx subtracts p.Amount if the available balance covers it and
// writes its entry with the given ID.
func billDebitTx(ctx context.Context, tx pgx.Tx, p billing.Posting, id, fp string) (billing.Entry, error) {
	if err := billCheckPayment(ctx, tx, p); err != nil {
		return billing.Entry{}, err
	}
	var bal int64
	err := tx.QueryRow(ctx,
		`UPDATE accounts SET balance = balance - $1 WHERE address = $2 AND balance - held >= $1 RETURNING balance`,
		int64(p.Amount), p.Account).Scan(&bal)
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Entry{}, billrules.Insufficient()
	}
	if err != nil {
		return billing.Entry{}, err
	}
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
	err := s.billTx(ctx, "credit", func(tx pgx.Tx) error {
		prev, found, err := billReplay(ctx, tx, p, fp)
		if found || err != nil {
			out = prev
			return err
		}
		if err := billCheckPayment(ctx, tx, p); err != nil {
			return err
		}
		var bal int64
		if err := tx.QueryRow(ctx,
			`INSERT INTO accounts (address, balance, held) VALUES ($1, $2, 0)
			 ON CONFLICT (address) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance RETURNING balance`,
			p.Account, int64(p.Amount)).Scan(&bal); err != nil {
			return err
		}
		out = billEntryFor(p, p.Amount, billing.MicroCents(bal))
		return billInsertEntry(ctx, tx, out, fp)
	})
	if err != nil {
		return billing.Entry{}, err
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
	err := s.billTx(ctx, "debit", func(tx pgx.Tx) error {
		prev, found, err := billReplay(ctx, tx, p, fp)
		if found || err != nil {
			out = prev
			return err
		}
		out, err = billDebitTx(ctx, tx, p, billrules.NewID(), fp)
		if errors.Is(err, fault.InsufficientFunds) && p.IdempotencyKey != "" {
			// A concurrent duplicate may have committed the same keyed
			// debit while this one waited on the account row and then
			// found the money gone: Read Committed lets the replay see it.
			if prev, found, rerr := billReplay(ctx, tx, p, fp); found || rerr != nil {
				out = prev
				return rerr
			}
		}
		return err
	})
	if err != nil {
		return billing.Entry{}, err
	}
	return out, nil
}

// PlaceHold reserves r.Amount if the available balance covers it, else
// returns fault.InsufficientFunds. With r.MinAmount > 0 it reserves
// min(r.Amount, available) if that is at least r.MinAmount, the amount
// computed by the statement that records the hold.
func (s *Store) PlaceHold(ctx context.Context, r billing.HoldRequest) (billing.Hold, error) {
	if err := billrules.HoldRequest(&r); err != nil {
		return billing.Hold{}, err
	}
	fp := billrules.HoldFP(r)
	if r.IdempotencyKey == "" {
		return s.placeHoldOnce(ctx, r, fp)
	}
	var out billing.Hold
	err := s.billTx(ctx, "place hold", func(tx pgx.Tx) error {
		// replay looks the idempotency key up: found reports whether it was
		// used, and out is then its hold (err a Conflict if the key was used
		// for a different request).
		replay := func() (found bool, err error) {
			if r.IdempotencyKey == "" {
				return false, nil
			}
			var (
				h                        billing.Hold
				amount, created, expires int64
				prevFP                   *string
			)
			err = tx.QueryRow(ctx,
				`SELECT id, account, amount, created_at, expires_at, fingerprint FROM holds WHERE account = $1 AND idempotency_key = $2`,
				r.Account, r.IdempotencyKey).Scan(&h.ID, &h.Account, &amount, &created, &expires, &prevFP)
			switch {
			case err == nil:
				if billStr(prevFP) != fp {
					return true, billrules.KeyConflict()
				}
				h.Amount, h.CreatedAt, h.ExpiresAt = billing.MicroCents(amount), billMicroTime(created), billMicroTime(expires)
				out = h
				return true, nil
			case errors.Is(err, pgx.ErrNoRows):
				return false, nil
			}
			return false, err
		}
		if found, err := replay(); found || err != nil {
			return err
		}
		// insufficient refuses the hold, unless a concurrent request under
		// the same key placed it meanwhile: that request committed before
		// this one's first conditional statement, which waited for its lock
		// on the account and found the money gone; the replay, a later
		// statement, sees it. Only for a statement that wrote nothing.
		insufficient := func() error {
			if found, err := replay(); found || err != nil {
				return err
			}
			return billrules.Insufficient()
		}
		// reserve adds amount to the account's held money if the available
		// balance covers it (ok false if not).
		reserve := func(amount billing.MicroCents) (ok bool, err error) {
			var held int64
			err = tx.QueryRow(ctx,
				`UPDATE accounts SET held = held + $1 WHERE address = $2 AND balance - held >= $1 RETURNING held`,
				int64(amount), r.Account).Scan(&held)
			if errors.Is(err, pgx.ErrNoRows) {
				return false, nil
			}
			return err == nil, err
		}
		out = billing.Hold{ID: billrules.NewID(), Account: r.Account, Amount: r.Amount, CreatedAt: r.At, ExpiresAt: r.ExpiresAt}
		if r.MinAmount > 0 {
			// Hold up to r.Amount: one conditional statement locks the
			// account row (FOR UPDATE: after waiting for a concurrent
			// writer it re-checks the condition and computes the amount on
			// the row's newest version), computes the amount from it and
			// records the hold; the account update then reserves exactly
			// that amount, still conditionally, under the lock.
			var amount int64
			err := tx.QueryRow(ctx,
				`INSERT INTO holds (id, account, amount, status, created_at, expires_at, idempotency_key, fingerprint)
				 SELECT $1, address, least($3, balance - held), 'open', $5, $6, $7, $8 FROM accounts WHERE address = $2 AND balance - held >= $4
				 FOR UPDATE
				 RETURNING amount`,
				out.ID, out.Account, int64(r.Amount), int64(r.MinAmount), out.CreatedAt.UnixMicro(), out.ExpiresAt.UnixMicro(),
				billNullString(r.IdempotencyKey), fp).Scan(&amount)
			if errors.Is(err, pgx.ErrNoRows) {
				return insufficient()
			}
			if err != nil {
				return err
			}
			out.Amount = billing.MicroCents(amount)
			// The account row is locked and was just read: this cannot
			// fail, and if it did the whole transaction rolls back.
			ok, err := reserve(out.Amount)
			if err == nil && !ok {
				err = billrules.Insufficient()
			}
			return err
		}
		ok, err := reserve(out.Amount)
		if err != nil {
			return err
		}
		if !ok {
			return insufficient()
		}
		_, err = tx.Exec(ctx,
			`INSERT INTO holds (id, account, amount, status, created_at, expires_at, idempotency_key, fingerprint) VALUES ($1, $2, $3, 'open', $4, $5, $6, $7)`,
			out.ID, out.Account, int64(out.Amount), out.CreatedAt.UnixMicro(), out.ExpiresAt.UnixMicro(), billNullString(r.IdempotencyKey), fp)
		return err
	})
	if err != nil {
		return billing.Hold{}, err
	}
	return out, nil
}

// The hold and settlement statements without an idempotency key: each is
// one statement, run as its own implicit transaction, so the account's
// row is locked from that statement to its commit and no longer. One
// wallet's concurrent requests queue on that row (BENCHMARKS.md §10); a
// transaction of several statements would hold it over several round
// trips. In Read Committed, a statement that waited for the row's lock
// re-reads the row's newest version before it re-checks its conditions
// and computes its updates, so the available balance is never
// overdrawn. Data-modifying WITH queries all run to completion, whether
// or not the main query reads them; an error in any of them (a CHECK)
// rolls back the whole statement. The settlement and the release find the
// hold's account through the hold: that row always exists, since a hold is
// placed only by reserving on it and accounts are never deleted.
const (
	sqlHoldOnce = `WITH a AS (
		UPDATE accounts SET held = held + $3 WHERE address = $2 AND balance - held >= $3 RETURNING address
	)
	INSERT INTO holds (id, account, amount, status, created_at, expires_at, idempotency_key, fingerprint)
	SELECT $1, address, $3, 'open', $4, $5, NULL, $6 FROM a
	RETURNING amount`
	// The up-to hold locks the row first (FOR UPDATE), so that the amount
	// is computed from its newest version, then reserves exactly that.
	sqlHoldUpToOnce = `WITH cur AS (
		SELECT address, least($3::bigint, balance - held) AS amt FROM accounts
		WHERE address = $2 AND balance - held >= $4 FOR UPDATE
	), a AS (
		UPDATE accounts SET held = accounts.held + cur.amt FROM cur
		WHERE accounts.address = cur.address AND accounts.balance - accounts.held >= cur.amt
		RETURNING cur.amt
	)
	INSERT INTO holds (id, account, amount, status, created_at, expires_at, idempotency_key, fingerprint)
	SELECT $1, $2, amt, 'open', $5, $6, NULL, $7 FROM a
	RETURNING amount`
	sqlSettleOnce = `WITH h AS (
		UPDATE holds SET status = 'settled', settled_amount = LEAST($2::bigint, amount), resolved_at = $3
		WHERE id = $1 AND status = 'open'
		RETURNING account, amount, LEAST($2::bigint, amount) AS settled
	), a AS (
		UPDATE accounts SET held = accounts.held - h.amount, balance = accounts.balance - h.settled
		FROM h WHERE accounts.address = h.account
		RETURNING accounts.address, accounts.balance, h.settled
	), e AS (
		INSERT INTO entries (` + billEntryCols + `)
		SELECT $4, a.address, $5, $6, -a.settled, a.balance, $7, 0, NULL, $8, $9, $10, NULL, NULL, $3 FROM a
		RETURNING id
	)
	SELECT a.address, a.settled, a.balance FROM a`
	// A settlement that may exceed its hold (Settlement.ExceedHold): the
	// excess comes from the account's available balance, so the amount
	// depends on the account's row. cur locks that row (FOR UPDATE) and
	// computes the amount from its newest version, as sqlHoldUpToOnce
	// does; the update then debits exactly that, and the CHECK on the
	// available balance holds since the amount is at most the hold plus
	// what was available. The hold's settled_amount stays NULL: its
	// entry says what was debited.
	sqlSettleBeyondOnce = `WITH h AS (
		UPDATE holds SET status = 'settled', resolved_at = $3
		WHERE id = $1 AND status = 'open'
		RETURNING account, amount
	), cur AS (
		SELECT accounts.address, h.amount,
			LEAST($2::bigint, h.amount + GREATEST(accounts.balance - accounts.held, 0)) AS settled
		FROM accounts JOIN h ON accounts.address = h.account
		FOR UPDATE OF accounts
	), a AS (
		UPDATE accounts SET held = accounts.held - cur.amount, balance = accounts.balance - cur.settled
		FROM cur WHERE accounts.address = cur.address
		RETURNING accounts.address, accounts.balance, cur.settled
	), e AS (
		INSERT INTO entries (` + billEntryCols + `)
		SELECT $4, a.address, $5, $6, -a.settled, a.balance, $7, 0, NULL, $8, $9, $10, NULL, NULL, $3 FROM a
		RETURNING id
	)
	SELECT a.address, a.settled, a.balance FROM a`
)

// placeHoldOnce is PlaceHold for a request without an idempotency key, in
// one statement (see sqlHoldOnce).
func (s *Store) placeHoldOnce(ctx context.Context, r billing.HoldRequest, fp string) (billing.Hold, error) {
	out := billing.Hold{ID: billrules.NewID(), Account: r.Account, Amount: r.Amount, CreatedAt: r.At, ExpiresAt: r.ExpiresAt}
	var amount int64
	err := s.retry(ctx, func() error {
		if r.MinAmount > 0 {
			return s.pool.QueryRow(ctx, sqlHoldUpToOnce, out.ID, out.Account, int64(r.Amount), int64(r.MinAmount),
				out.CreatedAt.UnixMicro(), out.ExpiresAt.UnixMicro(), fp).Scan(&amount)
		}
		return s.pool.QueryRow(ctx, sqlHoldOnce, out.ID, out.Account, int64(r.Amount),
			out.CreatedAt.UnixMicro(), out.ExpiresAt.UnixMicro(), fp).Scan(&amount)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Hold{}, billrules.Insufficient()
	}
	if err != nil {
		return billing.Hold{}, billErr("place hold", err)
	}
	out.Amount = billing.MicroCents(amount)
	return out, nil
}

// SettleHold debits st.Amount (clamped to the hold, or with
// st.ExceedHold to the hold plus the available balance), releases the
// rest of the hold and writes one entry, in one statement (see
// sqlSettleOnce and sqlSettleBeyondOnce). A hold that is
// not open is fault.NotFound.
func (s *Store) SettleHold(ctx context.Context, st billing.Settlement) (billing.Entry, error) {
	if err := billrules.Settlement(&st); err != nil {
		return billing.Entry{}, err
	}
	e := billEntryFor(billing.Posting{Type: st.Type, Description: st.Description, Usage: st.Usage, At: st.At}, 0, 0)
	var model any
	var in, outTok int64
	if e.Usage != nil {
		model, in, outTok = e.Usage.Model, e.Usage.InputTokens, e.Usage.OutputTokens
	}
	var settled, bal int64
	query := sqlSettleOnce
	if st.ExceedHold {
		query = sqlSettleBeyondOnce
	}
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, query, st.HoldID, int64(st.Amount), st.At.UnixMicro(),
			e.ID, string(e.Type), string(e.Status), e.Description, model, in, outTok).Scan(&e.Account, &settled, &bal)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Entry{}, billrules.HoldNotFound()
	}
	if err != nil {
		return billing.Entry{}, billErr("settle hold", err)
	}
	e.Amount, e.BalanceAfter = -billing.MicroCents(settled), billing.MicroCents(bal)
	return e, nil
}

// ReleaseHold releases an open hold without a debit, in one statement
// (see sqlSettleOnce); fault.NotFound if it is not open.
func (s *Store) ReleaseHold(ctx context.Context, holdID string) error {
	var account string
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `WITH h AS (
			UPDATE holds SET status = 'released', resolved_at = $2 WHERE id = $1 AND status = 'open' RETURNING account, amount
		)
		UPDATE accounts SET held = accounts.held - h.amount FROM h WHERE accounts.address = h.account RETURNING accounts.address`,
			holdID, time.Now().UnixMicro()).Scan(&account)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return billrules.HoldNotFound()
	}
	return billErr("release hold", err)
}

// ReleaseExpiredHolds releases every open hold that expired at or before
// now. Holds another transaction is resolving at that moment are left to
// it.
func (s *Store) ReleaseExpiredHolds(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := s.billTx(ctx, "release expired holds", func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx,
			`WITH expired AS (
			     SELECT id FROM holds WHERE status = 'open' AND expires_at <= $1
			     ORDER BY id FOR UPDATE SKIP LOCKED
			 )
			 UPDATE holds h SET status = 'released', resolved_at = $1
			 FROM expired WHERE h.id = expired.id AND h.status = 'open'
			 RETURNING h.account, h.amount`,
			now.UnixMicro())
		if err != nil {
			return err
		}
		held := map[string]int64{}
		for rows.Next() {
			var account string
			var amount int64
			if err := rows.Scan(&account, &amount); err != nil {
				rows.Close()
				return err
			}
			held[account] += amount
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		accounts := make([]string, 0, len(held))
		for a := range held {
			accounts = append(accounts, a)
		}
		sort.Strings(accounts) // a fixed lock order
		for _, a := range accounts {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET held = held - $1 WHERE address = $2`, held[a], a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Balance returns the account's balance; zero for an unknown account.
func (s *Store) Balance(ctx context.Context, account string) (billing.Balance, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return billing.Balance{}, err
	}
	var bal, held int64
	err = s.pool.QueryRow(ctx, `SELECT balance, held FROM accounts WHERE address = $1`, account).Scan(&bal, &held)
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Balance{}, nil
	}
	if err != nil {
		return billing.Balance{}, billErr("balance", err)
	}
	return billing.Balance{Total: billing.MicroCents(bal), Held: billing.MicroCents(held)}, nil
}

// Entries returns a page of the account's entries, newest first in
// ledger order (see billing.Ledger.Entries). An entry's seq is drawn when
// its row is inserted, after the statement has locked the account's row,
// so for one account seq order is the order balances were computed.
func (s *Store) Entries(ctx context.Context, account string, f billing.EntryFilter, p page.Request) (page.Page[billing.Entry], error) {
	return sqlstore.Entries(ctx, pgQuerier{s.pool}, pgDialect, account, f, p)
}

// sqlHasCompletedPurchase matches the partial index
// entries_completed_purchase: its type and status are literals for that.
const sqlHasCompletedPurchase = `SELECT EXISTS (SELECT 1 FROM entries WHERE account = $1 AND type = 'Purchase' AND status = 'Completed')`

// HasCompletedPurchase reports whether the account has a completed
// Purchase entry.
func (s *Store) HasCompletedPurchase(ctx context.Context, account string) (bool, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return false, err
	}
	var ok bool
	err = s.pool.QueryRow(ctx,
		sqlHasCompletedPurchase, account).Scan(&ok)
	return ok, billErr("has completed purchase", err)
}
