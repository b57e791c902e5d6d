package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

const billSubCols = `id, account, kind, resource, type, hourly_cost, anchor, prepaid_until, status, created_at, ended_at`

func billScanSub(r pgx.Row) (billing.Subscription, error) {
	var (
		sub                            billing.Subscription
		typ, status                    string
		cost, anchor, prepaid, created int64
		ended                          *int64
	)
	if err := r.Scan(&sub.ID, &sub.Account, &sub.Kind, &sub.Resource, &typ, &cost, &anchor, &prepaid, &status, &created, &ended); err != nil {
		return billing.Subscription{}, err
	}
	sub.Type, sub.Status, sub.HourlyCost = billing.TxType(typ), billing.SubStatus(status), billing.MicroCents(cost)
	sub.Anchor, sub.PrepaidUntil, sub.CreatedAt = billMicroTime(anchor), billMicroTime(prepaid), billMicroTime(created)
	if ended != nil {
		sub.EndedAt = billMicroTime(*ended)
	}
	return sub, nil
}

// billGetSub reads a subscription; fault.NotFound if there is none.
func billGetSub(ctx context.Context, q billQuerier, id string) (billing.Subscription, error) {
	sub, err := billScanSub(q.QueryRow(ctx, `SELECT `+billSubCols+` FROM subscriptions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return billing.Subscription{}, billrules.SubNotFound()
	}
	return sub, err
}

// CreateSubscription debits the first period and stores sub with
// PrepaidUntil = Anchor + 1h, in one transaction. A retry under the first
// posting's idempotency key returns the subscription it created.
func (s *Store) CreateSubscription(ctx context.Context, sub billing.Subscription, first billing.Posting) (billing.Subscription, billing.Entry, error) {
	if err := billrules.Subscription(&sub, &first); err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	fp := billrules.SubscriptionFP(sub, first)
	var outSub billing.Subscription
	var outEntry billing.Entry
	err := s.billTx(ctx, "create subscription", func(tx pgx.Tx) error {
		prev, found, err := billReplay(ctx, tx, first, fp)
		if err != nil {
			return err
		}
		if found {
			var id string
			err := tx.QueryRow(ctx, `SELECT subscription_id FROM subscription_periods WHERE entry_id = $1`, prev.ID).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				return billrules.KeyConflict()
			}
			if err != nil {
				return err
			}
			outSub, err = billGetSub(ctx, tx, id)
			outEntry = prev
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM subscriptions WHERE id = $1`, sub.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return billrules.DuplicateID()
		}
		if err := tx.QueryRow(ctx,
			`SELECT count(*) FROM subscriptions WHERE account = $1 AND kind = $2 AND resource = $3 AND status = 'Active'`,
			sub.Account, sub.Kind, sub.Resource).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return billrules.SubExists()
		}
		e, err := billDebitTx(ctx, tx, first, billrules.NewID(), fp)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (`+billSubCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)`,
			sub.ID, sub.Account, sub.Kind, sub.Resource, string(sub.Type), int64(sub.HourlyCost),
			sub.Anchor.UnixMicro(), sub.PrepaidUntil.UnixMicro(), string(sub.Status), sub.CreatedAt.UnixMicro()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO subscription_periods (subscription_id, period_start, entry_id) VALUES ($1, $2, $3)`,
			sub.ID, sub.Anchor.UnixMicro(), e.ID); err != nil {
			return err
		}
		outSub, outEntry = sub, e
		return nil
	})
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	return outSub, outEntry, nil
}

// ChargePeriod charges the period starting at periodStart, which must be
// the subscription's PrepaidUntil, and advances PrepaidUntil by an hour;
// the (subscription, period) row makes it happen once. When funds are
// short the charge is rolled back, the subscription is marked Inactive
// and the error is fault.InsufficientFunds.
func (s *Store) ChargePeriod(ctx context.Context, subID string, periodStart time.Time, p billing.Posting) (billing.Subscription, billing.Entry, error) {
	periodStart = billrules.OptTime(periodStart)
	var outSub billing.Subscription
	var outEntry billing.Entry
	err := s.billTx(ctx, "charge period", func(tx pgx.Tx) error {
		// Lock the subscription: one charge of it at a time.
		sub, err := billScanSub(tx.QueryRow(ctx, `SELECT `+billSubCols+` FROM subscriptions WHERE id = $1 FOR UPDATE`, subID))
		if errors.Is(err, pgx.ErrNoRows) {
			return billrules.SubNotFound()
		}
		if err != nil {
			return err
		}
		if err := billrules.Charge(sub, &p); err != nil {
			return err
		}
		if sub.Status != billing.SubActive || !sub.PrepaidUntil.Equal(periodStart) {
			return billrules.PeriodConflict()
		}
		if _, _, found, err := billKeyed(ctx, tx, p.Account, p.IdempotencyKey); err != nil || found {
			if err == nil {
				err = billrules.KeyConflict()
			}
			return err
		}
		entryID := billrules.NewID()
		tag, err := tx.Exec(ctx,
			`INSERT INTO subscription_periods (subscription_id, period_start, entry_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			subID, periodStart.UnixMicro(), entryID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return billrules.PeriodConflict()
		}
		next := periodStart.Add(time.Hour)
		tag, err = tx.Exec(ctx,
			`UPDATE subscriptions SET prepaid_until = $1 WHERE id = $2 AND status = 'Active' AND prepaid_until = $3`,
			next.UnixMicro(), subID, periodStart.UnixMicro())
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return billrules.PeriodConflict()
		}
		e, err := billDebitTx(ctx, tx, p, entryID, billrules.PostingFP("charge|"+subID, p))
		if err != nil {
			return err
		}
		sub.PrepaidUntil = next
		outSub, outEntry = sub, e
		return nil
	})
	if fault.CodeOf(err) == fault.InsufficientFunds {
		// The charge rolled back; the subscription lapses, unless another
		// worker charged the period meanwhile.
		lapse := s.billTx(ctx, "charge period", func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx,
				`UPDATE subscriptions SET status = 'Inactive', ended_at = $1 WHERE id = $2 AND status = 'Active' AND prepaid_until = $3`,
				p.At.UnixMicro(), subID, periodStart.UnixMicro()); err != nil {
				return err
			}
			sub, err := billGetSub(ctx, tx, subID)
			outSub = sub
			return err
		})
		if lapse != nil {
			return billing.Subscription{}, billing.Entry{}, lapse
		}
		return outSub, billing.Entry{}, err
	}
	if err != nil {
		return billing.Subscription{}, billing.Entry{}, err
	}
	return outSub, outEntry, nil
}

