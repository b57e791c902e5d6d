package evm_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	bind "github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/devnet"
	"github.com/perceptron-cloud/perceptron/fault"
)

// env is a simulated chain with tokens and funded wallets.
type env struct {
	t        *testing.T
	backend  *simulated.Backend
	client   simulated.Client
	abi      abi.ABI
	deployer *ecdsa.PrivateKey
	alice    *ecdsa.PrivateKey
	bob      *ecdsa.PrivateKey
	receiver common.Address
	usdt     common.Address // the configured USDT, 6 decimals
	fake     common.Address // an identical token at another address
	usdt18   common.Address // a USDT with 18 decimals, like BSC's
}

func addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

func lower(a common.Address) string { return strings.ToLower(a.Hex()) }

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := crypto.GenerateKey()
	require.NoError(t, err)
	return k
}

// newEnv starts a simulated chain, deploys three tokens and gives Alice and
// Bob 1000 of each.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, deployer: newKey(t), alice: newKey(t), bob: newKey(t), receiver: addr(newKey(t))}
	eth := new(big.Int).Mul(big.NewInt(100), big.NewInt(1e18))
	e.backend = simulated.NewBackend(types.GenesisAlloc{
		addr(e.deployer): {Balance: eth},
		addr(e.alice):    {Balance: eth},
		addr(e.bob):      {Balance: eth},
	})
	t.Cleanup(func() { e.backend.Close() })
	e.client = e.backend.Client()
	var err error
	e.abi, err = devnet.ParseTokenABI()
	require.NoError(t, err)

	deploy := func(name, symbol string, decimals uint8) common.Address {
		a, tx, err := devnet.DeployToken(e.opts(e.deployer), e.client, name, symbol, decimals)
		require.NoError(t, err)
		e.backend.Commit()
		e.requireStatus(tx, types.ReceiptStatusSuccessful)
		return a
	}
	e.usdt = deploy("Tether USD (test)", "USDT", 6)
	e.fake = deploy("Tether USD (test)", "USDT", 6)
	e.usdt18 = deploy("Binance-Peg BSC-USD (test)", "USDT", 18)
	for _, who := range []common.Address{addr(e.alice), addr(e.bob)} {
		e.send(e.deployer, e.usdt, "mint", who, big.NewInt(1000e6))
		e.send(e.deployer, e.fake, "mint", who, big.NewInt(1000e6))
		e.send(e.deployer, e.usdt18, "mint", who, new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18)))
	}
	return e
}

func (e *env) opts(k *ecdsa.PrivateKey) *bind.TransactOpts {
	o := bind.NewKeyedTransactor(k, big.NewInt(1337))
	o.Context = e.t.Context()
	return o
}

// send signs and sends a token call from k, seals a block and requires success.
func (e *env) send(k *ecdsa.PrivateKey, token common.Address, method string, args ...any) common.Hash {
	e.t.Helper()
	tx, err := bind.NewBoundContract(token, e.abi, e.client, e.client, e.client).Transact(e.opts(k), method, args...)
	require.NoError(e.t, err)
	e.backend.Commit()
	e.requireStatus(tx, types.ReceiptStatusSuccessful)
	return tx.Hash()
}

// transfer sends value of token from k to `to` and returns the hash.
func (e *env) transfer(k *ecdsa.PrivateKey, token, to common.Address, value *big.Int) string {
	return e.send(k, token, "transfer", to, value).Hex()
}

// requireStatus requires tx to be mined with status. The simulated pool
// promotes new transactions in the background, so one sent just before a
// Commit can miss that block: seal another one if so.
func (e *env) requireStatus(tx *types.Transaction, status uint64) {
	e.t.Helper()
	r, err := e.client.TransactionReceipt(e.t.Context(), tx.Hash())
	for i := 0; errors.Is(err, ethereum.NotFound) && i < 10; i++ {
		e.backend.Commit()
		r, err = e.client.TransactionReceipt(e.t.Context(), tx.Hash())
	}
	require.NoError(e.t, err)
	require.Equal(e.t, status, r.Status)
}

