// Package devnet is the offline development chain behind `-dev`: an
// in-process EVM chain with a test USDT deployed, a JSON-RPC endpoint any
// wallet library can use, and a faucet.
//
// The chain is go-ethereum's simulated chain, assembled as
// ethclient/simulated.NewBackend does it (chain ID 1337, in memory, no
// networking) but with the fork rules live on Ethereum mainnet (Osaka), so
// gas costs match real networks. Blocks are sealed on demand: right after
// each transaction sent through [Chain.RPCHandler] or the faucet, so
// receipts are available as soon as the sender has its hash.
//
// Nothing here is meant for real money: the deployer key is public
// ([DeployerKey]) and anyone using the RPC endpoint can use it too.
package devnet

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi"
	bind "github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/fault"
)

// ChainID is the devnet's chain ID: go-ethereum's dev chain configuration
// (params.AllDevChainProtocolChanges), which the simulated backend uses too.
const ChainID = 1337

// Well-known DEV-ONLY accounts. These are the first two accounts of the
// "test test ... junk" mnemonic that Hardhat and Anvil print on start: their
// private keys are public, so anything they hold on a real network is
// stolen within seconds. Use them on the devnet only.
const (
	// DeployerKey is the hex private key of the devnet's funded deployer,
	// which owns TestUSDT and pays the faucet.
	DeployerKey = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
	// DeployerAddress is DeployerKey's address.
	DeployerAddress = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
	// DefaultReceivingAddress is used when Config.ReceivingAddress is zero
	// (Hardhat/Anvil account #1).
	DefaultReceivingAddress = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
)

// Config configures a devnet [Chain].
type Config struct {
	// ChainID must be 0 or 1337: go-ethereum's simulated chain always runs
	// 1337, and a different value is refused rather than ignored.
	ChainID uint64
	// ReceivingAddress is where purchases are paid on the devnet; zero
	// means [DefaultReceivingAddress]. It is reported by [Chain.Info].
	ReceivingAddress common.Address
	// Alloc funds extra accounts at genesis (tests use it to pre-fund
	// wallets). The deployer is always funded.
	Alloc types.GenesisAlloc
	// Logger receives debug records of RPC calls and faucet drips; nil
	// discards them.
	Logger *slog.Logger
	// MaxClockLead bounds how far the chain's clock may run ahead of the
	// wall clock (plus what AdjustTime added); zero means
	// [DefaultMaxClockLead]. Every block is at least a second after its
	// parent, and the dev chain seals a block for each transaction sent,
	// so without a bound anyone could push its clock ahead with cheap
	// self-transfers and age other users' unclaimed payments past the
	// payment window. Once the chain is this far ahead, a block waits
	// for the wall clock, and the transactions sent meanwhile share it.
	MaxClockLead time.Duration
}

// DefaultMaxClockLead is the default [Config.MaxClockLead].
const DefaultMaxClockLead = 10 * time.Second

// Chain is a running devnet. Its methods are safe for concurrent use.
type Chain struct {
	node      *simNode
	client    *ethclient.Client // in process; never closed before the node
	rpc       *rpc.Client       // the in-process RPC client under client
	tokenABI  abi.ABI
	key       *ecdsa.PrivateKey
	deployer  common.Address
	usdt      common.Address
	receiving common.Address
	log       *slog.Logger

	// mu serializes block production (Commit, AdjustTime), faucet
	// transactions from the deployer, and Close.
	mu     sync.Mutex
	closed bool
	// lead is Config.MaxClockLead; adjusted is the sum of AdjustTime's
	// moves, which the bound allows for.
	lead, adjusted time.Duration
}

// Info is what GET /devnet/info returns.
type Info struct {
	// ChainID is always 1337.
	ChainID uint64 `json:"chain_id"`
	// RPCURL is the absolute URL of the JSON-RPC endpoint.
	RPCURL string `json:"rpc_url"`
	// USDTAddress is the TestUSDT contract, lowercase 0x-hex.
	USDTAddress string `json:"usdt_address"`
	// ReceivingAddress is where purchases are paid, lowercase 0x-hex.
	ReceivingAddress string `json:"receiving_address"`
}

