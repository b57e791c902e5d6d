package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

var _ auth.Store = (*Store)(nil)

// clientKeyLockClass is the first key of the transaction-scoped advisory
// lock CreateClientKey takes per wallet (the second is a hash of the
// address). Two-key advisory locks do not share a key space with the
// one-key lock the migrator takes.
const clientKeyLockClass int32 = 0x70637431 // "pct1"

// CreateNonce stores a new nonce. A value that already exists is a
// fault.Conflict.
func (s *Store) CreateNonce(ctx context.Context, n auth.Nonce) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO nonces (value, created_at, expires_at) VALUES ($1, $2, $3)`,
		n.Value, authMicro(n.CreatedAt), authMicro(n.ExpiresAt))
	if isUniqueViolation(err) {
		return fault.Wrap(err, fault.Conflict, "nonce already exists")
	}
	if err != nil {
		return fmt.Errorf("postgres: create nonce: %w", err)
	}
	return nil
}

// ConsumeNonce marks the nonce used in one statement and returns it, even
// if it has expired; an unknown or used nonce is fault.NotFound. Under Read
// Committed a concurrent consumer waits for the first one's commit, then
// re-checks used_at IS NULL and finds no row.
func (s *Store) ConsumeNonce(ctx context.Context, value string, now time.Time) (auth.Nonce, error) {
	n := auth.Nonce{Value: value}
	var created, expires int64
	err := s.pool.QueryRow(ctx,
		`UPDATE nonces SET used_at = $1 WHERE value = $2 AND used_at IS NULL RETURNING created_at, expires_at`,
		authMicro(now), value).Scan(&created, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Nonce{}, fault.New(fault.NotFound, "nonce not found")
	}
	if err != nil {
		return auth.Nonce{}, fmt.Errorf("postgres: consume nonce: %w", err)
	}
	n.CreatedAt, n.ExpiresAt = authTime(created), authTime(expires)
	return n, nil
}

// DeleteExpiredNonces removes at most limit nonces (all, for limit <= 0)
// whose expiry is at or before now, used or not, oldest first, reading
// nonces_expires_at; it returns how many it removed. Rows another sweep
// is deleting are skipped, so sweeps of several processes do not queue.
func (s *Store) DeleteExpiredNonces(ctx context.Context, now time.Time, limit int) (int, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM nonces WHERE value IN (
		SELECT value FROM nonces WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, authMicro(now), lim)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete expired nonces: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// SetMasterKey makes hash the wallet's only master key, replacing any
// previous one in one statement.
func (s *Store) SetMasterKey(ctx context.Context, address string, hash []byte, now time.Time) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO master_keys (address, hash, created_at) VALUES ($1, $2, $3)
		 ON CONFLICT (address) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at`,
		address, hash, authMicro(now))
	if isUniqueViolation(err) {
		return fault.Wrap(err, fault.Conflict, "master key hash already in use")
	}
	if err != nil {
		return fmt.Errorf("postgres: set master key: %w", err)
	}
	return nil
}

// MasterKeyOwner returns the address whose master key has this hash, or
// fault.NotFound.
func (s *Store) MasterKeyOwner(ctx context.Context, hash []byte) (string, error) {
	var address string
	err := s.pool.QueryRow(ctx, `SELECT address FROM master_keys WHERE hash = $1`, hash).Scan(&address)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fault.New(fault.NotFound, "master key not found")
	}
	if err != nil {
		return "", fmt.Errorf("postgres: master key owner: %w", err)
	}
	return address, nil
}

// CreateClientKey stores k if its wallet holds fewer than limit active
// keys. It first takes a transaction-scoped advisory lock on the wallet, so
// concurrent creations for one wallet, in any process, count and insert one
// at a time. At the limit it returns fault.Forbidden; a duplicate ID or hash
// is fault.Conflict.
func (s *Store) CreateClientKey(ctx context.Context, k auth.ClientKeyRecord, limit int) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`,
			clientKeyLockClass, k.Address); err != nil {
			return fmt.Errorf("postgres: lock wallet: %w", err)
		}
		var n int
		if err := tx.QueryRow(ctx,
			`SELECT count(*) FROM client_keys WHERE address = $1 AND revoked_at IS NULL`,
			k.Address).Scan(&n); err != nil {
			return fmt.Errorf("postgres: count client keys: %w", err)
		}
		if n >= limit {
			return fault.New(fault.Forbidden, "client key limit reached")
		}
		_, err := tx.Exec(ctx,
			`INSERT INTO client_keys (id, address, hash, prefix, label, created_at, last_used_at, revoked_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.Address, k.Hash, k.Prefix, k.Label, authMicro(k.CreatedAt),
			authNullMicro(k.LastUsedAt), authNullMicro(k.RevokedAt))
		if isUniqueViolation(err) {
			return fault.Wrap(err, fault.Conflict, "client key already exists")
		}
		if err != nil {
			return fmt.Errorf("postgres: insert client key: %w", err)
		}
		return nil
	})
}

