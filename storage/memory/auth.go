package memory

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

var _ auth.Store = (*Store)(nil)

// authState holds nonces, master keys and client keys. Store.mu guards it.
type authState struct {
	nonces       map[string]authNonce            // value -> nonce
	masterByAddr map[string]string               // address -> string(hash)
	masterByHash map[string]string               // string(hash) -> address
	clientKeys   map[string]auth.ClientKeyRecord // id -> key, revoked ones included
	clientByHash map[string]string               // string(hash) -> id, revoked ones included
}

// authNonce is a stored nonce and whether it has been consumed.
type authNonce struct {
	nonce auth.Nonce
	used  bool
}

func newAuthState() authState {
	return authState{
		nonces:       make(map[string]authNonce),
		masterByAddr: make(map[string]string),
		masterByHash: make(map[string]string),
		clientKeys:   make(map[string]auth.ClientKeyRecord),
		clientByHash: make(map[string]string),
	}
}

// authTime is t as the SQL backends keep it: microsecond precision, UTC,
// the zero time unchanged.
func authTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// CreateNonce stores a new nonce. A value that already exists is a
// fault.Conflict.
func (s *Store) CreateNonce(_ context.Context, n auth.Nonce) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.auth.nonces[n.Value]; ok {
		return fault.New(fault.Conflict, "nonce already exists")
	}
	n.CreatedAt, n.ExpiresAt = authTime(n.CreatedAt), authTime(n.ExpiresAt)
	s.auth.nonces[n.Value] = authNonce{nonce: n}
	return nil
}

// ConsumeNonce marks the nonce used and returns it, even if it has
// expired; an unknown or used nonce is fault.NotFound.
func (s *Store) ConsumeNonce(_ context.Context, value string, _ time.Time) (auth.Nonce, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.auth.nonces[value]
	if !ok || e.used {
		return auth.Nonce{}, fault.New(fault.NotFound, "nonce not found")
	}
	e.used = true
	s.auth.nonces[value] = e
	return e.nonce, nil
}

// DeleteExpiredNonces removes at most limit nonces (all, for limit <= 0)
// whose expiry is at or before now, used or not, and returns how many it
// removed.
func (s *Store) DeleteExpiredNonces(_ context.Context, now time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cutoff := authTime(now)
	n := 0
	for v, e := range s.auth.nonces {
		if limit > 0 && n >= limit {
			break
		}
		if !e.nonce.ExpiresAt.After(cutoff) {
			delete(s.auth.nonces, v)
			n++
		}
	}
	return n, nil
}

// SetMasterKey makes hash the wallet's only master key, replacing any
// previous one.
func (s *Store) SetMasterKey(_ context.Context, address string, hash []byte, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := string(hash)
	if owner, ok := s.auth.masterByHash[h]; ok && owner != address {
		return fault.New(fault.Conflict, "master key hash already in use")
	}
	if old, ok := s.auth.masterByAddr[address]; ok {
		delete(s.auth.masterByHash, old)
	}
	s.auth.masterByAddr[address] = h
	s.auth.masterByHash[h] = address
	return nil
}

// MasterKeyOwner returns the address whose master key has this hash, or
// fault.NotFound.
func (s *Store) MasterKeyOwner(_ context.Context, hash []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	address, ok := s.auth.masterByHash[string(hash)]
	if !ok {
		return "", fault.New(fault.NotFound, "master key not found")
	}
	return address, nil
}

// copyClientKey returns k with its own copy of the hash.
func copyClientKey(k auth.ClientKeyRecord) auth.ClientKeyRecord {
	k.Hash = bytes.Clone(k.Hash)
	return k
}

// CreateClientKey stores k if its wallet holds fewer than limit active
// keys. At the limit it returns fault.Forbidden; a duplicate ID or hash is
// fault.Conflict.
func (s *Store) CreateClientKey(_ context.Context, k auth.ClientKeyRecord, limit int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	active := 0
	for _, c := range s.auth.clientKeys {
		if c.Address == k.Address && c.RevokedAt.IsZero() {
			active++
		}
	}
	if active >= limit {
		return fault.New(fault.Forbidden, "client key limit reached")
	}
	if _, ok := s.auth.clientKeys[k.ID]; ok {
		return fault.New(fault.Conflict, "client key already exists")
	}
	if _, ok := s.auth.clientByHash[string(k.Hash)]; ok {
		return fault.New(fault.Conflict, "client key already exists")
	}
	k = copyClientKey(k)
	k.CreatedAt = authTime(k.CreatedAt)
	k.LastUsedAt = authTime(k.LastUsedAt)
	k.RevokedAt = authTime(k.RevokedAt)
	s.auth.clientKeys[k.ID] = k
	s.auth.clientByHash[string(k.Hash)] = k.ID
	return nil
}

// ClientKeyByHash returns the active key with this hash, or fault.NotFound.
func (s *Store) ClientKeyByHash(_ context.Context, hash []byte) (auth.ClientKeyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.auth.clientByHash[string(hash)]
	if !ok {
		return auth.ClientKeyRecord{}, fault.New(fault.NotFound, "client key not found")
	}
	k := s.auth.clientKeys[id]
	if !k.RevokedAt.IsZero() {
		return auth.ClientKeyRecord{}, fault.New(fault.NotFound, "client key not found")
	}
	return copyClientKey(k), nil
}

// ListClientKeys returns the wallet's active keys, oldest first (ties by
// ID). It returns an empty, non-nil slice when there are none.
func (s *Store) ListClientKeys(_ context.Context, address string) ([]auth.ClientKeyRecord, error) {
	s.mu.Lock()
	keys := []auth.ClientKeyRecord{}
	for _, k := range s.auth.clientKeys {
		if k.Address == address && k.RevokedAt.IsZero() {
			keys = append(keys, copyClientKey(k))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(keys, func(a, b auth.ClientKeyRecord) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

// RevokeClientKey revokes the wallet's active key id, or returns
// fault.NotFound if the wallet has no such active key.
func (s *Store) RevokeClientKey(_ context.Context, address, id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.auth.clientKeys[id]
	if !ok || k.Address != address || !k.RevokedAt.IsZero() {
		return fault.New(fault.NotFound, "client key not found")
	}
	k.RevokedAt = authTime(now)
	if k.RevokedAt.IsZero() {
		// A zero revocation time would read as active; keep the key revoked.
		k.RevokedAt = time.UnixMicro(0).UTC()
	}
	s.auth.clientKeys[id] = k
	return nil
}

// TouchClientKeys raises each key's last_used_at to the given time; it
// never moves it backwards, and ignores unknown IDs and zero times.
func (s *Store) TouchClientKeys(_ context.Context, used map[string]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range used {
		k, ok := s.auth.clientKeys[id]
		if !ok || t.IsZero() {
			continue
		}
		if t = authTime(t); t.After(k.LastUsedAt) {
			k.LastUsedAt = t
			s.auth.clientKeys[id] = k
		}
	}
	return nil
}
