package sqlite

import (
	"context"
	"errors"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/perceptron-cloud/perceptron/auth"
)

var _ auth.Store = (*Store)(nil)

// The auth store is the shared one (sqlstore.Auth, embedded in Store),
// with one addition: this process owns the file, so key lookups are
// cached (keyCache), and every write that could change what a lookup
// returns drops the cache after it, committed or not. The methods below
// wrap the shared ones for that; the others are promoted as they are.

// SetMasterKey makes hash the wallet's only master key.
func (s *Store) SetMasterKey(ctx context.Context, address string, hash []byte, now time.Time) error {
	defer s.keys.invalidate()
	return s.Auth.SetMasterKey(ctx, address, hash, now)
}

// MasterKeyOwner returns the address whose master key has this hash, or
// fault.NotFound; from the cache when it has it.
func (s *Store) MasterKeyOwner(ctx context.Context, hash []byte) (string, error) {
	address, ok, gen := s.keys.master(hash)
	if ok {
		return address, nil
	}
	address, err := s.Auth.MasterKeyOwner(ctx, hash)
	if err == nil {
		s.keys.putMaster(gen, hash, address)
	}
	return address, err
}

// CreateClientKey stores k if its wallet holds fewer than limit active
// keys (the store's write transactions take turns).
func (s *Store) CreateClientKey(ctx context.Context, k auth.ClientKeyRecord, limit int) error {
	defer s.keys.invalidate()
	return s.Auth.CreateClientKey(ctx, k, limit)
}

// ClientKeyByHash returns the active key with this hash, or
// fault.NotFound; from the cache when it has it.
func (s *Store) ClientKeyByHash(ctx context.Context, hash []byte) (auth.ClientKeyRecord, error) {
	k, ok, gen := s.keys.client(hash)
	if ok {
		return k, nil
	}
	k, err := s.Auth.ClientKeyByHash(ctx, hash)
	if err == nil {
		s.keys.putClient(gen, k)
	}
	return k, err
}

// RevokeClientKey revokes the wallet's active key id; the cache forgets
// it before this returns.
func (s *Store) RevokeClientKey(ctx context.Context, address, id string, now time.Time) error {
	defer s.keys.invalidate()
	return s.Auth.RevokeClientKey(ctx, address, id, now)
}

// TouchClientKeys raises each key's last_used_at to the given time.
func (s *Store) TouchClientKeys(ctx context.Context, used map[string]time.Time) error {
	defer s.keys.invalidate()
	return s.Auth.TouchClientKeys(ctx, used)
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
