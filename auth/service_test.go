package auth_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

type purchased map[string]bool

func (p purchased) HasCompletedPurchase(_ context.Context, a string) (bool, error) { return p[a], nil }

func login(t *testing.T, s *auth.Service, key *ecdsa.PrivateKey) auth.Principal {
	t.Helper()
	ctx := context.Background()
	ch, err := s.Challenge(ctx)
	require.NoError(t, err)
	sig, err := crypto.Sign(accounts.TextHash([]byte(ch.Nonce)), key)
	require.NoError(t, err)
	l, err := s.Verify(ctx, crypto.PubkeyToAddress(key.PublicKey).Hex(), hex.EncodeToString(sig), ch.Nonce)
	require.NoError(t, err)
	p, err := s.Authenticate(ctx, l.MasterKey)
	require.NoError(t, err)
	require.True(t, p.IsMaster())
	require.Equal(t, l.Address, p.Address)
	return p
}

func TestKeyLimitFollowsPurchases(t *testing.T) {
	ctx := context.Background()
	bought := purchased{}
	s := auth.NewService(memory.New(), auth.Options{Purchases: bought})
	key, _ := crypto.GenerateKey()
	p := login(t, s, key)

	for i := 0; i < auth.KeysWithoutPurchase; i++ {
		_, err := s.GenerateClientKey(ctx, p, "k")
		require.NoError(t, err)
	}
	_, err := s.GenerateClientKey(ctx, p, "k")
	require.ErrorIs(t, err, fault.Forbidden)
	require.Equal(t, auth.MsgKeyLimitNoPurchase, fault.MessageOf(err))

	bought[p.Address] = true
	for i := auth.KeysWithoutPurchase; i < auth.KeysWithPurchase; i++ {
		_, err := s.GenerateClientKey(ctx, p, "k")
		require.NoError(t, err)
	}
	_, err = s.GenerateClientKey(ctx, p, "k")
	require.ErrorIs(t, err, fault.Forbidden)
	require.Equal(t, auth.MsgKeyLimit, fault.MessageOf(err))
}

func TestConcurrentVerifiesOneWins(t *testing.T) {
	ctx := context.Background()
	s := auth.NewService(memory.New(), auth.Options{})
	key, _ := crypto.GenerateKey()
	ch, err := s.Challenge(ctx)
	require.NoError(t, err)
	sig, _ := crypto.Sign(accounts.TextHash([]byte(ch.Nonce)), key)
	addr := crypto.PubkeyToAddress(key.PublicKey).Hex()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Verify(ctx, addr, "0x"+hex.EncodeToString(sig), ch.Nonce)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else {
				require.Equal(t, auth.MsgInvalidNonce, fault.MessageOf(err))
				losses++
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, wins)
	require.Equal(t, 31, losses)
}

func TestUsageIsFlushedInBatches(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	s := auth.NewService(store, auth.Options{})
	key, _ := crypto.GenerateKey()
	p := login(t, s, key)
	k, err := s.GenerateClientKey(ctx, p, "agent")
	require.NoError(t, err)

	_, err = s.Authenticate(ctx, k.Key)
	require.NoError(t, err)
	// Not yet in the store, but listings see it.
	stored, err := store.ListClientKeys(ctx, p.Address)
	require.NoError(t, err)
	require.True(t, stored[0].LastUsedAt.IsZero())
	listed, err := s.ListClientKeys(ctx, p)
	require.NoError(t, err)
	require.False(t, listed[0].LastUsedAt.IsZero())

	require.NoError(t, s.FlushUsage(ctx))
	stored, err = store.ListClientKeys(ctx, p.Address)
	require.NoError(t, err)
	require.Equal(t, listed[0].LastUsedAt.Unix(), stored[0].LastUsedAt.Unix())
}

func TestRecoverPersonalSign(t *testing.T) {
	key, _ := crypto.GenerateKey()
	msg := []byte("hello")
	sig, _ := crypto.Sign(accounts.TextHash(msg), key)
	want := crypto.PubkeyToAddress(key.PublicKey)
	for _, form := range []string{
		hex.EncodeToString(sig),
		"0x" + hex.EncodeToString(sig),
		"0x" + strings.ToUpper(hex.EncodeToString(sig)),
	} {
		got, err := auth.RecoverPersonalSign(msg, form)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	sig[64] += 27
	got, err := auth.RecoverPersonalSign(msg, hex.EncodeToString(sig))
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// An expired challenge answers "challenge expired", whether the sweep has
// removed it or not; an unknown nonce answers "invalid or expired nonce".
func TestExpiredChallengeAfterSweep(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_748_000_000, 0)
	s := auth.NewService(memory.New(), auth.Options{Now: func() time.Time { return now }})
	key, _ := crypto.GenerateKey()
	addr := crypto.PubkeyToAddress(key.PublicKey).Hex()
	verify := func(nonce string) error {
		sig, _ := crypto.Sign(accounts.TextHash([]byte(nonce)), key)
		_, err := s.Verify(ctx, addr, hex.EncodeToString(sig), nonce)
		return err
	}
	kept, err := s.Challenge(ctx)
	require.NoError(t, err)
	swept, err := s.Challenge(ctx)
	require.NoError(t, err)
	u, err := uuid.Parse(swept.Nonce)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), u.Version(), "a UUID, version 7")
	require.Equal(t, now.Add(auth.NonceTTL).Unix(), swept.ExpiresAt.Unix())

	now = now.Add(auth.NonceTTL)
	err = verify(kept.Nonce) // expired, still stored
	require.ErrorIs(t, err, fault.Unauthenticated)
	require.Equal(t, auth.MsgChallengeExpired, fault.MessageOf(err))
	require.NoError(t, s.Sweep(ctx))
	err = verify(swept.Nonce) // expired, and removed
	require.ErrorIs(t, err, fault.Unauthenticated)
	require.Equal(t, auth.MsgChallengeExpired, fault.MessageOf(err))
	err = verify(uuid.NewString())
	require.Equal(t, auth.MsgInvalidNonce, fault.MessageOf(err), "never issued")

	// A fresh challenge still works, and once used it is invalid, not expired.
	ch, err := s.Challenge(ctx)
	require.NoError(t, err)
	require.NoError(t, verify(ch.Nonce))
	require.Equal(t, auth.MsgInvalidNonce, fault.MessageOf(verify(ch.Nonce)))
}
