// Package auth implements wallet login and API keys.
//
// A wallet proves control of its address by signing a one-time nonce with
// EIP-191 personal_sign (see [Service.Challenge] and [Service.Verify]) and
// receives a master key, pct-m- followed by 64 hex digits. With the master
// key it manages client keys, pct- followed by 64 hex digits, which are what
// agents use. Only the SHA-256 hash of a key is stored.
//
// Decisions where the API reference is silent:
//
//   - A wallet has at most one master key. Each successful login issues a
//     new master key and revokes the previous one at once, as
//     regenerate-master-key does; client keys stay valid. A login from a
//     second place therefore logs the first place out: the master key is a
//     root credential, and one live copy is easier to reason about than many.
//   - The signed text is exactly the nonce string. The server rebuilds it from
//     the stored nonce; it never trusts a message sent by the client.
//   - Signatures must be 65 bytes (r, s, v) with v in {0, 1, 27, 28} and a
//     low s value (EIP-2); anything else fails as "signature verification
//     failed".
//   - Nonces are consumed atomically by the store: of two concurrent verifies
//     of one nonce, exactly one proceeds, also across server processes
//     sharing one PostgreSQL database. A consumed nonce is never reusable,
//     even if its signature was wrong.
//   - Revoked client keys stop working on the next request: the service
//     caches no key lookups, and a store that does (SQLite caches them,
//     since one process owns its file) drops an entry when its key is
//     revoked, before the revocation returns. last_used_at is tracked in
//     memory and written to the
//     store in batches (see [Service.FlushUsage]); listings merge both.
//   - Revocation reaches what is already open, on every process: revoking
//     a client key, and a login or regenerate-master-key replacing a
//     master key (the old master key is revoked like a client key), are
//     published as events (package events: [events.KeyRevoked],
//     [events.MasterKeyReplaced]) after the store has the change. The
//     platform closes, on each process, the persona streams and tunnels
//     opened with the revoked key ([Revokes] says which); a persona
//     stream also re-authenticates its key on every message it receives,
//     and a tunnel's key is checked again when it connects
//     ([Service.CredentialActive]). Keys do not expire, so only
//     revocation ends them.
//   - Labels are counted in Unicode characters; a missing label is empty.
package auth

import (
	"context"
	"time"
)

// Key kinds and formats.
const (
	// MasterKeyPrefix starts every master key.
	MasterKeyPrefix = "pct-m-"
	// ClientKeyPrefix starts every client key.
	ClientKeyPrefix = "pct-"
	// MasterKeyLen is the length of a master key: prefix plus 64 hex digits.
	MasterKeyLen = len(MasterKeyPrefix) + 64
	// ClientKeyLen is the length of a client key: prefix plus 64 hex digits.
	ClientKeyLen = len(ClientKeyPrefix) + 64
	// KeyPrefixLen is how many leading characters of a client key are shown.
	KeyPrefixLen = 8
	// NonceTTL is how long a challenge nonce may be used.
	NonceTTL = 5 * time.Minute
	// MaxLabelLen is the longest label, in characters.
	MaxLabelLen = 64
	// KeysWithoutPurchase is how many client keys a wallet may hold before
	// its first completed credit purchase.
	KeysWithoutPurchase = 2
	// KeysWithPurchase is how many client keys a wallet may hold after it.
	KeysWithPurchase = 50
)

// KeyKind says which kind of key authenticated a request.
type KeyKind int

const (
	// MasterKey is the wallet's root credential.
	MasterKey KeyKind = iota + 1
	// ClientKey is a key generated for an agent or script.
	ClientKey
)

// String returns "master" or "client".
func (k KeyKind) String() string {
	switch k {
	case MasterKey:
		return "master"
	case ClientKey:
		return "client"
	}
	return "none"
}

// Principal is who a request acts for.
type Principal struct {
	// Address is the wallet's address, lowercase 0x-prefixed hex.
	Address string
	// Kind is the kind of key used.
	Kind KeyKind
	// KeyID is the client key's ID; empty for a master key.
	KeyID string
	// Credential names the key that authenticated, for revocation (see
	// [Revokes]): the client key's ID, or for a master key
	// [MasterCredentialPrefix] and the hex SHA-256 of the key (the hash
	// the store keeps; it reveals nothing of the key).
	Credential string
}

// MasterCredentialPrefix starts a master key's credential ID.
const MasterCredentialPrefix = "master:"

// IsMaster reports whether the principal authenticated with a master key.
func (p Principal) IsMaster() bool { return p.Kind == MasterKey }

