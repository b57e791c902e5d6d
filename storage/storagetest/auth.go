package storagetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Wallet addresses the auth suite uses (lowercase, as the service stores them).
const (
	authWalletA = "0x00000000000000000000000000000000000000aa"
	authWalletB = "0x00000000000000000000000000000000000000bb"
)

// authNow returns the suite's "now". It has nanoseconds and a non-UTC zone, so
// backends must convert and may truncate to microseconds.
func authNow() time.Time {
	return time.Date(2031, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*60*60))
}

// TestAuthStore checks auth.Store: nonces, master keys and client keys,
// including the races the contracts promise to win (one consumer per
// nonce, the client key limit) across two handles on one database.
func TestAuthStore(t *testing.T, f Factory) {
	t.Run("Nonces", func(t *testing.T) { testNonces(t, f) })
	t.Run("NonceRace", func(t *testing.T) { testNonceRace(t, f) })
	t.Run("DeleteExpiredNonces", func(t *testing.T) { testDeleteExpiredNonces(t, f) })
	t.Run("MasterKeys", func(t *testing.T) { testMasterKeys(t, f) })
	t.Run("ClientKeys", func(t *testing.T) { testClientKeys(t, f) })
	t.Run("RevokeClientKey", func(t *testing.T) { testRevokeClientKey(t, f) })
	t.Run("ClientKeyLimit", func(t *testing.T) { testClientKeyLimit(t, f) })
	t.Run("ClientKeyLimitRace", func(t *testing.T) { testClientKeyLimitRace(t, f) })
	t.Run("TouchClientKeys", func(t *testing.T) { testTouchClientKeys(t, f) })
}

// requireAuthTime asserts that got is want at microsecond precision, the
// precision every backend stores.
func requireAuthTime(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	if want.IsZero() {
		require.Truef(t, got.IsZero(), "%s: want zero time, got %v", what, got)
		return
	}
	require.WithinDurationf(t, want, got, time.Microsecond, "%s", what)
}

// requireFault asserts that err carries code c.
func requireFault(t *testing.T, err error, c fault.Code, what string) {
	t.Helper()
	require.Errorf(t, err, "%s: want %v, got success", what, c)
	require.Truef(t, errors.Is(err, c), "%s: want %v, got %v (code %v)", what, c, err, fault.CodeOf(err))
}

// newAuthNonce returns a nonce issued at created that expires after ttl.
func newAuthNonce(created time.Time, ttl time.Duration) auth.Nonce {
	return auth.Nonce{Value: uuid.NewString(), CreatedAt: created, ExpiresAt: created.Add(ttl)}
}

func testNonces(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()

	n := newAuthNonce(now, auth.NonceTTL)
	require.NoError(t, a.CreateNonce(ctx, n))
	requireFault(t, a.CreateNonce(ctx, n), fault.Conflict, "creating a nonce twice")

	// Consumed through the other handle: stores are shared.
	got, err := b.ConsumeNonce(ctx, n.Value, now.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, n.Value, got.Value)
	requireAuthTime(t, n.CreatedAt, got.CreatedAt, "CreatedAt")
	requireAuthTime(t, n.ExpiresAt, got.ExpiresAt, "ExpiresAt")

	_, err = a.ConsumeNonce(ctx, n.Value, now.Add(2*time.Second))
	requireFault(t, err, fault.NotFound, "consuming a used nonce")
	_, err = b.ConsumeNonce(ctx, n.Value, now.Add(2*time.Second))
	requireFault(t, err, fault.NotFound, "consuming a used nonce on another handle")

	_, err = a.ConsumeNonce(ctx, uuid.NewString(), now)
	requireFault(t, err, fault.NotFound, "consuming an unknown nonce")
	_, err = a.ConsumeNonce(ctx, "", now)
	requireFault(t, err, fault.NotFound, "consuming an empty nonce")

	// An expired nonce is still returned, once, so the caller can tell
	// "expired" from "unknown".
	old := newAuthNonce(now.Add(-time.Hour), auth.NonceTTL)
	require.NoError(t, a.CreateNonce(ctx, old))
	got, err = a.ConsumeNonce(ctx, old.Value, now)
	require.NoError(t, err, "an expired nonce is returned for the caller to check")
	require.Equal(t, old.Value, got.Value)
	requireAuthTime(t, old.ExpiresAt, got.ExpiresAt, "expired nonce ExpiresAt")
	require.False(t, now.Before(got.ExpiresAt), "the returned nonce must show it has expired")
	_, err = a.ConsumeNonce(ctx, old.Value, now)
	requireFault(t, err, fault.NotFound, "consuming an expired nonce twice")

	// Nonces are independent of each other.
	n1, n2 := newAuthNonce(now, auth.NonceTTL), newAuthNonce(now, auth.NonceTTL)
	require.NoError(t, a.CreateNonce(ctx, n1))
	require.NoError(t, b.CreateNonce(ctx, n2))
	_, err = a.ConsumeNonce(ctx, n2.Value, now)
	require.NoError(t, err)
	got, err = b.ConsumeNonce(ctx, n1.Value, now)
	require.NoError(t, err)
	require.Equal(t, n1.Value, got.Value)
}

