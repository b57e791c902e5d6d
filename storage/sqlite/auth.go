package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

var _ auth.Store = (*Store)(nil)

// The hot statements, prepared once (see stmtCache). Their text is what
// runs: keep it as it is, or measure again.
const (
	sqlMasterKeyOwner  = `SELECT address FROM master_keys WHERE hash = ?`
	sqlClientKeyByHash = `SELECT ` + clientKeyColumns + ` FROM client_keys WHERE hash = ? AND revoked_at IS NULL`
	sqlTouchClientKey  = `UPDATE client_keys SET last_used_at = ?1
			 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`
)

// CreateNonce stores a new nonce. A value that already exists is a
// fault.Conflict.
func (s *Store) CreateNonce(ctx context.Context, n auth.Nonce) error {
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO nonces (value, created_at, expires_at) VALUES (?, ?, ?)`,
			n.Value, authMicro(n.CreatedAt), authMicro(n.ExpiresAt))
		return err
	})
	if isConstraintUnique(err) {
		return fault.Wrap(err, fault.Conflict, "nonce already exists")
	}
	if err != nil {
		return fmt.Errorf("sqlite: create nonce: %w", err)
	}
	return nil
}

// ConsumeNonce marks the nonce used in one statement and returns it, even
// if it has expired; an unknown or used nonce is fault.NotFound.
func (s *Store) ConsumeNonce(ctx context.Context, value string, now time.Time) (auth.Nonce, error) {
	n := auth.Nonce{Value: value}
	var created, expires int64
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		return tx.QueryRowContext(ctx,
			`UPDATE nonces SET used_at = ? WHERE value = ? AND used_at IS NULL RETURNING created_at, expires_at`,
			authMicro(now), value).Scan(&created, &expires)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Nonce{}, fault.New(fault.NotFound, "nonce not found")
	}
	if err != nil {
		return auth.Nonce{}, fmt.Errorf("sqlite: consume nonce: %w", err)
	}
	n.CreatedAt, n.ExpiresAt = authTime(created), authTime(expires)
	return n, nil
}

// DeleteExpiredNonces removes at most limit nonces (all, for limit <= 0)
// whose expiry is at or before now, used or not, oldest first, reading
// nonces_expires_at; it returns how many it removed.
func (s *Store) DeleteExpiredNonces(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var n int64
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx,
			`DELETE FROM nonces WHERE rowid IN (SELECT rowid FROM nonces WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`,
			authMicro(now), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete expired nonces: %w", err)
	}
	return int(n), nil
}

// SetMasterKey makes hash the wallet's only master key, replacing any
// previous one in one statement.
func (s *Store) SetMasterKey(ctx context.Context, address string, hash []byte, now time.Time) error {
	defer s.keys.invalidate() // after the write, committed or not
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO master_keys (address, hash, created_at) VALUES (?, ?, ?)
			 ON CONFLICT (address) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at`,
			address, hash, authMicro(now))
		return err
	})
	if isConstraintUnique(err) {
		return fault.Wrap(err, fault.Conflict, "master key hash already in use")
	}
	if err != nil {
		return fmt.Errorf("sqlite: set master key: %w", err)
	}
	return nil
}

// MasterKeyOwner returns the address whose master key has this hash, or
// fault.NotFound.
func (s *Store) MasterKeyOwner(ctx context.Context, hash []byte) (string, error) {
	address, ok, gen := s.keys.master(hash)
	if ok {
		return address, nil
	}
	err := s.read().QueryRowContext(ctx, sqlMasterKeyOwner, hash).Scan(&address)
	if err == nil {
		s.keys.putMaster(gen, hash, address)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", fault.New(fault.NotFound, "master key not found")
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: master key owner: %w", err)
	}
	return address, nil
}

