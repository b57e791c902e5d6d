package sqlstore

import (
	"context"
	"fmt"

	"github.com/perceptron-cloud/perceptron/page"
)

// readPage runs query (which asks for size+1 rows, newest first) and
// makes the page of at most size items: the one page reader of every
// shared list.
func readPage[T any](ctx context.Context, q Querier, d Dialect, what, query string, args []any, size int,
	scan func(Row) (T, error), key func(T) page.Key) (page.Page[T], error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return page.Page[T]{}, d.wrap(what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return page.Page[T]{}, d.wrap(what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return page.Page[T]{}, d.wrap(what, err)
	}
	return page.Of(out, size, key), nil
}

// timePage ends a query over rows ordered by (orderCol, idCol) that
// already has a WHERE clause with len(args) arguments: the cursor's
// condition (strictly older than after, ties by the bytes of the ID), the
// newest-first order and the limit of size+1 rows.
func timePage(d Dialect, query string, args []any, orderCol, idCol string, after page.Key, size int) (string, []any) {
	if !after.IsZero() {
		n := len(args)
		query += fmt.Sprintf(` AND (%[1]s < $%[3]d OR (%[1]s = $%[3]d AND %[2]s%[4]s < $%[5]d))`, orderCol, idCol, n+1, d.Binary, n+2)
		args = append(args, after.Order, after.ID)
	}
	query += fmt.Sprintf(` ORDER BY %s DESC, %s%s DESC LIMIT $%d`, orderCol, idCol, d.Binary, len(args)+1)
	return query, append(args, size+1)
}