func testNonceRace(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	handles := []auth.Store{as[auth.Store](t, open(t)), as[auth.Store](t, open(t))}
	const rounds, racers = 5, 16
	for round := range rounds {
		n := newAuthNonce(authNow(), auth.NonceTTL)
		require.NoError(t, handles[round%2].CreateNonce(ctx, n))

		start := make(chan struct{})
		errs := make([]error, racers)
		vals := make([]string, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got, err := handles[i%2].ConsumeNonce(ctx, n.Value, authNow().Add(time.Second))
				errs[i], vals[i] = err, got.Value
			}()
		}
		close(start)
		wg.Wait()

		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
				require.Equal(t, n.Value, vals[i], "round %d: winner's nonce", round)
			case errors.Is(err, fault.NotFound):
			default:
				t.Fatalf("round %d: racer %d: want success or not found, got %v", round, i, err)
			}
		}
		require.Equalf(t, 1, won, "round %d: exactly one of %d concurrent consumers must win", round, racers)
	}
}

func testDeleteExpiredNonces(t *testing.T, f Factory) {
	ctx := context.Background()
	s := as[auth.Store](t, fresh(t, f))
	now := authNow()

	n, err := s.DeleteExpiredNonces(ctx, now, 0)
	require.NoError(t, err)
	require.Zero(t, n, "nothing to delete in an empty store")

	live := newAuthNonce(now, auth.NonceTTL)
	expired := newAuthNonce(now.Add(-time.Hour), auth.NonceTTL)
	usedExpired := newAuthNonce(now.Add(-2*time.Hour), auth.NonceTTL)
	usedLive := newAuthNonce(now.Add(-time.Minute), auth.NonceTTL)
	for _, x := range []auth.Nonce{live, expired, usedExpired, usedLive} {
		require.NoError(t, s.CreateNonce(ctx, x))
	}
	_, err = s.ConsumeNonce(ctx, usedExpired.Value, now)
	require.NoError(t, err)
	_, err = s.ConsumeNonce(ctx, usedLive.Value, now)
	require.NoError(t, err)

	n, err = s.DeleteExpiredNonces(ctx, now, 0)
	require.NoError(t, err)
	require.Equal(t, 2, n, "both expired nonces, used or not, are deleted")

	_, err = s.ConsumeNonce(ctx, expired.Value, now)
	requireFault(t, err, fault.NotFound, "consuming a deleted nonce")
	_, err = s.ConsumeNonce(ctx, usedLive.Value, now)
	requireFault(t, err, fault.NotFound, "a used live nonce stays used")
	got, err := s.ConsumeNonce(ctx, live.Value, now)
	require.NoError(t, err, "a live nonce survives the sweep")
	require.Equal(t, live.Value, got.Value)

	n, err = s.DeleteExpiredNonces(ctx, now, 0)
	require.NoError(t, err)
	require.Zero(t, n, "a second sweep finds nothing")

	n, err = s.DeleteExpiredNonces(ctx, now.Add(auth.NonceTTL+time.Second), 0)
	require.NoError(t, err)
	require.Equal(t, 2, n, "later, the remaining nonces expire too")

	// In batches: at most limit a call, until none is left.
	for i := range 25 {
		require.NoError(t, s.CreateNonce(ctx, newAuthNonce(now.Add(-time.Duration(i+1)*time.Minute), auth.NonceTTL)))
	}
	keep := newAuthNonce(now, auth.NonceTTL)
	require.NoError(t, s.CreateNonce(ctx, keep))
	var batches []int
	for {
		n, err := s.DeleteExpiredNonces(ctx, now.Add(auth.NonceTTL-time.Second), 10)
		require.NoError(t, err)
		batches = append(batches, n)
		if n < 10 {
			break
		}
	}
	require.Equal(t, []int{10, 10, 5}, batches, "batches of at most 10")
	_, err = s.ConsumeNonce(ctx, keep.Value, now)
	require.NoError(t, err, "the nonce that has not expired is left")
}