// adjustTime moves the chain's time on. The simulated backend refuses while
// its pool still lists a just-mined transaction as pending (the pool
// catches up in the background), so it retries briefly.
func (e *env) adjustTime(d time.Duration) {
	e.t.Helper()
	var err error
	for range 100 {
		if err = e.backend.AdjustTime(d); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(e.t, err)
}

// chain is the configured test chain for token with decimals.
func (e *env) chain(token common.Address, decimals uint8) evm.Chain {
	return evm.Chain{ID: 1337, Name: "simulated", Token: token, Decimals: decimals, Confirmations: 1}
}

// verifier returns a verifier on the simulated chain; mod adjusts the config.
func (e *env) verifier(mod func(*evm.Config)) *evm.Verifier {
	e.t.Helper()
	cfg := evm.Config{
		Chains:           []evm.Chain{e.chain(e.usdt, 6)},
		ReceivingAddress: e.receiver,
		Dial:             func(context.Context, evm.Chain) (evm.Client, error) { return e.client, nil },
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := evm.New(cfg)
	require.NoError(e.t, err)
	return v
}

func claim(hash string, from *ecdsa.PrivateKey, amount billing.MicroCents) billing.PaymentClaim {
	return billing.PaymentClaim{ChainID: 1337, TxHash: strings.ToLower(hash), Token: "USDT", From: lower(addr(from)), Amount: amount}
}

// requireFault requires err to carry code and the exact public message.
func requireFault(t *testing.T, err error, code fault.Code, msg string) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, code, fault.CodeOf(err), "%v", err)
	assert.Equal(t, msg, fault.MessageOf(err), "%v", err)
}

func requireMismatch(t *testing.T, err error) {
	t.Helper()
	requireFault(t, err, fault.Invalid, billing.MsgVerificationFailed)
}

func TestVerifySuccess(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(nil)
	hash := e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(25_000_000))

	got, err := v.VerifyPayment(t.Context(), claim(hash, e.alice, 25*billing.Dollar))
	require.NoError(t, err)
	assert.Equal(t, uint64(1337), got.ChainID)
	assert.Equal(t, strings.ToLower(hash), got.TxHash)
	assert.Equal(t, lower(addr(e.alice)), got.From)
	assert.Equal(t, lower(e.receiver), got.To)
	assert.Equal(t, lower(e.usdt), got.Token)
	assert.Equal(t, big.NewInt(25_000_000), got.Value)
	assert.Equal(t, 25*billing.Dollar, got.Amount)
	assert.WithinDuration(t, time.Now(), got.BlockTime, time.Minute)
	assert.Equal(t, lower(e.receiver), v.ReceivingAddress())

	// Upper-case hex and a lower-case token symbol are the same claim.
	c := claim(hash, e.alice, 25*billing.Dollar)
	c.TxHash = "0x" + strings.ToUpper(c.TxHash[2:])
	c.Token = "usdt"
	again, err := v.VerifyPayment(t.Context(), c)
	require.NoError(t, err)
	assert.Equal(t, got, again)

	// Cents: $25.37.
	hash = e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(25_370_000))
	_, err = v.VerifyPayment(t.Context(), claim(hash, e.alice, 2537*billing.Cent))
	require.NoError(t, err)
}