// DueSubscriptions returns up to limit active subscriptions whose
// PrepaidUntil is at or before now, the longest due first (ties in
// creation order).
func (s *Store) DueSubscriptions(ctx context.Context, now time.Time, limit int) ([]billing.Subscription, error) {
	if limit <= 0 {
		return nil, fault.New(fault.Invalid, "limit must be positive")
	}
	return s.billListSubs(ctx, "due subscriptions",
		`SELECT `+billSubCols+` FROM subscriptions WHERE status = 'Active' AND prepaid_until <= $1 ORDER BY prepaid_until, seq LIMIT $2`,
		now.UnixMicro(), limit)
}

// CancelSubscription marks the account's active subscription Cancelled;
// fault.NotFound if it has no such active subscription.
func (s *Store) CancelSubscription(ctx context.Context, account, id string, now time.Time) error {
	account, err := billrules.Account(account)
	if err != nil {
		return err
	}
	now = billrules.Time(now)
	return s.billTx(ctx, "cancel subscription", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`UPDATE subscriptions SET status = 'Cancelled', ended_at = $1 WHERE id = $2 AND account = $3 AND status = 'Active'`,
			now.UnixMicro(), id, account)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return billrules.SubNotFound()
		}
		return nil
	})
}

// GetSubscription returns a subscription by ID, or fault.NotFound.
func (s *Store) GetSubscription(ctx context.Context, id string) (billing.Subscription, error) {
	sub, err := billGetSub(ctx, s.pool, id)
	return sub, billErr("get subscription", err)
}

// ListSubscriptions returns the account's subscriptions, newest first (by
// CreatedAt, ties newest written first).
func (s *Store) ListSubscriptions(ctx context.Context, account string) ([]billing.Subscription, error) {
	account, err := billrules.Account(account)
	if err != nil {
		return nil, err
	}
	return s.billListSubs(ctx, "list subscriptions",
		`SELECT `+billSubCols+` FROM subscriptions WHERE account = $1 ORDER BY created_at DESC, seq DESC`, account)
}

func (s *Store) billListSubs(ctx context.Context, op, q string, args ...any) ([]billing.Subscription, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, billErr(op, err)
	}
	defer rows.Close()
	out := []billing.Subscription{}
	for rows.Next() {
		sub, err := billScanSub(rows)
		if err != nil {
			return nil, billErr(op, err)
		}
		out = append(out, sub)
	}
	return out, billErr(op, rows.Err())
}
