package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/page"
)

// Feeds is feeds.Store over a Backend.
type Feeds struct {
	B Backend
}

var _ feeds.Store = Feeds{}

func (s Feeds) err(op string, err error) error {
	if err == nil || fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return s.B.Dialect().wrap(op, err)
}

// Enqueue records the IDs as seen and queues the new ones, in one
// transaction.
func (s Feeds) Enqueue(ctx context.Context, items []feeds.RawItem, now time.Time) (int, error) {
	added := 0
	err := s.B.Write(ctx, func(q Querier) error {
		added = 0
		for _, it := range items {
			n, err := q.Exec(ctx, `INSERT INTO feed_seen (id, seen_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, it.ID, now.UnixMicro())
			if err != nil {
				return err
			}
			if n == 0 {
				continue
			}
			raw, err := json.Marshal(it)
			if err != nil {
				return err
			}
			if _, err := q.Exec(ctx, `INSERT INTO feed_queue (id, raw, attempts, due_at) VALUES ($1, $2, 0, $3)`, it.ID, string(raw), now.UnixMicro()); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	return added, s.err("enqueue feed items", err)
}

// Lease moves the due items' due time to now+lease and returns them, in
// one statement (rows other transactions hold are skipped where the
// dialect can).
func (s Feeds) Lease(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]feeds.Pending, error) {
	d := s.B.Dialect()
	var out []feeds.Pending
	err := s.B.Write(ctx, func(q Querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `UPDATE feed_queue SET due_at = $1 WHERE id IN (SELECT id FROM feed_queue WHERE due_at <= $2 ORDER BY due_at, id LIMIT $3`+d.SkipLocked+`) RETURNING raw, attempts`,
			now.Add(lease).UnixMicro(), now.UnixMicro(), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw string
			var p feeds.Pending
			if err := rows.Scan(&raw, &p.Attempts); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(raw), &p.Raw); err != nil {
				return fmt.Errorf("a queued feed item: %w", err)
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, s.err("lease feed items", err)
}

// Publish stores the item and dequeues its raw item.
func (s Feeds) Publish(ctx context.Context, it feeds.Item) error {
	err := s.B.Write(ctx, func(q Querier) error {
		if _, err := q.Exec(ctx, `INSERT INTO feed_items (id, published, category, headline, summary, source, link) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			it.ID, it.Timestamp.Truncate(time.Second).UnixMicro(), it.Category, it.Headline, it.Summary, it.Source, it.Link); err != nil {
			return err
		}
		_, err := q.Exec(ctx, `DELETE FROM feed_queue WHERE id = $1`, it.ID)
		return err
	})
	return s.err("publish feed item", err)
}

// Retry makes a queued item due at next, one attempt more.
func (s Feeds) Retry(ctx context.Context, id string, next time.Time) error {
	err := s.B.Write(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `UPDATE feed_queue SET due_at = $1, attempts = attempts + 1 WHERE id = $2`, next.UnixMicro(), id)
		return err
	})
	return s.err("retry feed item", err)
}

// Drop dequeues an item.
func (s Feeds) Drop(ctx context.Context, id string) error {
	err := s.B.Write(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `DELETE FROM feed_queue WHERE id = $1`, id)
		return err
	})
	return s.err("drop feed item", err)
}

const itemCols = `id, published, category, headline, summary, source, link`

func scanItem(r Row) (feeds.Item, error) {
	var it feeds.Item
	var pub int64
	if err := r.Scan(&it.ID, &pub, &it.Category, &it.Headline, &it.Summary, &it.Source, &it.Link); err != nil {
		return feeds.Item{}, err
	}
	it.Timestamp = fromMicro(pub)
	return it, nil
}

// GetItem returns an item.
func (s Feeds) GetItem(ctx context.Context, id string) (feeds.Item, error) {
	it, err := scanItem(s.B.Read().QueryRow(ctx, `SELECT `+itemCols+` FROM feed_items WHERE id = $1`, id))
	if s.B.Dialect().NoRows(err) {
		return feeds.Item{}, fault.New(fault.NotFound, "not found")
	}
	return it, s.err("get feed item", err)
}

// ListItems returns a page of items, newest first, ties by ID bytes.
func (s Feeds) ListItems(ctx context.Context, category string, r page.Request) (page.Page[feeds.Item], error) {
	d := s.B.Dialect()
	size := r.Size(feeds.PageSize, feeds.StorePageMax)
	q, args := `SELECT `+itemCols+` FROM feed_items WHERE 1 = 1`, []any{}
	if category != "" {
		q, args = `SELECT `+itemCols+` FROM feed_items WHERE category = $1`, []any{category}
	}
	q, args = timePage(d, q, args, "published", "id", r.After, size)
	return readPage(ctx, s.B.Read(), d, "list feed items", q, args, size, scanItem, feeds.Key)
}

// ExpireItems deletes up to limit items published before t.
func (s Feeds) ExpireItems(ctx context.Context, t time.Time, limit int) (int, error) {
	return s.deleteBefore(ctx, "expire feed items", `DELETE FROM feed_items WHERE id IN (SELECT id FROM feed_items WHERE published < $1 LIMIT $2`, t, limit)
}

// ForgetSeen deletes up to limit seen IDs recorded before t.
func (s Feeds) ForgetSeen(ctx context.Context, t time.Time, limit int) (int, error) {
	return s.deleteBefore(ctx, "forget seen feed items", `DELETE FROM feed_seen WHERE id IN (SELECT id FROM feed_seen WHERE seen_at < $1 LIMIT $2`, t, limit)
}

func (s Feeds) deleteBefore(ctx context.Context, op, stmt string, t time.Time, limit int) (int, error) {
	var n int64
	err := s.B.Write(ctx, func(q Querier) error {
		var err error
		n, err = q.Exec(ctx, stmt+s.B.Dialect().SkipLocked+`)`, t.UnixMicro(), limit)
		return err
	})
	return int(n), s.err(op, err)
}