func TestVerifyRefusals(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(nil)
	ctx := t.Context()
	amount := 25 * billing.Dollar
	value := big.NewInt(25_000_000)

	t.Run("the receiving address paying itself", func(t *testing.T) {
		self := e.verifier(func(c *evm.Config) { c.ReceivingAddress = addr(e.alice) })
		hash := e.transfer(e.alice, e.usdt, addr(e.alice), value)
		_, err := self.VerifyPayment(ctx, claim(hash, e.alice, amount))
		requireMismatch(t, err)
	})
	t.Run("wrong recipient", func(t *testing.T) {
		hash := e.transfer(e.alice, e.usdt, addr(e.bob), value)
		_, err := v.VerifyPayment(ctx, claim(hash, e.alice, amount))
		requireMismatch(t, err)
	})
	t.Run("fake token contract", func(t *testing.T) {
		hash := e.transfer(e.alice, e.fake, e.receiver, value)
		_, err := v.VerifyPayment(ctx, claim(hash, e.alice, amount))
		requireMismatch(t, err)
	})
	t.Run("another wallet's payment", func(t *testing.T) {
		hash := e.transfer(e.alice, e.usdt, e.receiver, value)
		_, err := v.VerifyPayment(ctx, claim(hash, e.bob, amount))
		requireMismatch(t, err)
		// The refusal used nothing up: the real sender still verifies.
		_, err = v.VerifyPayment(ctx, claim(hash, e.alice, amount))
		require.NoError(t, err)
	})
	t.Run("wrong amount", func(t *testing.T) {
		hash := e.transfer(e.alice, e.usdt, e.receiver, value)
		for _, a := range []billing.MicroCents{26 * billing.Dollar, 24 * billing.Dollar, amount + billing.Cent, amount - billing.Cent} {
			_, err := v.VerifyPayment(ctx, claim(hash, e.alice, a))
			requireMismatch(t, err)
		}
	})
	t.Run("amount not representable", func(t *testing.T) {
		hash := e.transfer(e.alice, e.usdt, e.receiver, value)
		// $25 and 1 micro-cent has no 6-decimal value; nor does it round.
		_, err := v.VerifyPayment(ctx, claim(hash, e.alice, amount+1))
		requireMismatch(t, err)
		_, err = v.VerifyPayment(ctx, claim(hash, e.alice, amount+99))
		requireMismatch(t, err)
	})
	t.Run("failed transaction", func(t *testing.T) {
		// Bob sends more than he has; a fixed gas limit skips estimation
		// so the transaction is mined and reverts.
		opts := e.opts(e.bob)
		opts.GasLimit = 100_000
		tx, err := bind.NewBoundContract(e.usdt, e.abi, e.client, e.client, e.client).
			Transact(opts, "transfer", e.receiver, big.NewInt(5000e6))
		require.NoError(t, err)
		e.backend.Commit()
		e.requireStatus(tx, types.ReceiptStatusFailed)
		_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), e.bob, 5000*billing.Dollar))
		requireMismatch(t, err)
	})
	t.Run("plain ETH transfer", func(t *testing.T) {
		opts := e.opts(e.alice)
		opts.Value = big.NewInt(1e18)
		opts.GasLimit = 21_000
		tx, err := bind.NewBoundContract(e.receiver, abi.ABI{}, e.client, e.client, e.client).RawTransact(opts, nil)
		require.NoError(t, err)
		e.backend.Commit()
		e.requireStatus(tx, types.ReceiptStatusSuccessful)
		_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), e.alice, amount))
		requireMismatch(t, err)
	})
	t.Run("transferFrom by a spender still pays from the owner", func(t *testing.T) {
		// Alice approves Bob, Bob moves Alice's tokens: the Transfer log's
		// sender is Alice, so only Alice may claim it.
		e.send(e.alice, e.usdt, "approve", addr(e.bob), value)
		hash := e.send(e.bob, e.usdt, "transferFrom", addr(e.alice), e.receiver, value).Hex()
		_, err := v.VerifyPayment(ctx, claim(hash, e.bob, amount))
		requireMismatch(t, err)
		_, err = v.VerifyPayment(ctx, claim(hash, e.alice, amount))
		require.NoError(t, err)
	})
	t.Run("unknown chain", func(t *testing.T) {
		c := claim(common.Hash{1}.Hex(), e.alice, amount)
		c.ChainID = 8453
		_, err := v.VerifyPayment(ctx, c)
		requireFault(t, err, fault.Invalid, "unsupported chain_id 8453")
	})
	t.Run("unsupported token", func(t *testing.T) {
		c := claim(common.Hash{1}.Hex(), e.alice, amount)
		c.Token = "USDC"
		_, err := v.VerifyPayment(ctx, c)
		require.Error(t, err)
		assert.Equal(t, fault.Invalid, fault.CodeOf(err))
		assert.True(t, strings.HasPrefix(fault.MessageOf(err), "unsupported token"), fault.MessageOf(err))
	})
	t.Run("invalid tx hash", func(t *testing.T) {
		for _, h := range []string{"", "0x", "0x1234", strings.Repeat("ab", 32), "0x" + strings.Repeat("g", 64), "0x" + strings.Repeat("a", 63), "0x" + strings.Repeat("a", 65), "0X" + strings.Repeat("a", 64)} {
			c := claim(common.Hash{1}.Hex(), e.alice, amount)
			c.TxHash = h
			_, err := v.VerifyPayment(ctx, c)
			requireFault(t, err, fault.Invalid, "invalid tx_hash")
		}
	})
	t.Run("not found", func(t *testing.T) {
		_, err := v.VerifyPayment(ctx, claim(common.Hash{0xab}.Hex(), e.alice, amount))
		requireFault(t, err, fault.Invalid, "transaction not found or not yet mined")
	})
	t.Run("pending", func(t *testing.T) {
		tx, err := bind.NewBoundContract(e.usdt, e.abi, e.client, e.client, e.client).
			Transact(e.opts(e.alice), "transfer", e.receiver, value)
		require.NoError(t, err)
		_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), e.alice, amount))
		requireFault(t, err, fault.Invalid, "transaction not found or not yet mined")
		e.backend.Commit()
		e.requireStatus(tx, types.ReceiptStatusSuccessful)
		_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), e.alice, amount))
		require.NoError(t, err)
	})
	t.Run("non-positive amount", func(t *testing.T) {
		_, err := v.VerifyPayment(ctx, claim(common.Hash{1}.Hex(), e.alice, 0))
		requireFault(t, err, fault.Invalid, billing.MsgInvalidAmount)
	})
}

