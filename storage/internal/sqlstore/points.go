package sqlstore

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/storage/internal/billrules"
)

// Points is billing.PointsStore over a Backend.
type Points struct {
	B Backend
}

var _ billing.PointsStore = Points{}

const pointsCols = `id, account, trigger_type, points, description, metadata, idempotency_key, created_at`

func scanPoints(r Row) (billing.PointsEntry, error) {
	var (
		e         billing.PointsEntry
		meta, key *string
		created   int64
	)
	if err := r.Scan(&e.ID, &e.Account, &e.Trigger, &e.Points, &e.Description, &meta, &key, &created); err != nil {
		return billing.PointsEntry{}, err
	}
	m, err := billrules.DecodeMetadata(meta)
	if err != nil {
		return billing.PointsEntry{}, err
	}
	e.Metadata, e.CreatedAt = m, time.UnixMicro(created).UTC()
	if key != nil {
		e.IdempotencyKey = *key
	}
	return e, nil
}

// AwardPoints stores e; with an idempotency key already used by the
// account it stores nothing and returns the earlier entry. Metadata is
// stored as JSON: numbers come back as float64. Two awards racing under
// one key: the unique index refuses the second insert, whose retry then
// finds the first.
func (s Points) AwardPoints(ctx context.Context, e billing.PointsEntry) (billing.PointsEntry, error) {
	d := s.B.Dialect()
	if err := billrules.Points(&e); err != nil {
		return billing.PointsEntry{}, err
	}
	meta, err := billrules.EncodeMetadata(e.Metadata)
	if err != nil {
		return billing.PointsEntry{}, err
	}
	var out billing.PointsEntry
	award := func(q Querier) error {
		if e.IdempotencyKey != "" {
			prev, err := scanPoints(q.QueryRow(ctx,
				`SELECT `+pointsCols+` FROM points WHERE account = $1 AND idempotency_key = $2`, e.Account, e.IdempotencyKey))
			if err == nil {
				out = prev
				return nil
			}
			if !d.NoRows(err) {
				return err
			}
		}
		var n int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM points WHERE id = $1`, e.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return billrules.DuplicateID()
		}
		var metaArg, keyArg any
		if meta != nil {
			metaArg = *meta
		}
		if e.IdempotencyKey != "" {
			keyArg = e.IdempotencyKey
		}
		if _, err := q.Exec(ctx, `INSERT INTO points (`+pointsCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			e.ID, e.Account, e.Trigger, e.Points, e.Description, metaArg, keyArg, e.CreatedAt.UnixMicro()); err != nil {
			return err
		}
		out = e
		out.Metadata, err = billrules.DecodeMetadata(meta)
		return err
	}
	for attempt := 0; ; attempt++ {
		err = s.B.Write(ctx, award)
		if !d.Unique(err) || attempt == 3 {
			break
		}
	}
	if err != nil {
		if fault.CodeOf(err) != fault.Unknown {
			return billing.PointsEntry{}, err
		}
		return billing.PointsEntry{}, d.wrap("award points", err)
	}
	return out, nil
}

// PointsBalance is the sum of the account's awards.
func (s Points) PointsBalance(ctx context.Context, account string) (int64, error) {
	d := s.B.Dialect()
	account, err := billrules.Account(account)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.B.Read().QueryRow(ctx, `SELECT COALESCE(SUM(points), 0) FROM points WHERE account = $1`, account).Scan(&n); err != nil {
		return 0, d.wrap("points balance", err)
	}
	return n, nil
}

// PointsHistory returns a page of the account's awards, newest first by
// CreatedAt, ties by the bytes of the ID (see billing.PointsStore).
func (s Points) PointsHistory(ctx context.Context, account string, p page.Request) (page.Page[billing.PointsEntry], error) {
	d := s.B.Dialect()
	none := page.Page[billing.PointsEntry]{}
	account, err := billrules.Account(account)
	if err != nil {
		return none, err
	}
	size := p.Size(billing.EntriesPageSize, billing.EntriesPageMax)
	q, args := timePage(d, `SELECT `+pointsCols+` FROM points WHERE account = $1`, []any{account}, "created_at", "id", p.After, size)
	return readPage(ctx, s.B.Read(), d, "points history", q, args, size, scanPoints, billing.PointsKey)
}