// authKeyHash returns a distinct 32-byte hash for name.
func authKeyHash(name string) []byte {
	h := sha256.Sum256([]byte(name))
	return h[:]
}

func testMasterKeys(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()
	h1, h2, h3, h4 := authKeyHash("m1"), authKeyHash("m2"), authKeyHash("m3"), authKeyHash("m4")

	_, err := a.MasterKeyOwner(ctx, h1)
	requireFault(t, err, fault.NotFound, "owner of an unknown master key")

	require.NoError(t, a.SetMasterKey(ctx, authWalletA, h1, now))
	owner, err := b.MasterKeyOwner(ctx, h1)
	require.NoError(t, err)
	require.Equal(t, authWalletA, owner)

	// A new key replaces the old one at once.
	require.NoError(t, b.SetMasterKey(ctx, authWalletA, h2, now.Add(time.Minute)))
	_, err = a.MasterKeyOwner(ctx, h1)
	requireFault(t, err, fault.NotFound, "owner of a replaced master key")
	owner, err = a.MasterKeyOwner(ctx, h2)
	require.NoError(t, err)
	require.Equal(t, authWalletA, owner)

	// Wallets are independent.
	require.NoError(t, a.SetMasterKey(ctx, authWalletB, h3, now))
	owner, err = a.MasterKeyOwner(ctx, h3)
	require.NoError(t, err)
	require.Equal(t, authWalletB, owner)
	owner, err = a.MasterKeyOwner(ctx, h2)
	require.NoError(t, err)
	require.Equal(t, authWalletA, owner, "another wallet's login leaves this one's key alone")

	require.NoError(t, a.SetMasterKey(ctx, authWalletB, h4, now.Add(time.Minute)))
	_, err = a.MasterKeyOwner(ctx, h3)
	requireFault(t, err, fault.NotFound, "owner of wallet B's replaced key")
	owner, err = a.MasterKeyOwner(ctx, h2)
	require.NoError(t, err)
	require.Equal(t, authWalletA, owner)

	// Setting the same key again is harmless.
	require.NoError(t, a.SetMasterKey(ctx, authWalletA, h2, now.Add(2*time.Minute)))
	owner, err = a.MasterKeyOwner(ctx, h2)
	require.NoError(t, err)
	require.Equal(t, authWalletA, owner)

	// The store keeps its own copy of the hash.
	h5 := authKeyHash("m5")
	require.NoError(t, a.SetMasterKey(ctx, authWalletA, h5, now))
	h5[0] ^= 0xff
	owner, err = a.MasterKeyOwner(ctx, authKeyHash("m5"))
	require.NoError(t, err, "mutating the caller's slice must not change the stored hash")
	require.Equal(t, authWalletA, owner)
}

// newAuthClientKey returns an active, never used key for address created at.
func newAuthClientKey(address string, created time.Time, label string) auth.ClientKeyRecord {
	id := uuid.NewString()
	return auth.ClientKeyRecord{
		ID:        id,
		Address:   address,
		Hash:      authKeyHash("client " + id),
		Prefix:    "pct-" + id[:4],
		Label:     label,
		CreatedAt: created,
	}
}