func TestVerifyAge(t *testing.T) {
	e := newEnv(t)
	hash := e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(10e6))
	receipt, err := e.client.TransactionReceipt(t.Context(), common.HexToHash(hash))
	require.NoError(t, err)
	header, err := e.client.HeaderByNumber(t.Context(), receipt.BlockNumber)
	require.NoError(t, err)
	blockTime := time.Unix(int64(header.Time), 0)
	c := claim(hash, e.alice, 10*billing.Dollar)

	// The Now hook: exactly MaxAge old is accepted, one second more is not.
	for _, tc := range []struct {
		maxAge time.Duration
		age    time.Duration
		msg    string
	}{
		{0, 5 * time.Minute, ""},
		{0, 5*time.Minute + time.Second, "transaction expired: older than 300 seconds"},
		{0, time.Hour, "transaction expired: older than 300 seconds"},
		{90 * time.Second, 91 * time.Second, "transaction expired: older than 90 seconds"},
		{time.Hour, 30 * time.Minute, ""},
	} {
		v := e.verifier(func(c *evm.Config) {
			c.MaxAge = tc.maxAge
			c.Now = func() time.Time { return blockTime.Add(tc.age) }
		})
		_, err := v.VerifyPayment(t.Context(), c)
		if tc.msg == "" {
			require.NoError(t, err, "%v", tc)
		} else {
			requireFault(t, err, fault.Invalid, tc.msg)
		}
	}

	// The chain's own time: with the real clock, moving the chain ten
	// minutes on ages the transfer even though the clock did not move.
	v := e.verifier(nil)
	_, err = v.VerifyPayment(t.Context(), c)
	require.NoError(t, err, "fresh")
	e.adjustTime(10 * time.Minute)
	_, err = v.VerifyPayment(t.Context(), c)
	requireFault(t, err, fault.Invalid, "transaction expired: older than 300 seconds")
	// A longer MaxAge still accepts it.
	_, err = e.verifier(func(c *evm.Config) { c.MaxAge = time.Hour }).VerifyPayment(t.Context(), c)
	require.NoError(t, err)
}