// deployerFunds is the deployer's genesis balance: a billion ETH.
func deployerFunds() *big.Int {
	return new(big.Int).Mul(big.NewInt(1_000_000_000), big.NewInt(1e18))
}

// New starts a devnet, deploys TestUSDT ("Tether USD (dev)", USDT, 6
// decimals) from the deployer and seals the block. Close it when done.
func New(ctx context.Context, cfg Config) (*Chain, error) {
	if cfg.ChainID != 0 && cfg.ChainID != ChainID {
		return nil, fault.Newf(fault.Invalid, "devnet: chain ID is always %d, got %d", ChainID, cfg.ChainID)
	}
	key, err := crypto.HexToECDSA(DeployerKey)
	if err != nil {
		return nil, fmt.Errorf("devnet: deployer key: %w", err)
	}
	parsed, err := ParseTokenABI()
	if err != nil {
		return nil, fmt.Errorf("devnet: TestUSDT ABI: %w", err)
	}
	c := &Chain{
		tokenABI:  parsed,
		key:       key,
		deployer:  crypto.PubkeyToAddress(key.PublicKey),
		receiving: cfg.ReceivingAddress,
		log:       cfg.Logger,
		lead:      cfg.MaxClockLead,
	}
	if c.lead <= 0 {
		c.lead = DefaultMaxClockLead
	}
	if c.receiving == (common.Address{}) {
		c.receiving = common.HexToAddress(DefaultReceivingAddress)
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	alloc := types.GenesisAlloc{}
	maps.Copy(alloc, cfg.Alloc)
	alloc[c.deployer] = types.Account{Balance: deployerFunds()}

	c.node, err = startNode(alloc)
	if err != nil {
		return nil, err
	}
	c.rpc = c.node.stack.Attach()
	c.client = ethclient.NewClient(c.rpc)

	fail := func(err error) (*Chain, error) { return nil, errors.Join(err, c.shutdown()) }
	opts, err := c.transactor(ctx)
	if err != nil {
		return fail(err)
	}
	addr, tx, err := DeployToken(opts, c.client, TokenName, TokenSymbol, TokenDecimals)
	if err != nil {
		return fail(fmt.Errorf("devnet: deploying TestUSDT: %w", err))
	}
	c.sealLocked(tx.Hash())
	if err := c.checkReceipt(ctx, tx); err != nil {
		return fail(fmt.Errorf("devnet: deploying TestUSDT: %w", err))
	}
	c.usdt = addr
	c.log.Info("devnet: started", "chain_id", ChainID, "usdt", addr.Hex(), "receiving", c.receiving.Hex())
	return c, nil
}

// transactor returns signing options for the deployer with the nonce set
// from the chain (the larger of the mined and the pool's view, since the
// pool may lag just after a block).
func (c *Chain) transactor(ctx context.Context) (*bind.TransactOpts, error) {
	opts := bind.NewKeyedTransactor(c.key, big.NewInt(ChainID))
	opts.Context = ctx
	mined, err := c.client.NonceAt(ctx, c.deployer, nil)
	if err != nil {
		return nil, fmt.Errorf("devnet: deployer nonce: %w", err)
	}
	pending, err := c.client.PendingNonceAt(ctx, c.deployer)
	if err != nil {
		return nil, fmt.Errorf("devnet: deployer nonce: %w", err)
	}
	opts.Nonce = new(big.Int).SetUint64(max(mined, pending))
	return opts, nil
}

// checkReceipt requires tx to be mined and successful.
func (c *Chain) checkReceipt(ctx context.Context, tx *types.Transaction) error {
	r, err := c.client.TransactionReceipt(ctx, tx.Hash())
	if err != nil {
		return fmt.Errorf("receipt of %s: %w", tx.Hash().Hex(), err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		return fmt.Errorf("transaction %s reverted", tx.Hash().Hex())
	}
	return nil
}

// Close stops the chain. It is safe to call more than once.
func (c *Chain) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.shutdown()
}

// shutdown releases the client and the node.
func (c *Chain) shutdown() error {
	c.client.Close()
	return c.node.close()
}

// Commit seals a block with the pending transactions and returns its hash.
// The RPC handler and the faucet commit by themselves; tests that send
// transactions through [Chain.Client] call this.
func (c *Chain) Commit() common.Hash {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return common.Hash{}
	}
	c.paceLocked()
	return c.node.beacon.Commit()
}