// Nonce is a login challenge.
type Nonce struct {
	// Value is the UUID the wallet signs.
	Value string
	// CreatedAt is when it was issued.
	CreatedAt time.Time
	// ExpiresAt is when it stops being valid.
	ExpiresAt time.Time
}

// ClientKeyRecord is a stored client key. The secret itself is never stored.
type ClientKeyRecord struct {
	// ID is the key's UUID.
	ID string
	// Address owns the key (lowercase hex).
	Address string
	// Hash is the SHA-256 of the full key.
	Hash []byte
	// Prefix is the first [KeyPrefixLen] characters of the key.
	Prefix string
	// Label is the owner's name for the key.
	Label string
	// CreatedAt is when the key was generated.
	CreatedAt time.Time
	// LastUsedAt is when the key last authenticated a request; zero if never.
	LastUsedAt time.Time
	// RevokedAt is when the key was revoked; zero while active.
	RevokedAt time.Time
}

// Challenge is what [Service.Challenge] returns.
type Challenge struct {
	Nonce     string
	ExpiresAt time.Time
}

// Login is what [Service.Verify] and [Service.RegenerateMasterKey] return.
type Login struct {
	// MasterKey is the new secret; it is shown once.
	MasterKey string
	// Address is the wallet's lowercase address.
	Address string
}

// NewClientKey is what [Service.GenerateClientKey] returns.
type NewClientKey struct {
	// Key is the full secret; it is shown once.
	Key string
	// Record describes the stored key.
	Record ClientKeyRecord
}

// NonceStore keeps login challenges.
type NonceStore interface {
	// CreateNonce stores a new nonce.
	CreateNonce(ctx context.Context, n Nonce) error
	// ConsumeNonce marks the nonce used, atomically: of concurrent calls with
	// one value, at most one succeeds. It returns the nonce as stored (the
	// caller checks ExpiresAt) or an error with code fault.NotFound when the
	// value is unknown or already used.
	ConsumeNonce(ctx context.Context, value string, now time.Time) (Nonce, error)
	// DeleteExpiredNonces removes at most limit nonces (all, if limit is
	// 0 or less) whose expiry is at or before now, used or not, and
	// returns how many it removed. A limit keeps each call one short
	// transaction however many nonces a flood of challenges left.
	DeleteExpiredNonces(ctx context.Context, now time.Time, limit int) (int, error)
}

// MasterKeyStore keeps each wallet's single master key hash.
type MasterKeyStore interface {
	// SetMasterKey makes hash the wallet's only valid master key, replacing
	// any previous one atomically.
	SetMasterKey(ctx context.Context, address string, hash []byte, now time.Time) error
	// MasterKeyOwner returns the address whose master key has this hash, or
	// fault.NotFound.
	MasterKeyOwner(ctx context.Context, hash []byte) (string, error)
}

// ClientKeyStore keeps client keys.
type ClientKeyStore interface {
	// CreateClientKey stores k if the wallet holds fewer than limit active
	// keys, checking and inserting atomically (also across processes). At
	// the limit it returns fault.Forbidden.
	CreateClientKey(ctx context.Context, k ClientKeyRecord, limit int) error
	// ClientKeyByHash returns the active key with this hash, or fault.NotFound.
	ClientKeyByHash(ctx context.Context, hash []byte) (ClientKeyRecord, error)
	// ListClientKeys returns the wallet's active keys, oldest first.
	ListClientKeys(ctx context.Context, address string) ([]ClientKeyRecord, error)
	// RevokeClientKey revokes the wallet's active key id, or returns
	// fault.NotFound if the wallet has no such active key.
	RevokeClientKey(ctx context.Context, address, id string, now time.Time) error
	// TouchClientKeys raises each key's last_used_at to the given time; it
	// never moves it backwards. Unknown IDs are ignored.
	TouchClientKeys(ctx context.Context, used map[string]time.Time) error
}

// Store is everything auth keeps.
type Store interface {
	NonceStore
	MasterKeyStore
	ClientKeyStore
}

// PurchaseChecker tells whether a wallet has completed a credit purchase,
// which raises its client key limit. The billing package implements it.
type PurchaseChecker interface {
	HasCompletedPurchase(ctx context.Context, address string) (bool, error)
}

// NoPurchases is a [PurchaseChecker] for which no wallet has purchased.
type NoPurchases struct{}

// HasCompletedPurchase always returns false.
func (NoPurchases) HasCompletedPurchase(context.Context, string) (bool, error) { return false, nil }