func TestVerifyConfirmations(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(func(c *evm.Config) { c.Chains[0].Confirmations = 3 })
	hash := e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(5e6))
	c := claim(hash, e.alice, 5*billing.Dollar)

	_, err := v.VerifyPayment(t.Context(), c)
	requireFault(t, err, fault.Invalid, "transaction has 1 of 3 confirmations")
	e.backend.Commit()
	_, err = v.VerifyPayment(t.Context(), c)
	requireFault(t, err, fault.Invalid, "transaction has 2 of 3 confirmations")
	e.backend.Commit()
	_, err = v.VerifyPayment(t.Context(), c)
	require.NoError(t, err)
}

func TestVerify18Decimals(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(func(c *evm.Config) { c.Chains = []evm.Chain{e.chain(e.usdt18, 18)} })
	ctx := t.Context()

	// $25 is 25 * 10^18 base units.
	value := new(big.Int).Mul(big.NewInt(25), big.NewInt(1e18))
	hash := e.transfer(e.alice, e.usdt18, e.receiver, value)
	got, err := v.VerifyPayment(ctx, claim(hash, e.alice, 25*billing.Dollar))
	require.NoError(t, err)
	assert.Equal(t, value, got.Value)
	// 25 * 10^6 base units, $25 on a 6-decimal token, is dust here.
	dust := e.transfer(e.alice, e.usdt18, e.receiver, big.NewInt(25e6))
	_, err = v.VerifyPayment(ctx, claim(dust, e.alice, 25*billing.Dollar))
	requireMismatch(t, err)

	// With 18 decimals a single micro-cent (10^-8 dollars) is 10^10 units.
	value = new(big.Int).Add(value, big.NewInt(1e10))
	hash = e.transfer(e.alice, e.usdt18, e.receiver, value)
	_, err = v.VerifyPayment(ctx, claim(hash, e.alice, 25*billing.Dollar+1))
	require.NoError(t, err)
	_, err = v.VerifyPayment(ctx, claim(hash, e.alice, 25*billing.Dollar))
	requireMismatch(t, err)

	// A 6-decimal transfer on the 6-decimal chain is not an 18-decimal one.
	hash = e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(25e6))
	_, err = v.VerifyPayment(ctx, claim(hash, e.alice, 25*billing.Dollar))
	requireMismatch(t, err)
}

func TestToTokenUnits(t *testing.T) {
	for _, tc := range []struct {
		amount   billing.MicroCents
		decimals uint8
		want     string
		ok       bool
	}{
		{25 * billing.Dollar, 6, "25000000", true},
		{25 * billing.Dollar, 18, "25000000000000000000", true},
		{billing.Cent, 6, "10000", true},
		{100, 6, "1", true}, // 10^-6 dollars
		{1, 6, "0", false},
		{150, 6, "1", false},
		{1, 8, "1", true},
		{1, 18, "10000000000", true},
		{5 * billing.Dollar, 0, "5", true},
		{billing.Cent, 0, "0", false},
		{0, 6, "", false},
		{-billing.Dollar, 6, "", false},
	} {
		got, ok := evm.ToTokenUnits(tc.amount, tc.decimals)
		assert.Equal(t, tc.ok, ok, "%d @ %d", tc.amount, tc.decimals)
		if tc.want != "" {
			assert.Equal(t, tc.want, got.String(), "%d @ %d", tc.amount, tc.decimals)
		}
	}
}