// paceLocked waits, if need be, until the next block's time (a second
// after the head's, at least) is no more than c.lead ahead of the wall
// clock moved by AdjustTime. c.mu must be held, so other senders wait
// too and their transactions go in that block.
func (c *Chain) paceLocked() {
	head := c.node.eth.BlockChain().CurrentHeader()
	next := time.Unix(int64(head.Time)+1, 0)
	if wait := next.Sub(time.Now().Add(c.adjusted + c.lead)); wait > 0 {
		time.Sleep(wait)
	}
}

// maxSealRounds bounds the blocks sealed waiting for one batch of
// transactions to be mined.
const maxSealRounds = 20

// sealLocked seals blocks until each of hashes is mined or no longer waits in
// the pool. One block is enough almost always; the pool promotes new
// transactions in the background, so one sent a moment before the block
// may miss it and go in the next. c.mu must be held.
func (c *Chain) sealLocked(hashes ...common.Hash) {
	if c.closed {
		return
	}
	ctx := context.Background() // in process: no network to wait for
	mined := func(h common.Hash) bool {
		_, err := c.client.TransactionReceipt(ctx, h)
		return err == nil
	}
	if len(hashes) > 0 && all(hashes, mined) {
		return // sealed in a block another sender waited for
	}
	for range maxSealRounds {
		c.paceLocked()
		c.node.beacon.Commit()
		waiting := false
		for _, h := range hashes {
			if _, err := c.client.TransactionReceipt(ctx, h); err != nil && c.node.waiting(h) {
				waiting = true
			}
		}
		if !waiting {
			return
		}
		if err := c.node.eth.TxPool().Sync(); err != nil {
			return
		}
	}
	c.log.Warn("devnet: transactions still pending after sealing", "rounds", maxSealRounds)
}

// all reports whether f holds for every element of xs.
func all[T any](xs []T, f func(T) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

// seal is sealLocked taking c.mu.
func (c *Chain) seal(hashes ...common.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sealLocked(hashes...)
}

// AdjustTime seals an empty block d later than the current head, moving the
// chain's clock forward (pending transactions, if any, are sealed first in
// a block of their own).
func (c *Chain) AdjustTime(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("devnet: chain is closed")
	}
	if err := c.node.adjustTime(d); err != nil {
		return err
	}
	c.adjusted += d
	return nil
}

// Client returns an in-process client for the chain. It satisfies
// [evm.Client] and bind.ContractBackend. Do not close it: [Chain.Close]
// does.
func (c *Chain) Client() *ethclient.Client { return c.client }

var _ evm.Client = (*ethclient.Client)(nil)

// Dial is an [evm.Config] Dial function that connects the payment verifier
// to this chain in process (no RPC URL needed).
func (c *Chain) Dial(_ context.Context, ch evm.Chain) (evm.Client, error) {
	if ch.ID != ChainID {
		return nil, fmt.Errorf("devnet: serves chain %d, not %d", ChainID, ch.ID)
	}
	return c.client, nil
}

// USDT returns the address of the devnet's TestUSDT.
func (c *Chain) USDT() common.Address { return c.usdt }

// ReceivingAddress returns the configured receiving address.
func (c *Chain) ReceivingAddress() common.Address { return c.receiving }

// EVMChain describes the devnet for the payment verifier: chain 1337, the
// TestUSDT address, 6 decimals, 1 confirmation, no RPC URL (pair it with
// [Chain.Dial]).
func (c *Chain) EVMChain() evm.Chain {
	return evm.Chain{
		ID:            ChainID,
		Name:          "Perceptron devnet",
		Token:         c.usdt,
		Decimals:      TokenDecimals,
		Confirmations: 1,
	}
}

// Info describes the chain for wallets; rpcURL is the absolute URL at which
// the caller serves [Chain.RPCHandler].
func (c *Chain) Info(rpcURL string) Info {
	return Info{
		ChainID:          ChainID,
		RPCURL:           rpcURL,
		USDTAddress:      strings.ToLower(c.usdt.Hex()),
		ReceivingAddress: strings.ToLower(c.receiving.Hex()),
	}
}
