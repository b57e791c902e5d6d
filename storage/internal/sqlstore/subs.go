package sqlstore

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

// LedgerTx is the ledger inside a write transaction, which each backend
// keeps its own way (SQLite through its in-memory book of balances and
// holds): what the shared stores that charge money call.
type LedgerTx interface {
	// KeyedEntry returns the entry that the account's idempotency key
	// wrote, with the fingerprint of its request; found is false if there
	// is none (and for an empty key).
	KeyedEntry(ctx context.Context, q Querier, account, key string) (e billing.Entry, fp string, found bool, err error)
	// DebitTx debits p in the transaction q and writes its entry with id
	// and fingerprint fp; fault.InsufficientFunds if the available
	// balance does not cover it.
	DebitTx(ctx context.Context, q Querier, p billing.Posting, id, fp string) (billing.Entry, error)
}

// Subscriptions is billing.SubscriptionStore over a Backend, whose
// charges go through its LedgerTx in the same transaction.
type Subscriptions struct {
	B Backend
	L LedgerTx
}

var _ billing.SubscriptionStore = Subscriptions{}

const subCols = `id, account, kind, resource, type, hourly_cost, anchor, prepaid_until, status, created_at, ended_at, exclusive`

func scanSub(r Row) (billing.Subscription, error) {
	var (
		sub                            billing.Subscription
		typ, status                    string
		cost, anchor, prepaid, created int64
		ended                          *int64
	)
	if err := r.Scan(&sub.ID, &sub.Account, &sub.Kind, &sub.Resource, &typ, &cost, &anchor, &prepaid, &status, &created, &ended, &sub.Exclusive); err != nil {
		return billing.Subscription{}, err
	}
	sub.Type, sub.Status, sub.HourlyCost = billing.TxType(typ), billing.SubStatus(status), billing.MicroCents(cost)
	sub.Anchor, sub.PrepaidUntil, sub.CreatedAt = fromMicro(anchor), fromMicro(prepaid), fromMicro(created)
	sub.EndedAt = fromNullMicro(ended)
	return sub, nil
}

// getSub reads a subscription (locking its row where the dialect can, if
// lock); fault.NotFound if there is none.
func (s Subscriptions) getSub(ctx context.Context, q Querier, id string, lock bool) (billing.Subscription, error) {
	d := s.B.Dialect()
	query := `SELECT ` + subCols + ` FROM subscriptions WHERE id = $1`
	if lock {
		query += d.ForUpdate
	}
	sub, err := scanSub(q.QueryRow(ctx, query, id))
	if d.NoRows(err) {
		return billing.Subscription{}, billrules.SubNotFound()
	}
	return sub, err
}

// err labels a store error, passing coded errors through.
func (s Subscriptions) err(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return s.B.Dialect().wrap(op, err)
}

// writeRetryingUnique runs fn in a write transaction, again (a few times)
// after a unique violation: two transactions that raced past the same
// check, one of which the index refused; the retry sees the other's row
// (a replay, or a conflict). A violation left after the retries is
// returned as it is.
func (s Subscriptions) writeRetryingUnique(ctx context.Context, fn func(Querier) error) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = s.B.Write(ctx, fn); !s.B.Dialect().Unique(err) {
			break
		}
	}
	return err
}

// CreateSubscription debits the first period and stores sub with
// PrepaidUntil = Anchor + 1h, in one transaction. A retry under the first
// posting's idempotency key returns the subscription it created.
func (s Subscriptions) CreateSubscription(ctx context.Context, sub billing.Subscription, first billing.Posting) (billing.Subscription, billing.Entry, error) {
	var outSub billing.Subscription
	var outEntry billing.Entry
	err := s.writeRetryingUnique(ctx, func(q Querier) error {
		var err error
		outSub, outEntry, err = s.CreateTx(ctx, q, sub, first)
		return err
	})
	if s.B.Dialect().Unique(err) {
		err = billrules.SubExists() // the active-subscription indexes, after the retries
	}
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, s.err("create subscription", err)
	}
	return outSub, outEntry, nil
}