// flakyClient wraps a client, failing or rewriting chosen calls.
type flakyClient struct {
	evm.Client
	receiptErr error
	chainID    *big.Int
	forkHeader bool // the canonical header at the receipt's height differs
	oddHashing bool // every header hashes differently from the node's hash
	noByHash   bool // the node does not know the receipt's block
}

func (f *flakyClient) TransactionReceipt(ctx context.Context, h common.Hash) (*types.Receipt, error) {
	if f.receiptErr != nil {
		return nil, f.receiptErr
	}
	return f.Client.TransactionReceipt(ctx, h)
}

func (f *flakyClient) ChainID(ctx context.Context) (*big.Int, error) {
	if f.chainID != nil {
		return f.chainID, nil
	}
	return f.Client.ChainID(ctx)
}

func (f *flakyClient) HeaderByNumber(ctx context.Context, n *big.Int) (*types.Header, error) {
	h, err := f.Client.HeaderByNumber(ctx, n)
	if err == nil && f.forkHeader {
		h.Extra = []byte("another block at this height")
	}
	if err == nil && f.oddHashing {
		h.Extra = append(h.Extra, "chain-specific field"...)
	}
	return h, err
}

func (f *flakyClient) HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error) {
	if f.noByHash {
		return nil, ethereum.NotFound
	}
	h, err := f.Client.HeaderByHash(ctx, hash)
	if err == nil && f.oddHashing {
		h.Extra = append(h.Extra, "chain-specific field"...)
	}
	return h, err
}

func TestVerifyChainFailures(t *testing.T) {
	e := newEnv(t)
	hash := e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(5e6))
	c := claim(hash, e.alice, 5*billing.Dollar)
	with := func(f *flakyClient) *evm.Verifier {
		f.Client = e.client
		return e.verifier(func(cfg *evm.Config) {
			cfg.Dial = func(context.Context, evm.Chain) (evm.Client, error) { return f, nil }
		})
	}

	_, err := with(&flakyClient{receiptErr: errors.New("connection refused")}).VerifyPayment(t.Context(), c)
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err), "%v", err)

	_, err = with(&flakyClient{chainID: big.NewInt(1)}).VerifyPayment(t.Context(), c)
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err), "an endpoint serving another chain is refused: %v", err)

	_, err = with(&flakyClient{forkHeader: true}).VerifyPayment(t.Context(), c)
	requireFault(t, err, fault.Invalid, "transaction is not on the canonical chain")
	_, err = with(&flakyClient{noByHash: true}).VerifyPayment(t.Context(), c)
	requireFault(t, err, fault.Invalid, "transaction is not on the canonical chain")
	// Headers whose locally computed hash is not the node's block hash (as
	// on chains with extra header fields) still verify.
	_, err = with(&flakyClient{oddHashing: true}).VerifyPayment(t.Context(), c)
	require.NoError(t, err)

	// A dial failure is retried on the next call.
	var dials int
	v := e.verifier(func(cfg *evm.Config) {
		cfg.Dial = func(context.Context, evm.Chain) (evm.Client, error) {
			dials++
			if dials == 1 {
				return nil, errors.New("dial tcp: i/o timeout")
			}
			return e.client, nil
		}
	})
	_, err = v.VerifyPayment(t.Context(), c)
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err))
	_, err = v.VerifyPayment(t.Context(), c)
	require.NoError(t, err)
	_, err = v.VerifyPayment(t.Context(), c)
	require.NoError(t, err)
	assert.Equal(t, 2, dials, "the client is kept once dialed")

	// A canceled request is Canceled, not Unavailable.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = with(&flakyClient{receiptErr: context.Canceled}).VerifyPayment(ctx, c)
	assert.Equal(t, fault.Canceled, fault.CodeOf(err))
}

