package sqlstore

import (
	"context"
	"sort"
	"time"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

// The statements of the auth hot path (every API request runs one of the
// lookups), exported so that a backend can prepare them.
const (
	SQLMasterKeyOwner  = `SELECT address FROM master_keys WHERE hash = $1`
	SQLClientKeyByHash = `SELECT ` + clientKeyColumns + ` FROM client_keys WHERE hash = $1 AND revoked_at IS NULL`
	SQLTouchClientKey  = `UPDATE client_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`
)

// clientKeyColumns are the columns scanClientKey reads, in order.
const clientKeyColumns = `id, address, hash, prefix, label, created_at, last_used_at, revoked_at`

// Auth is auth.Store over a Backend. Nonces and key-usage times are
// written with Backend.WriteRelaxed: losing them to a power loss is
// harmless.
type Auth struct {
	B Backend
}

var _ auth.Store = Auth{}

// CreateNonce stores a new nonce. A value that already exists is a
// fault.Conflict.
func (s Auth) CreateNonce(ctx context.Context, n auth.Nonce) error {
	d := s.B.Dialect()
	err := s.B.WriteRelaxed(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO nonces (value, created_at, expires_at) VALUES ($1, $2, $3)`,
			n.Value, micro(n.CreatedAt), micro(n.ExpiresAt))
		return err
	})
	if d.Unique(err) {
		return fault.Wrap(err, fault.Conflict, "nonce already exists")
	}
	if err != nil {
		return d.wrap("create nonce", err)
	}
	return nil
}

// ConsumeNonce marks the nonce used in one statement and returns it, even
// if it has expired; an unknown or used nonce is fault.NotFound. Of two
// concurrent consumers, the second finds used_at set (PostgreSQL's Read
// Committed re-checks the row after the first commits; SQLite's writes
// are serialized).
func (s Auth) ConsumeNonce(ctx context.Context, value string, now time.Time) (auth.Nonce, error) {
	d := s.B.Dialect()
	n := auth.Nonce{Value: value}
	var created, expires int64
	err := s.B.WriteRelaxed(ctx, func(q Querier) error {
		return q.QueryRow(ctx,
			`UPDATE nonces SET used_at = $1 WHERE value = $2 AND used_at IS NULL RETURNING created_at, expires_at`,
			micro(now), value).Scan(&created, &expires)
	})
	if d.NoRows(err) {
		return auth.Nonce{}, fault.New(fault.NotFound, "nonce not found")
	}
	if err != nil {
		return auth.Nonce{}, d.wrap("consume nonce", err)
	}
	n.CreatedAt, n.ExpiresAt = fromMicro(created), fromMicro(expires)
	return n, nil
}

// DeleteExpiredNonces removes at most limit nonces (all, for limit <= 0)
// whose expiry is at or before now, used or not, oldest first, reading
// nonces_expires_at; it returns how many it removed. With the dialect's
// SkipLocked, rows another sweep is deleting are skipped, so sweeps of
// several processes do not queue.
func (s Auth) DeleteExpiredNonces(ctx context.Context, now time.Time, limit int) (int, error) {
	d := s.B.Dialect()
	lim := int64(limit)
	if limit <= 0 {
		lim = 1 << 62
	}
	var n int64
	err := s.B.WriteRelaxed(ctx, func(q Querier) error {
		var err error
		n, err = q.Exec(ctx, `DELETE FROM nonces WHERE value IN (
			SELECT value FROM nonces WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2`+d.SkipLocked+`)`, micro(now), lim)
		return err
	})
	if err != nil {
		return 0, d.wrap("delete expired nonces", err)
	}
	return int(n), nil
}

// SetMasterKey makes hash the wallet's only master key, replacing any
// previous one in one statement.
func (s Auth) SetMasterKey(ctx context.Context, address string, hash []byte, now time.Time) error {
	d := s.B.Dialect()
	err := s.B.Write(ctx, func(q Querier) error {
		_, err := q.Exec(ctx,
			`INSERT INTO master_keys (address, hash, created_at) VALUES ($1, $2, $3)
			 ON CONFLICT (address) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at`,
			address, hash, micro(now))
		return err
	})
	if d.Unique(err) {
		return fault.Wrap(err, fault.Conflict, "master key hash already in use")
	}
	if err != nil {
		return d.wrap("set master key", err)
	}
	return nil
}

// MasterKeyOwner returns the address whose master key has this hash, or
// fault.NotFound.
func (s Auth) MasterKeyOwner(ctx context.Context, hash []byte) (string, error) {
	d := s.B.Dialect()
	var address string
	err := s.B.Read().QueryRow(ctx, SQLMasterKeyOwner, hash).Scan(&address)
	if d.NoRows(err) {
		return "", fault.New(fault.NotFound, "master key not found")
	}
	if err != nil {
		return "", d.wrap("master key owner", err)
	}
	return address, nil
}

// CreateClientKey stores k if its wallet holds fewer than limit active
// keys. The count and the insert share one write transaction, which the
// dialect's Serialize makes the only one of the wallet at a time, in any
// process. At the limit it returns fault.Forbidden; a duplicate ID or
// hash is fault.Conflict.
func (s Auth) CreateClientKey(ctx context.Context, k auth.ClientKeyRecord, limit int) error {
	d := s.B.Dialect()
	err := s.B.Write(ctx, func(q Querier) error {
		if d.Serialize != nil {
			if err := d.Serialize(ctx, q, "client-keys:"+k.Address); err != nil {
				return d.wrap("lock wallet", err)
			}
		}
		var n int
		if err := q.QueryRow(ctx,
			`SELECT count(*) FROM client_keys WHERE address = $1 AND revoked_at IS NULL`, k.Address).Scan(&n); err != nil {
			return d.wrap("count client keys", err)
		}
		if n >= limit {
			return fault.New(fault.Forbidden, "client key limit reached")
		}
		_, err := q.Exec(ctx,
			`INSERT INTO client_keys (`+clientKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.Address, k.Hash, k.Prefix, k.Label, micro(k.CreatedAt), nullMicro(k.LastUsedAt), nullMicro(k.RevokedAt))
		if d.Unique(err) {
			return fault.Wrap(err, fault.Conflict, "client key already exists")
		}
		if err != nil {
			return d.wrap("insert client key", err)
		}
		return nil
	})
	return err
}

// scanClientKey reads one row of clientKeyColumns.
func scanClientKey(row Row) (auth.ClientKeyRecord, error) {
	var k auth.ClientKeyRecord
	var created int64
	var used, revoked *int64
	if err := row.Scan(&k.ID, &k.Address, &k.Hash, &k.Prefix, &k.Label, &created, &used, &revoked); err != nil {
		return auth.ClientKeyRecord{}, err
	}
	k.CreatedAt, k.LastUsedAt, k.RevokedAt = fromMicro(created), fromNullMicro(used), fromNullMicro(revoked)
	return k, nil
}

// ClientKeyByHash returns the active key with this hash, or fault.NotFound.
func (s Auth) ClientKeyByHash(ctx context.Context, hash []byte) (auth.ClientKeyRecord, error) {
	d := s.B.Dialect()
	k, err := scanClientKey(s.B.Read().QueryRow(ctx, SQLClientKeyByHash, hash))
	if d.NoRows(err) {
		return auth.ClientKeyRecord{}, fault.New(fault.NotFound, "client key not found")
	}
	if err != nil {
		return auth.ClientKeyRecord{}, d.wrap("client key by hash", err)
	}
	return k, nil
}

// ListClientKeys returns the wallet's active keys, oldest first (ties by
// the bytes of the ID). It returns an empty, non-nil slice when there are
// none.
func (s Auth) ListClientKeys(ctx context.Context, address string) ([]auth.ClientKeyRecord, error) {
	d := s.B.Dialect()
	rows, err := s.B.Read().Query(ctx,
		`SELECT `+clientKeyColumns+` FROM client_keys
		 WHERE address = $1 AND revoked_at IS NULL ORDER BY created_at, id`+d.Binary, address)
	if err != nil {
		return nil, d.wrap("list client keys", err)
	}
	defer rows.Close()
	keys := []auth.ClientKeyRecord{}
	for rows.Next() {
		k, err := scanClientKey(rows)
		if err != nil {
			return nil, d.wrap("list client keys", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, d.wrap("list client keys", err)
	}
	return keys, nil
}

// RevokeClientKey revokes the wallet's active key id, or returns
// fault.NotFound if the wallet has no such active key.
func (s Auth) RevokeClientKey(ctx context.Context, address, id string, now time.Time) error {
	d := s.B.Dialect()
	var n int64
	err := s.B.Write(ctx, func(q Querier) error {
		var err error
		n, err = q.Exec(ctx,
			`UPDATE client_keys SET revoked_at = $1 WHERE id = $2 AND address = $3 AND revoked_at IS NULL`,
			micro(now), id, address)
		return err
	})
	if err != nil {
		return d.wrap("revoke client key", err)
	}
	if n == 0 {
		return fault.New(fault.NotFound, "client key not found")
	}
	return nil
}

// TouchClientKeys raises each key's last_used_at to the given time in one
// transaction; it never moves it backwards, and ignores unknown IDs and
// zero times. Rows are updated in ID order, so concurrent batches lock
// them in the same order and cannot deadlock.
func (s Auth) TouchClientKeys(ctx context.Context, used map[string]time.Time) error {
	d := s.B.Dialect()
	ids := make([]string, 0, len(used))
	for id, t := range used {
		if !t.IsZero() {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	err := s.B.WriteRelaxed(ctx, func(q Querier) error {
		for _, id := range ids {
			if _, err := q.Exec(ctx, SQLTouchClientKey, micro(used[id]), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return d.wrap("touch client keys", err)
	}
	return nil
}

// micro is t as stored: Unix microseconds.
func micro(t time.Time) int64 { return t.UnixMicro() }

// fromMicro is the UTC time of a stored Unix-microsecond value.
func fromMicro(us int64) time.Time { return time.UnixMicro(us).UTC() }

// nullMicro is t as stored in a nullable column: NULL for the zero time.
func nullMicro(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromNullMicro reads a nullable time column: NULL is the zero time.
func fromNullMicro(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return fromMicro(*v)
}