// requireSameClientKey asserts that got is want as stored.
func requireSameClientKey(t *testing.T, want, got auth.ClientKeyRecord) {
	t.Helper()
	require.Equal(t, want.ID, got.ID, "ID")
	require.Equal(t, want.Address, got.Address, "Address")
	require.Equal(t, want.Hash, got.Hash, "Hash")
	require.Equal(t, want.Prefix, got.Prefix, "Prefix")
	require.Equal(t, want.Label, got.Label, "Label")
	requireAuthTime(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	requireAuthTime(t, want.LastUsedAt, got.LastUsedAt, "LastUsedAt")
	requireAuthTime(t, want.RevokedAt, got.RevokedAt, "RevokedAt")
}

// clientKeyIDs returns the IDs of keys, in order.
func clientKeyIDs(keys []auth.ClientKeyRecord) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

func testClientKeys(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()

	keys, err := a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Empty(t, keys)
	_, err = a.ClientKeyByHash(ctx, authKeyHash("nothing"))
	requireFault(t, err, fault.NotFound, "unknown client key hash")

	// Created out of order; two share a creation time, so the ID breaks the tie.
	k3 := newAuthClientKey(authWalletA, now.Add(2*time.Second), "third")
	k1 := newAuthClientKey(authWalletA, now, "first — ünïcode label")
	k2 := newAuthClientKey(authWalletA, now, "second")
	if k2.ID < k1.ID {
		k1, k2 = k2, k1
	}
	k1.Label, k2.Label = "first — ünïcode label", "" // an empty label is allowed
	other := newAuthClientKey(authWalletB, now.Add(-time.Hour), "b's key")
	for _, k := range []auth.ClientKeyRecord{k3, k1, k2} {
		require.NoError(t, a.CreateClientKey(ctx, k, 10))
	}
	require.NoError(t, b.CreateClientKey(ctx, other, 10))

	for _, k := range []auth.ClientKeyRecord{k1, k2, k3, other} {
		got, err := b.ClientKeyByHash(ctx, k.Hash)
		require.NoError(t, err, "key %s by hash", k.Label)
		requireSameClientKey(t, k, got)
	}

	keys, err = b.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Equal(t, []string{k1.ID, k2.ID, k3.ID}, clientKeyIDs(keys), "oldest first, ties by ID")
	for i, want := range []auth.ClientKeyRecord{k1, k2, k3} {
		requireSameClientKey(t, want, keys[i])
	}
	keys, err = a.ListClientKeys(ctx, authWalletB)
	require.NoError(t, err)
	require.Equal(t, []string{other.ID}, clientKeyIDs(keys), "wallet B sees only its key")
	keys, err = a.ListClientKeys(ctx, "0x00000000000000000000000000000000000000cc")
	require.NoError(t, err)
	require.Empty(t, keys)

	// A duplicate ID or hash is refused and changes nothing.
	dupID := newAuthClientKey(authWalletA, now, "dup id")
	dupID.ID = k1.ID
	require.Error(t, a.CreateClientKey(ctx, dupID, 10), "duplicate ID")
	dupHash := newAuthClientKey(authWalletB, now, "dup hash")
	dupHash.Hash = k2.Hash
	require.Error(t, a.CreateClientKey(ctx, dupHash, 10), "duplicate hash")
	got, err := a.ClientKeyByHash(ctx, k2.Hash)
	require.NoError(t, err)
	requireSameClientKey(t, k2, got)
	keys, err = a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Len(t, keys, 3)

	// Callers cannot change stored keys through slices they pass or get.
	k4 := newAuthClientKey(authWalletB, now.Add(time.Hour), "mutable")
	in := k4
	in.Hash = append([]byte(nil), k4.Hash...)
	require.NoError(t, a.CreateClientKey(ctx, in, 10))
	in.Hash[0] ^= 0xff
	got, err = a.ClientKeyByHash(ctx, k4.Hash)
	require.NoError(t, err, "mutating the caller's hash must not change the stored one")
	got.Hash[1] ^= 0xff
	keys, err = a.ListClientKeys(ctx, authWalletB)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	keys[1].Hash[2] ^= 0xff
	keys[1].Label = "changed"
	got, err = a.ClientKeyByHash(ctx, k4.Hash)
	require.NoError(t, err)
	requireSameClientKey(t, k4, got)
}

func testRevokeClientKey(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()

	k1 := newAuthClientKey(authWalletA, now, "one")
	k2 := newAuthClientKey(authWalletA, now.Add(time.Second), "two")
	kb := newAuthClientKey(authWalletB, now, "b")
	for _, k := range []auth.ClientKeyRecord{k1, k2, kb} {
		require.NoError(t, a.CreateClientKey(ctx, k, 10))
	}

	requireFault(t, a.RevokeClientKey(ctx, authWalletB, k1.ID, now), fault.NotFound, "revoking another wallet's key")
	requireFault(t, a.RevokeClientKey(ctx, authWalletA, uuid.NewString(), now), fault.NotFound, "revoking an unknown key")
	_, err := a.ClientKeyByHash(ctx, k1.Hash)
	require.NoError(t, err, "a failed revoke leaves the key active")

	require.NoError(t, b.RevokeClientKey(ctx, authWalletA, k1.ID, now.Add(time.Minute)))
	requireFault(t, a.RevokeClientKey(ctx, authWalletA, k1.ID, now.Add(2*time.Minute)), fault.NotFound, "revoking a key twice")

	_, err = a.ClientKeyByHash(ctx, k1.Hash)
	requireFault(t, err, fault.NotFound, "a revoked key by hash")
	_, err = b.ClientKeyByHash(ctx, k1.Hash)
	requireFault(t, err, fault.NotFound, "a revoked key by hash on the other handle")
	keys, err := a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Equal(t, []string{k2.ID}, clientKeyIDs(keys), "a revoked key is not listed")
	got, err := a.ClientKeyByHash(ctx, k2.Hash)
	require.NoError(t, err, "other keys of the wallet stay active")
	requireSameClientKey(t, k2, got)
	got, err = a.ClientKeyByHash(ctx, kb.Hash)
	require.NoError(t, err, "other wallets' keys stay active")
	requireSameClientKey(t, kb, got)

	// A revoked key's hash stays taken: it can never be reactivated.
	again := newAuthClientKey(authWalletA, now, "again")
	again.Hash = k1.Hash
	require.Error(t, a.CreateClientKey(ctx, again, 10), "reusing a revoked key's hash")
	_, err = a.ClientKeyByHash(ctx, k1.Hash)
	requireFault(t, err, fault.NotFound, "a revoked key stays revoked")
}

func testClientKeyLimit(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()
	const limit = 2

	k1 := newAuthClientKey(authWalletA, now, "1")
	k2 := newAuthClientKey(authWalletA, now.Add(time.Second), "2")
	require.NoError(t, a.CreateClientKey(ctx, k1, limit))
	require.NoError(t, b.CreateClientKey(ctx, k2, limit))

	k3 := newAuthClientKey(authWalletA, now.Add(2*time.Second), "3")
	requireFault(t, a.CreateClientKey(ctx, k3, limit), fault.Forbidden, "a key beyond the limit")
	requireFault(t, b.CreateClientKey(ctx, k3, limit), fault.Forbidden, "a key beyond the limit on the other handle")
	_, err := a.ClientKeyByHash(ctx, k3.Hash)
	requireFault(t, err, fault.NotFound, "a refused key is not stored")

	// The limit is per wallet.
	require.NoError(t, a.CreateClientKey(ctx, newAuthClientKey(authWalletB, now, "b1"), limit))
	require.NoError(t, a.CreateClientKey(ctx, newAuthClientKey(authWalletB, now, "b2"), limit))

	// A higher limit (after a purchase) admits more.
	require.NoError(t, a.CreateClientKey(ctx, k3, limit+1))
	keys, err := a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Equal(t, []string{k1.ID, k2.ID, k3.ID}, clientKeyIDs(keys))

	// Revoked keys do not count.
	require.NoError(t, a.RevokeClientKey(ctx, authWalletA, k1.ID, now))
	require.NoError(t, a.RevokeClientKey(ctx, authWalletA, k2.ID, now))
	k4 := newAuthClientKey(authWalletA, now.Add(3*time.Second), "4")
	require.NoError(t, b.CreateClientKey(ctx, k4, limit), "revoked keys must not count against the limit")
	k5 := newAuthClientKey(authWalletA, now.Add(4*time.Second), "5")
	requireFault(t, a.CreateClientKey(ctx, k5, limit), fault.Forbidden, "at the limit again")
	keys, err = a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Equal(t, []string{k3.ID, k4.ID}, clientKeyIDs(keys))

	// A limit of zero admits nothing.
	requireFault(t, a.CreateClientKey(ctx, newAuthClientKey(authWalletB, now, "none"), 0), fault.Forbidden, "limit zero")
}

func testClientKeyLimitRace(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	handles := []auth.Store{as[auth.Store](t, open(t)), as[auth.Store](t, open(t))}
	const racers, limit = 20, 5

	start := make(chan struct{})
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := newAuthClientKey(authWalletA, authNow().Add(time.Duration(i)*time.Second), fmt.Sprintf("racer %d", i))
			<-start
			errs[i] = handles[i%2].CreateClientKey(ctx, k, limit)
		}()
	}
	close(start)
	wg.Wait()

	created := 0
	for i, err := range errs {
		switch {
		case err == nil:
			created++
		case errors.Is(err, fault.Forbidden):
		default:
			t.Fatalf("racer %d: want success or forbidden, got %v", i, err)
		}
	}
	require.Equal(t, limit, created, "exactly limit of %d concurrent creations may succeed", racers)
	for _, h := range handles {
		keys, err := h.ListClientKeys(ctx, authWalletA)
		require.NoError(t, err)
		require.Len(t, keys, limit)
	}
}