func TestConcurrentVerify(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(nil)
	hash := e.transfer(e.alice, e.usdt, e.receiver, big.NewInt(7e6))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := v.VerifyPayment(t.Context(), claim(hash, e.alice, 7*billing.Dollar)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestCheckTokens(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	check := func(chains ...evm.Chain) error {
		return e.verifier(func(c *evm.Config) { c.Chains = chains }).CheckTokens(ctx)
	}
	require.NoError(t, check(e.chain(e.usdt, 6)))
	require.NoError(t, check(e.chain(e.usdt18, 18)))

	err := check(e.chain(e.usdt18, 6))
	require.Error(t, err)
	assert.Equal(t, fault.Invalid, fault.CodeOf(err))
	assert.Contains(t, err.Error(), "18 decimals, configured 6")

	// A token whose symbol is not USDT.
	dai, tx, err := devnet.DeployToken(e.opts(e.deployer), e.client, "Dai", "DAI", 6)
	require.NoError(t, err)
	e.backend.Commit()
	e.requireStatus(tx, types.ReceiptStatusSuccessful)
	err = check(e.chain(dai, 6))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `symbol "DAI"`)

	// An account without code.
	err = check(e.chain(e.receiver, 6))
	require.Error(t, err)
	assert.Equal(t, fault.Invalid, fault.CodeOf(err))

	// A chain without an RPC URL under the default dialer is unavailable.
	v, err := evm.New(evm.Config{Chains: evm.DefaultChains()[:1], ReceivingAddress: e.receiver})
	require.NoError(t, err)
	err = v.CheckTokens(ctx)
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err))
}

func TestIsUSDTSymbol(t *testing.T) {
	for _, s := range []string{"USDT", "usdt", "USDt", "USDT0", "USD₮0", "USD₮", "USDT.e", "USDT.E"} {
		assert.True(t, evm.IsUSDTSymbol(s), s)
	}
	for _, s := range []string{"", "USDC", "DAI", "XUSDT", "USDT2", "USDTX", "US DT 9", "fUSDT"} {
		assert.False(t, evm.IsUSDTSymbol(s), s)
	}
}

func TestDefaultChainsAndConfig(t *testing.T) {
	chains := evm.DefaultChains()
	byID := map[uint64]evm.Chain{}
	for _, c := range chains {
		byID[c.ID] = c
		assert.Empty(t, c.RPCURL, "operators supply RPC URLs")
		assert.NotEqual(t, common.Address{}, c.Token)
		assert.Positive(t, c.Confirmations)
	}
	assert.Len(t, byID, 5)
	for id, dec := range map[uint64]uint8{1: 6, 42161: 6, 10: 6, 137: 6, 56: 18} {
		assert.Equal(t, dec, byID[id].Decimals, "chain %d", id)
	}
	assert.NotContains(t, byID, uint64(8453), "Base has no verified USDT address")
	assert.Equal(t, common.HexToAddress("0xdAC17F958D2ee523a2206206994597C13D831ec7"), byID[1].Token)
	assert.Equal(t, common.HexToAddress("0x55d398326f99059fF775485246999027B3197955"), byID[56].Token)

	recv := common.HexToAddress("0x5B97e908A7AF2EF5C2176ed45F79b2f74Fa680CC")
	v, err := evm.New(evm.Config{Chains: chains, ReceivingAddress: recv})
	require.NoError(t, err)
	assert.Equal(t, "0x5b97e908a7af2ef5c2176ed45f79b2f74fa680cc", v.ReceivingAddress())
	assert.Len(t, v.Chains(), 5)
	// Listed but without an RPC URL: unavailable, not unknown.
	payer := common.HexToAddress("0x00000000000000000000000000000000000000a1")
	_, err = v.VerifyPayment(t.Context(), billing.PaymentClaim{ChainID: 1, TxHash: common.Hash{1}.Hex(), Token: "USDT", From: lower(payer), Amount: 5 * billing.Dollar})
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err))
	_, err = v.VerifyPayment(t.Context(), billing.PaymentClaim{ChainID: 8453, TxHash: common.Hash{1}.Hex(), Token: "USDT", From: lower(payer), Amount: 5 * billing.Dollar})
	requireFault(t, err, fault.Invalid, "unsupported chain_id 8453")

	for name, cfg := range map[string]evm.Config{
		"no receiving address": {Chains: chains},
		"duplicate chain":      {Chains: append(evm.DefaultChains(), chains[0]), ReceivingAddress: recv},
		"no token":             {Chains: []evm.Chain{{ID: 5}}, ReceivingAddress: recv},
		"no chain id":          {Chains: []evm.Chain{{Token: recv}}, ReceivingAddress: recv},
		"negative max age":     {MaxAge: -time.Second, ReceivingAddress: recv},
	} {
		_, err := evm.New(cfg)
		assert.Equal(t, fault.Invalid, fault.CodeOf(err), name)
	}
}