// CreateTx is CreateSubscription inside the write transaction q, for a
// shared store that creates the resource a subscription pays for in the
// same transaction (a reserved subdomain and its first hour): if that
// fails, the charge rolls back with it, so losing a race costs nothing.
// The caller retries the transaction after a unique violation, as
// CreateSubscription does.
func (s Subscriptions) CreateTx(ctx context.Context, q Querier, sub billing.Subscription, first billing.Posting) (billing.Subscription, billing.Entry, error) {
	if err := billrules.Subscription(&sub, &first); err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	d := s.B.Dialect()
	fp := billrules.SubscriptionFP(sub, first)
	none := func(err error) (billing.Subscription, billing.Entry, error) {
		return billing.Subscription{}, billing.Entry{}, err
	}
	prev, prevFP, found, err := s.L.KeyedEntry(ctx, q, first.Account, first.IdempotencyKey)
	if err != nil {
		return none(err)
	}
	if found {
		if prevFP != fp {
			return none(billrules.KeyConflict())
		}
		var id string
		err := q.QueryRow(ctx, `SELECT subscription_id FROM subscription_periods WHERE entry_id = $1`, prev.ID).Scan(&id)
		if d.NoRows(err) {
			return none(billrules.KeyConflict())
		}
		if err != nil {
			return none(err)
		}
		got, err := s.getSub(ctx, q, id, false)
		if err != nil {
			return none(err)
		}
		return got, prev, nil
	}
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM subscriptions WHERE id = $1`, sub.ID).Scan(&n); err != nil {
		return none(err)
	}
	if n > 0 {
		return none(billrules.DuplicateID())
	}
	if err := q.QueryRow(ctx,
		`SELECT count(*) FROM subscriptions WHERE account = $1 AND kind = $2 AND resource = $3 AND status = 'Active'`,
		sub.Account, sub.Kind, sub.Resource).Scan(&n); err != nil {
		return none(err)
	}
	if n > 0 {
		return none(billrules.SubExists())
	}
	// An exclusive resource is one account's at a time (the index
	// subscriptions_exclusive decides a race, and the retry lands here).
	if err := q.QueryRow(ctx,
		`SELECT count(*) FROM subscriptions WHERE kind = $1 AND resource = $2 AND status = 'Active' AND account <> $3 AND (exclusive OR $4)`,
		sub.Kind, sub.Resource, sub.Account, sub.Exclusive).Scan(&n); err != nil {
		return none(err)
	}
	if n > 0 {
		return none(billrules.SubExists())
	}
	e, err := s.L.DebitTx(ctx, q, first, billrules.NewID(), fp)
	if err != nil {
		return none(err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO subscriptions (`+subCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11)`,
		sub.ID, sub.Account, sub.Kind, sub.Resource, string(sub.Type), int64(sub.HourlyCost),
		sub.Anchor.UnixMicro(), sub.PrepaidUntil.UnixMicro(), string(sub.Status), sub.CreatedAt.UnixMicro(), sub.Exclusive); err != nil {
		return none(err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO subscription_periods (subscription_id, period_start, entry_id) VALUES ($1, $2, $3)`,
		sub.ID, sub.Anchor.UnixMicro(), e.ID); err != nil {
		return none(err)
	}
	return sub, e, nil
}