func testTouchClientKeys(t *testing.T, f Factory) {
	ctx := context.Background()
	open := f(t)
	a, b := as[auth.Store](t, open(t)), as[auth.Store](t, open(t))
	now := authNow()

	k1 := newAuthClientKey(authWalletA, now, "one")
	k2 := newAuthClientKey(authWalletA, now.Add(time.Second), "two")
	k3 := newAuthClientKey(authWalletA, now.Add(2*time.Second), "three")
	for _, k := range []auth.ClientKeyRecord{k1, k2, k3} {
		require.NoError(t, a.CreateClientKey(ctx, k, 10))
	}
	lastUsed := func(s auth.Store) map[string]time.Time {
		t.Helper()
		keys, err := s.ListClientKeys(ctx, authWalletA)
		require.NoError(t, err)
		m := make(map[string]time.Time, len(keys))
		for _, k := range keys {
			m[k.ID] = k.LastUsedAt
			byHash, err := s.ClientKeyByHash(ctx, k.Hash)
			require.NoError(t, err)
			requireAuthTime(t, k.LastUsedAt, byHash.LastUsedAt, "LastUsedAt by hash and in the list")
		}
		return m
	}

	require.NoError(t, a.TouchClientKeys(ctx, nil), "an empty batch")
	require.NoError(t, a.TouchClientKeys(ctx, map[string]time.Time{}), "an empty batch")
	for id, at := range lastUsed(b) {
		require.Truef(t, at.IsZero(), "key %s: never used, want zero LastUsedAt, got %v", id, at)
	}

	t1 := now.Add(time.Hour)
	require.NoError(t, a.TouchClientKeys(ctx, map[string]time.Time{
		k1.ID:            t1,
		uuid.NewString(): t1, // unknown IDs are ignored
	}))
	got := lastUsed(b)
	requireAuthTime(t, t1, got[k1.ID], "k1 after first use")
	requireAuthTime(t, time.Time{}, got[k2.ID], "k2 untouched")
	requireAuthTime(t, time.Time{}, got[k3.ID], "k3 untouched")

	// Earlier times never move last use backwards; later ones raise it.
	t2 := now.Add(2 * time.Hour)
	require.NoError(t, b.TouchClientKeys(ctx, map[string]time.Time{
		k1.ID: t1.Add(-time.Minute),
		k2.ID: t2,
	}))
	got = lastUsed(a)
	requireAuthTime(t, t1, got[k1.ID], "k1 after an older touch")
	requireAuthTime(t, t2, got[k2.ID], "k2 after first use")

	t3 := now.Add(3 * time.Hour)
	require.NoError(t, a.TouchClientKeys(ctx, map[string]time.Time{
		k1.ID: t3,
		k2.ID: t2.Add(-time.Second),
		k3.ID: t3.Add(time.Second),
	}))
	got = lastUsed(b)
	requireAuthTime(t, t3, got[k1.ID], "k1 raised")
	requireAuthTime(t, t2, got[k2.ID], "k2 not lowered")
	requireAuthTime(t, t3.Add(time.Second), got[k3.ID], "k3 after first use")

	// Touching a revoked key is harmless, and it stays revoked.
	require.NoError(t, a.RevokeClientKey(ctx, authWalletA, k3.ID, now))
	require.NoError(t, a.TouchClientKeys(ctx, map[string]time.Time{k3.ID: t3.Add(time.Hour)}))
	_, err := a.ClientKeyByHash(ctx, k3.Hash)
	requireFault(t, err, fault.NotFound, "a touched revoked key")
	keys, err := a.ListClientKeys(ctx, authWalletA)
	require.NoError(t, err)
	require.Equal(t, []string{k1.ID, k2.ID}, clientKeyIDs(keys))
}