// TestVerifyOverJSONRPC goes through the real wire path: the devnet's RPC
// handler served over loopback HTTP, a transfer sent as a signed raw
// transaction, and the verifier's default dialer (ethclient over HTTP).
func TestVerifyOverJSONRPC(t *testing.T) {
	ctx := t.Context()
	receiver := addr(newKey(t))
	chain, err := devnet.New(ctx, devnet.Config{ReceivingAddress: receiver})
	require.NoError(t, err)
	t.Cleanup(func() { chain.Close() })
	srv := httptest.NewServer(chain.RPCHandler())
	t.Cleanup(srv.Close)

	alice, bob := newKey(t), newKey(t)
	for _, k := range []*ecdsa.PrivateKey{alice, bob} {
		_, err = chain.Faucet(ctx, addr(k), "100")
		require.NoError(t, err)
	}

	wallet, err := ethclient.Dial(srv.URL)
	require.NoError(t, err)
	t.Cleanup(wallet.Close)
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	opts := bind.NewKeyedTransactor(alice, big.NewInt(devnet.ChainID))
	opts.Context = ctx
	tx, err := bind.NewBoundContract(chain.USDT(), parsed, wallet, wallet, wallet).
		Transact(opts, "transfer", receiver, big.NewInt(12_340_000))
	require.NoError(t, err)

	ch := chain.EVMChain()
	ch.RPCURL = srv.URL
	v, err := evm.New(evm.Config{Chains: []evm.Chain{ch}, ReceivingAddress: receiver})
	require.NoError(t, err)
	t.Cleanup(func() { v.Close() })
	require.NoError(t, v.CheckTokens(ctx))

	got, err := v.VerifyPayment(ctx, claim(tx.Hash().Hex(), alice, 1234*billing.Cent))
	require.NoError(t, err)
	assert.Equal(t, big.NewInt(12_340_000), got.Value)
	assert.Equal(t, lower(chain.USDT()), got.Token)

	_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), bob, 1234*billing.Cent))
	requireMismatch(t, err)
	_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), alice, 1235*billing.Cent))
	requireMismatch(t, err)
	_, err = v.VerifyPayment(ctx, claim(common.Hash{9}.Hex(), alice, 1234*billing.Cent))
	requireFault(t, err, fault.Invalid, "transaction not found or not yet mined")

	// The in-process path the -dev server uses gives the same answer.
	inproc, err := evm.New(evm.Config{Chains: []evm.Chain{chain.EVMChain()}, ReceivingAddress: receiver, Dial: chain.Dial})
	require.NoError(t, err)
	again, err := inproc.VerifyPayment(ctx, claim(tx.Hash().Hex(), alice, 1234*billing.Cent))
	require.NoError(t, err)
	assert.Equal(t, got, again)

	// With the endpoint gone the chain is unavailable.
	srv.Close()
	require.NoError(t, v.Close())
	_, err = v.VerifyPayment(ctx, claim(tx.Hash().Hex(), alice, 1234*billing.Cent))
	assert.Equal(t, fault.Unavailable, fault.CodeOf(err), "%v", err)
}