// clientKeyColumns are the columns scanClientKey reads, in order.
const clientKeyColumns = `id, address, hash, prefix, label, created_at, last_used_at, revoked_at`

// scanClientKey reads one row of clientKeyColumns.
func scanClientKey(row pgx.Row) (auth.ClientKeyRecord, error) {
	var k auth.ClientKeyRecord
	var created int64
	var used, revoked *int64
	if err := row.Scan(&k.ID, &k.Address, &k.Hash, &k.Prefix, &k.Label, &created, &used, &revoked); err != nil {
		return auth.ClientKeyRecord{}, err
	}
	k.CreatedAt = authTime(created)
	k.LastUsedAt = authNullTime(used)
	k.RevokedAt = authNullTime(revoked)
	return k, nil
}

// ClientKeyByHash returns the active key with this hash, or fault.NotFound.
func (s *Store) ClientKeyByHash(ctx context.Context, hash []byte) (auth.ClientKeyRecord, error) {
	k, err := scanClientKey(s.pool.QueryRow(ctx,
		`SELECT `+clientKeyColumns+` FROM client_keys WHERE hash = $1 AND revoked_at IS NULL`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.ClientKeyRecord{}, fault.New(fault.NotFound, "client key not found")
	}
	if err != nil {
		return auth.ClientKeyRecord{}, fmt.Errorf("postgres: client key by hash: %w", err)
	}
	return k, nil
}

// ListClientKeys returns the wallet's active keys, oldest first (ties by
// ID). It returns an empty, non-nil slice when there are none.
func (s *Store) ListClientKeys(ctx context.Context, address string) ([]auth.ClientKeyRecord, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+clientKeyColumns+` FROM client_keys
		 WHERE address = $1 AND revoked_at IS NULL ORDER BY created_at, id COLLATE "C"`, address)
	if err != nil {
		return nil, fmt.Errorf("postgres: list client keys: %w", err)
	}
	defer rows.Close()
	keys := []auth.ClientKeyRecord{}
	for rows.Next() {
		k, err := scanClientKey(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list client keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list client keys: %w", err)
	}
	return keys, nil
}

// RevokeClientKey revokes the wallet's active key id, or returns
// fault.NotFound if the wallet has no such active key.
func (s *Store) RevokeClientKey(ctx context.Context, address, id string, now time.Time) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE client_keys SET revoked_at = $1 WHERE id = $2 AND address = $3 AND revoked_at IS NULL`,
		authMicro(now), id, address)
	if err != nil {
		return fmt.Errorf("postgres: revoke client key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fault.New(fault.NotFound, "client key not found")
	}
	return nil
}

// TouchClientKeys raises each key's last_used_at to the given time in one
// transaction; it never moves it backwards, and ignores unknown IDs and
// zero times. Rows are updated in ID order, so concurrent batches lock
// them in the same order and cannot deadlock.
func (s *Store) TouchClientKeys(ctx context.Context, used map[string]time.Time) error {
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
	err := s.tx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, id := range ids {
			b.Queue(`UPDATE client_keys SET last_used_at = $1
			         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`,
				authMicro(used[id]), id)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: touch client keys: %w", err)
	}
	return nil
}

// authMicro is t as stored: Unix microseconds.
func authMicro(t time.Time) int64 { return t.UnixMicro() }

// authTime is the UTC time of a stored Unix-microsecond value.
func authTime(us int64) time.Time { return time.UnixMicro(us).UTC() }

// authNullMicro is t as stored in a nullable column: NULL for the zero time.
func authNullMicro(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// authNullTime reads a nullable time column: NULL is the zero time.
func authNullTime(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return authTime(*v)
}