// ChargePeriod charges the period starting at periodStart, which must be
// the subscription's PrepaidUntil, and advances PrepaidUntil by an hour;
// the (subscription, period) row makes it happen once. The subscription's
// row is locked first where the dialect can (one charge of it at a
// time). When funds are short the charge is rolled back, the subscription
// is marked Inactive and the error is fault.InsufficientFunds.
func (s Subscriptions) ChargePeriod(ctx context.Context, subID string, periodStart time.Time, p billing.Posting) (billing.Subscription, billing.Entry, error) {
	periodStart = billrules.OptTime(periodStart)
	var outSub billing.Subscription
	var outEntry billing.Entry
	err := s.writeRetryingUnique(ctx, func(q Querier) error {
		sub, err := s.getSub(ctx, q, subID, true)
		if err != nil {
			return err
		}
		if err := billrules.Charge(sub, &p); err != nil {
			return err
		}
		if sub.Status != billing.SubActive || !sub.PrepaidUntil.Equal(periodStart) {
			return billrules.PeriodConflict()
		}
		if _, _, found, err := s.L.KeyedEntry(ctx, q, p.Account, p.IdempotencyKey); err != nil || found {
			if err == nil {
				err = billrules.KeyConflict()
			}
			return err
		}
		entryID := billrules.NewID()
		n, err := q.Exec(ctx,
			`INSERT INTO subscription_periods (subscription_id, period_start, entry_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			subID, periodStart.UnixMicro(), entryID)
		if err != nil {
			return err
		}
		if n != 1 {
			return billrules.PeriodConflict()
		}
		next := periodStart.Add(time.Hour)
		n, err = q.Exec(ctx,
			`UPDATE subscriptions SET prepaid_until = $1 WHERE id = $2 AND status = 'Active' AND prepaid_until = $3`,
			next.UnixMicro(), subID, periodStart.UnixMicro())
		if err != nil {
			return err
		}
		if n != 1 {
			return billrules.PeriodConflict()
		}
		e, err := s.L.DebitTx(ctx, q, p, entryID, billrules.PostingFP("charge|"+subID, p))
		if err != nil {
			return err
		}
		sub.PrepaidUntil = next
		outSub, outEntry = sub, e
		return nil
	})
	if s.B.Dialect().Unique(err) {
		err = billrules.PeriodConflict() // the period's row, after the retries
	}
	if fault.CodeOf(err) == fault.InsufficientFunds {
		// The charge rolled back; the subscription lapses, unless another
		// worker charged the period meanwhile.
		lapse := s.B.Write(ctx, func(q Querier) error {
			if _, err := q.Exec(ctx,
				`UPDATE subscriptions SET status = 'Inactive', ended_at = $1 WHERE id = $2 AND status = 'Active' AND prepaid_until = $3`,
				p.At.UnixMicro(), subID, periodStart.UnixMicro()); err != nil {
				return err
			}
			sub, err := s.getSub(ctx, q, subID, false)
			outSub = sub
			return err
		})
		if lapse != nil {
			return billing.Subscription{}, billing.Entry{}, s.err("charge period", lapse)
		}
		return outSub, billing.Entry{}, err
	}
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, s.err("charge period", err)
	}
	return outSub, outEntry, nil
}

// DueSubscriptions returns up to limit active subscriptions whose
// PrepaidUntil is at or before now, the longest due first (ties in
// creation order).
func (s Subscriptions) DueSubscriptions(ctx context.Context, now time.Time, limit int) ([]billing.Subscription, error) {
	if limit <= 0 {
		return nil, fault.New(fault.Invalid, "limit must be positive")
	}
	return s.list(ctx, "due subscriptions",
		`SELECT `+subCols+` FROM subscriptions WHERE status = 'Active' AND prepaid_until <= $1 ORDER BY prepaid_until, seq LIMIT $2`,
		now.UnixMicro(), limit)
}

// CancelSubscription marks the account's active subscription Cancelled;
// fault.NotFound if it has no such active subscription.
func (s Subscriptions) CancelSubscription(ctx context.Context, account, id string, now time.Time) error {
	account, err := billrules.Account(account)
	if err != nil {
		return err
	}
	now = billrules.Time(now)
	err = s.B.Write(ctx, func(q Querier) error {
		n, err := q.Exec(ctx,
			`UPDATE subscriptions SET status = 'Cancelled', ended_at = $1 WHERE id = $2 AND account = $3 AND status = 'Active'`,
			now.UnixMicro(), id, account)
		if err != nil {
			return err
		}
		if n != 1 {
			return billrules.SubNotFound()
		}
		return nil
	})
	return s.err("cancel subscription", err)
}

// GetSubscription returns a subscription by ID, or fault.NotFound.
func (s Subscriptions) GetSubscription(ctx context.Context, id string) (billing.Subscription, error) {
	sub, err := s.getSub(ctx, s.B.Read(), id, false)
	return sub, s.err("get subscription", err)
}

// ListSubscriptions returns the account's subscriptions, newest first (by
// CreatedAt, ties newest written first).
func (s Subscriptions) ListSubscriptions(ctx context.Context, account string) ([]billing.Subscription, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return nil, err
	}
	return s.list(ctx, "list subscriptions",
		`SELECT `+subCols+` FROM subscriptions WHERE account = $1 ORDER BY created_at DESC, seq DESC`, account)
}

func (s Subscriptions) list(ctx context.Context, op, query string, args ...any) ([]billing.Subscription, error) {
	rows, err := s.B.Read().Query(ctx, query, args...)
	if err != nil {
		return nil, s.err(op, err)
	}
	defer rows.Close()
	out := []billing.Subscription{}
	for rows.Next() {
		sub, err := scanSub(rows)
		if err != nil {
			return nil, s.err(op, err)
		}
		out = append(out, sub)
	}
	return out, s.err(op, rows.Err())
}