// CreateClientKey stores k if its wallet holds fewer than limit active
// keys. The count and the insert share one write transaction, and the
// store serialises write transactions (one process owns the file). At the limit it
// returns fault.Forbidden; a duplicate ID or hash is fault.Conflict.
func (s *Store) CreateClientKey(ctx context.Context, k auth.ClientKeyRecord, limit int) error {
	defer s.keys.invalidate() // after the write, committed or not
	err := s.write(ctx, func(tx *wtx) error {
		var n int
		if err := tx.QueryRowContext(ctx,
			`SELECT count(*) FROM client_keys WHERE address = ? AND revoked_at IS NULL`,
			k.Address).Scan(&n); err != nil {
			return fmt.Errorf("sqlite: count client keys: %w", err)
		}
		if n >= limit {
			return fault.New(fault.Forbidden, "client key limit reached")
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO client_keys (id, address, hash, prefix, label, created_at, last_used_at, revoked_at)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Address, k.Hash, k.Prefix, k.Label, authMicro(k.CreatedAt),
			authNullMicro(k.LastUsedAt), authNullMicro(k.RevokedAt))
		if isConstraintUnique(err) {
			return fault.Wrap(err, fault.Conflict, "client key already exists")
		}
		if err != nil {
			return fmt.Errorf("sqlite: insert client key: %w", err)
		}
		return nil
	})
	return err
}

// clientKeyColumns are the columns scanClientKey reads, in order.
const clientKeyColumns = `id, address, hash, prefix, label, created_at, last_used_at, revoked_at`

// scanClientKey reads one row of clientKeyColumns.
func scanClientKey(row interface{ Scan(...any) error }) (auth.ClientKeyRecord, error) {
	var k auth.ClientKeyRecord
	var created int64
	var used, revoked sql.NullInt64
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
	k, ok, gen := s.keys.client(hash)
	if ok {
		return k, nil
	}
	k, err := scanClientKey(s.read().QueryRowContext(ctx,
		sqlClientKeyByHash, hash))
	if err == nil {
		s.keys.putClient(gen, k)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return auth.ClientKeyRecord{}, fault.New(fault.NotFound, "client key not found")
	}
	if err != nil {
		return auth.ClientKeyRecord{}, fmt.Errorf("sqlite: client key by hash: %w", err)
	}
	return k, nil
}

// ListClientKeys returns the wallet's active keys, oldest first (ties by
// ID). It returns an empty, non-nil slice when there are none.
func (s *Store) ListClientKeys(ctx context.Context, address string) ([]auth.ClientKeyRecord, error) {
	rows, err := s.read().QueryContext(ctx,
		`SELECT `+clientKeyColumns+` FROM client_keys
		 WHERE address = ? AND revoked_at IS NULL ORDER BY created_at, id`, address)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list client keys: %w", err)
	}
	defer rows.Close()
	keys := []auth.ClientKeyRecord{}
	for rows.Next() {
		k, err := scanClientKey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list client keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list client keys: %w", err)
	}
	return keys, nil
}

// RevokeClientKey revokes the wallet's active key id, or returns
// fault.NotFound if the wallet has no such active key.
func (s *Store) RevokeClientKey(ctx context.Context, address, id string, now time.Time) error {
	var n int64
	defer s.keys.invalidate() // after the write, committed or not
	err := s.write(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE client_keys SET revoked_at = ? WHERE id = ? AND address = ? AND revoked_at IS NULL`,
			authMicro(now), id, address)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: revoke client key: %w", err)
	}
	if n == 0 {
		return fault.New(fault.NotFound, "client key not found")
	}
	return nil
}

// TouchClientKeys raises each key's last_used_at to the given time in one
// transaction; it never moves it backwards, and ignores unknown IDs and
// zero times.
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
	defer s.keys.invalidate() // after the write, committed or not
	err := s.writeRelaxed(ctx, func(tx *wtx) error {
		stmt, err := tx.prepare(ctx, sqlTouchClientKey)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := stmt.ExecContext(ctx, authMicro(used[id]), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: touch client keys: %w", err)
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
func authNullTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return authTime(v.Int64)
}

// isConstraintUnique reports whether err is a UNIQUE or PRIMARY KEY
// constraint violation.
func isConstraintUnique(err error) bool {
	var e interface{ Code() int }
	if !errors.As(err, &e) {
		return false
	}
	c := e.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
