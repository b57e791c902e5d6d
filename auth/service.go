package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/fault"
)

// Options configures a [Service]. The zero value is usable.
type Options struct {
	// Purchases decides the client key limit. Nil means [NoPurchases].
	Purchases PurchaseChecker
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Rand is the source of key material. Nil means crypto/rand.Reader.
	Rand io.Reader
	// Logger receives diagnostics. Nil discards them.
	Logger *slog.Logger
	// Events receives revocations (events.KeyRevoked,
	// events.MasterKeyReplaced). Nil publishes nothing.
	Events events.Bus
}

// Service is wallet login and key management. It is safe for concurrent use.
type Service struct {
	store     Store
	purchases PurchaseChecker
	now       func() time.Time
	rand      io.Reader
	log       *slog.Logger
	events    events.Bus

	mu      sync.Mutex
	pending map[string]time.Time // client key ID -> last use not yet stored
}

// NewService returns a service over store.
func NewService(store Store, opts Options) *Service {
	s := &Service{
		store:     store,
		purchases: opts.Purchases,
		now:       opts.Now,
		rand:      opts.Rand,
		log:       opts.Logger,
		events:    opts.Events,
		pending:   make(map[string]time.Time),
	}
	if s.purchases == nil {
		s.purchases = NoPurchases{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// SetPurchaseChecker replaces the purchase checker. It is meant for wiring,
// before the service handles requests.
func (s *Service) SetPurchaseChecker(p PurchaseChecker) { s.purchases = p }

// Challenge issues a one-time nonce valid for [NonceTTL]. The nonce is a
// version 7 UUID (RFC 9562) carrying the time it was issued, so that
// Verify can tell an expired challenge from an unknown one even after the
// sweep has removed it. (Verify reads the time from the nonce it is
// given: an unknown version 7 UUID older than NonceTTL answers "challenge
// expired" too, which tells its sender nothing it did not know.)
func (s *Service) Challenge(ctx context.Context) (Challenge, error) {
	now := s.now()
	id, err := newNonce(s.rand, now)
	if err != nil {
		return Challenge{}, fault.Wrap(err, fault.Internal, "could not generate nonce")
	}
	n := Nonce{Value: id.String(), CreatedAt: now, ExpiresAt: now.Add(NonceTTL)}
	if err := s.store.CreateNonce(ctx, n); err != nil {
		return Challenge{}, err
	}
	return Challenge{Nonce: n.Value, ExpiresAt: n.ExpiresAt}, nil
}

// Verify checks that signature is address's EIP-191 personal_sign signature
// of the nonce, consumes the nonce, and issues a new master key for the
// wallet, revoking any previous one.
func (s *Service) Verify(ctx context.Context, address, signature, nonce string) (Login, error) {
	if !common.IsHexAddress(address) {
		return Login{}, fault.New(fault.Invalid, MsgInvalidAddress)
	}
	claimed := common.HexToAddress(address)
	if nonce == "" {
		return Login{}, fault.New(fault.Unauthenticated, MsgInvalidNonce)
	}
	now := s.now()
	n, err := s.store.ConsumeNonce(ctx, nonce, now)
	if err != nil {
		if fault.CodeOf(err) == fault.NotFound {
			if issued, ok := nonceTime(nonce); ok && !now.Before(issued.Add(NonceTTL)) {
				// Swept, or used, and past its expiry either way.
				return Login{}, fault.New(fault.Unauthenticated, MsgChallengeExpired)
			}
			return Login{}, fault.Wrap(err, fault.Unauthenticated, MsgInvalidNonce)
		}
		return Login{}, err
	}
	if !now.Before(n.ExpiresAt) {
		return Login{}, fault.New(fault.Unauthenticated, MsgChallengeExpired)
	}
	// The signed text is rebuilt from the stored nonce, never taken from the client.
	signer, err := RecoverPersonalSign([]byte(n.Value), signature)
	if err != nil {
		return Login{}, err
	}
	if signer != claimed {
		return Login{}, fault.New(fault.Unauthenticated, MsgAddressMismatch)
	}
	return s.issueMasterKey(ctx, signer)
}

// newNonce returns a version 7 UUID for now: 48 bits of Unix
// milliseconds, then the version, 74 random bits and the variant.
func newNonce(r io.Reader, now time.Time) (uuid.UUID, error) {
	var u uuid.UUID
	if _, err := io.ReadFull(r, u[6:]); err != nil {
		return uuid.UUID{}, err
	}
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u, nil
}

// nonceTime returns the issue time of a nonce Challenge made (to the
// millisecond); ok is false for anything else.
func nonceTime(nonce string) (time.Time, bool) {
	u, err := uuid.Parse(nonce)
	if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		return time.Time{}, false
	}
	sec, nsec := u.Time().UnixTime()
	return time.Unix(sec, nsec), true
}

// RegenerateMasterKey revokes p's master key and issues a new one. Client
// keys stay valid. Only a master key may do this.
func (s *Service) RegenerateMasterKey(ctx context.Context, p Principal) (Login, error) {
	if !p.IsMaster() {
		return Login{}, ErrClientKeyForbidden()
	}
	return s.issueMasterKey(ctx, common.HexToAddress(p.Address))
}

func (s *Service) issueMasterKey(ctx context.Context, addr common.Address) (Login, error) {
	key, hash, err := s.newSecret(MasterKeyPrefix)
	if err != nil {
		return Login{}, err
	}
	address := Lower(addr)
	if err := s.store.SetMasterKey(ctx, address, hash, s.now()); err != nil {
		return Login{}, err
	}
	s.publish(ctx, events.Event{Type: events.MasterKeyReplaced, Account: address, Keep: masterCredential(hash)})
	return Login{MasterKey: key, Address: address}, nil
}

// Authenticate resolves a bearer token to its principal. The service
// caches nothing (a store may, see the package doc): a revoked key fails
// on the very next call.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, fault.New(fault.Unauthenticated, MsgMissingToken)
	}
	switch {
	case strings.HasPrefix(token, MasterKeyPrefix):
		if !wellFormed(token, MasterKeyPrefix, MasterKeyLen) {
			return Principal{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
		}
		h := HashKey(token)
		addr, err := s.store.MasterKeyOwner(ctx, h)
		if err != nil {
			return Principal{}, authErr(err)
		}
		return Principal{Address: addr, Kind: MasterKey, Credential: masterCredential(h)}, nil
	case strings.HasPrefix(token, ClientKeyPrefix):
		if !wellFormed(token, ClientKeyPrefix, ClientKeyLen) {
			return Principal{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
		}
		h := HashKey(token)
		rec, err := s.store.ClientKeyByHash(ctx, h)
		if err != nil {
			return Principal{}, authErr(err)
		}
		if subtle.ConstantTimeCompare(rec.Hash, h) != 1 {
			return Principal{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
		}
		s.markUsed(rec.ID)
		return Principal{Address: rec.Address, Kind: ClientKey, KeyID: rec.ID, Credential: rec.ID}, nil
	}
	return Principal{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
}

func authErr(err error) error {
	if fault.CodeOf(err) == fault.NotFound {
		return fault.Wrap(err, fault.Unauthenticated, MsgInvalidToken)
	}
	return err
}

// GenerateClientKey creates a client key for p's wallet. Only a master key
// may do this. A wallet may hold [KeysWithoutPurchase] active keys until it
// has a completed credit purchase and [KeysWithPurchase] after.
func (s *Service) GenerateClientKey(ctx context.Context, p Principal, label string) (NewClientKey, error) {
	if !p.IsMaster() {
		return NewClientKey{}, ErrClientKeyForbidden()
	}
	if n := utf8.RuneCountInString(label); n < 1 || n > MaxLabelLen || !utf8.ValidString(label) {
		return NewClientKey{}, fault.New(fault.Invalid, MsgLabelLength)
	}
	bought, err := s.purchases.HasCompletedPurchase(ctx, p.Address)
	if err != nil {
		return NewClientKey{}, err
	}
	limit, limitMsg := KeysWithoutPurchase, MsgKeyLimitNoPurchase
	if bought {
		limit, limitMsg = KeysWithPurchase, MsgKeyLimit
	}
	key, hash, err := s.newSecret(ClientKeyPrefix)
	if err != nil {
		return NewClientKey{}, err
	}
	id, err := uuid.NewRandomFromReader(s.rand)
	if err != nil {
		return NewClientKey{}, fault.Wrap(err, fault.Internal, "could not generate key id")
	}
	rec := ClientKeyRecord{
		ID:        id.String(),
		Address:   p.Address,
		Hash:      hash,
		Prefix:    key[:KeyPrefixLen],
		Label:     label,
		CreatedAt: s.now().Truncate(time.Second),
	}
	if err := s.store.CreateClientKey(ctx, rec, limit); err != nil {
		if fault.CodeOf(err) == fault.Forbidden {
			return NewClientKey{}, fault.Wrap(err, fault.Forbidden, limitMsg)
		}
		return NewClientKey{}, err
	}
	return NewClientKey{Key: key, Record: rec}, nil
}

// ListClientKeys returns p's wallet's active client keys, oldest first,
// with last-use times that may not have reached the store yet.
func (s *Service) ListClientKeys(ctx context.Context, p Principal) ([]ClientKeyRecord, error) {
	if !p.IsMaster() {
		return nil, ErrClientKeyForbidden()
	}
	keys, err := s.store.ListClientKeys(ctx, p.Address)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for i := range keys {
		if t, ok := s.pending[keys[i].ID]; ok && t.After(keys[i].LastUsedAt) {
			keys[i].LastUsedAt = t
		}
	}
	s.mu.Unlock()
	return keys, nil
}

// RevokeClientKey revokes one of p's wallet's client keys. It takes effect
// on the next request that uses the key, and on what the key opened once
// the revocation is published (see the package doc).
func (s *Service) RevokeClientKey(ctx context.Context, p Principal, id string) error {
	if !p.IsMaster() {
		return ErrClientKeyForbidden()
	}
	if _, err := uuid.Parse(id); err != nil {
		return fault.New(fault.NotFound, MsgKeyNotFound)
	}
	if err := s.store.RevokeClientKey(ctx, p.Address, id, s.now()); err != nil {
		if fault.CodeOf(err) == fault.NotFound {
			return fault.Wrap(err, fault.NotFound, MsgKeyNotFound)
		}
		return err
	}
	s.publish(ctx, events.Event{Type: events.KeyRevoked, Account: p.Address, Subject: id})
	return nil
}

// publish sends e, if the service has a bus. The change is stored: a
// failure to publish is logged, not returned (the next request with the
// key fails anyway).
func (s *Service) publish(ctx context.Context, e events.Event) {
	if s.events == nil {
		return
	}
	if err := s.events.Publish(context.WithoutCancel(ctx), e); err != nil {
		s.log.WarnContext(ctx, "publishing a revocation failed", "type", e.Type, "account", e.Account, "err", err)
	}
}

// masterCredential is the credential ID of the master key with this hash.
func masterCredential(hash []byte) string { return MasterCredentialPrefix + hex.EncodeToString(hash) }

// Revokes reports whether e revokes the key with this credential ID (see
// Principal.Credential) of wallet account.
func Revokes(e events.Event, account, credential string) bool {
	if credential == "" || e.Account != account {
		return false
	}
	switch e.Type {
	case events.KeyRevoked:
		return credential == e.Subject
	case events.MasterKeyReplaced:
		return strings.HasPrefix(credential, MasterCredentialPrefix) && credential != e.Keep
	}
	return false
}

// CredentialActive reports whether the key with this credential ID (see
// Principal.Credential) of wallet account is still valid.
func (s *Service) CredentialActive(ctx context.Context, account, credential string) (bool, error) {
	if h, ok := strings.CutPrefix(credential, MasterCredentialPrefix); ok {
		hash, err := hex.DecodeString(h)
		if err != nil {
			return false, nil
		}
		owner, err := s.store.MasterKeyOwner(ctx, hash)
		if fault.CodeOf(err) == fault.NotFound {
			return false, nil
		}
		return err == nil && owner == account, err
	}
	keys, err := s.store.ListClientKeys(ctx, account)
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if k.ID == credential {
			return true, nil
		}
	}
	return false, nil
}

// markUsed records a key's use in memory; FlushUsage stores it.
func (s *Service) markUsed(id string) {
	now := s.now().Truncate(time.Second)
	s.mu.Lock()
	if t, ok := s.pending[id]; !ok || now.After(t) {
		s.pending[id] = now
	}
	s.mu.Unlock()
}

// FlushUsage writes last-use times gathered since the last flush to the
// store, in one batch. The platform calls it periodically and on close.
func (s *Service) FlushUsage(ctx context.Context) error {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return nil
	}
	batch := s.pending
	s.pending = make(map[string]time.Time, len(batch))
	s.mu.Unlock()
	if err := s.store.TouchClientKeys(ctx, batch); err != nil {
		// Put the batch back so the next flush retries it.
		s.mu.Lock()
		for id, t := range batch {
			if cur, ok := s.pending[id]; !ok || t.After(cur) {
				s.pending[id] = t
			}
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// SweepBatch is how many expired nonces [Service.Sweep] deletes in one
// store call.
const SweepBatch = 1000

// Sweep deletes expired nonces, SweepBatch at a time, until none is left
// or ctx ends.
func (s *Service) Sweep(ctx context.Context) error {
	now, total := s.now(), 0
	defer func() {
		if total > 0 {
			s.log.DebugContext(ctx, "deleted expired nonces", "count", total)
		}
	}()
	for {
		n, err := s.store.DeleteExpiredNonces(ctx, now, SweepBatch)
		total += n
		if err != nil || n < SweepBatch {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// newSecret returns prefix + 64 hex digits of fresh randomness, and its hash.
func (s *Service) newSecret(prefix string) (string, []byte, error) {
	var b [32]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		return "", nil, fault.Wrap(err, fault.Internal, "could not generate key")
	}
	key := prefix + hex.EncodeToString(b[:])
	return key, HashKey(key), nil
}

// HashKey returns the SHA-256 of a key, the only form in which keys are stored.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

func wellFormed(token, prefix string, n int) bool {
	if len(token) != n {
		return false
	}
	for _, c := range token[len(prefix):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Lower returns addr as lowercase 0x-prefixed hex, the form addresses take
// throughout the API and the stores.
func Lower(addr common.Address) string { return strings.ToLower(addr.Hex()) }

// NormalizeAddress validates a hex address and returns its lowercase form.
func NormalizeAddress(s string) (string, bool) {
	if !common.IsHexAddress(s) {
		return "", false
	}
	return Lower(common.HexToAddress(s)), true
}

// secp256k1halfN is half the curve order; signatures with s above it are
// malleable twins and are refused (EIP-2).
func secp256k1halfN() *big.Int { return new(big.Int).Rsh(crypto.S256().Params().N, 1) }

// RecoverPersonalSign returns the address that produced sig, an EIP-191
// personal_sign signature over msg given as hex with or without 0x. It
// accepts v as 27/28 or 0/1 and refuses any length but 65 bytes and high-s
// signatures.
func RecoverPersonalSign(msg []byte, sig string) (common.Address, error) {
	fail := func(err error) (common.Address, error) {
		return common.Address{}, fault.Wrap(err, fault.Unauthenticated, MsgSignatureFailed)
	}
	raw, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(sig, "0x"), "0X"))
	if err != nil {
		return fail(err)
	}
	if len(raw) != crypto.SignatureLength {
		return fail(nil)
	}
	raw = append([]byte(nil), raw...)
	switch raw[64] {
	case 27, 28:
		raw[64] -= 27
	case 0, 1:
	default:
		return fail(nil)
	}
	r := new(big.Int).SetBytes(raw[:32])
	sv := new(big.Int).SetBytes(raw[32:64])
	if !crypto.ValidateSignatureValues(raw[64], r, sv, true) || sv.Cmp(secp256k1halfN()) > 0 {
		return fail(nil)
	}
	pub, err := crypto.SigToPub(accounts.TextHash(msg), raw)
	if err != nil {
		return fail(err)
	}
	return crypto.PubkeyToAddress(*pub), nil
}
