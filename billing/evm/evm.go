// Package evm verifies USDT purchases on EVM chains with go-ethereum's
// ethclient. It implements [billing.PaymentVerifier].
//
// A claim is accepted only if every one of these holds:
//
//   - the chain is configured and reachable, and the token named is USDT;
//   - the transaction receipt exists and its status is successful;
//   - one of its logs is an ERC-20 Transfer emitted by the configured token
//     contract itself (a look-alike contract emitting the same event is
//     refused), from the claiming wallet, to the receiving address, for
//     exactly the claimed amount scaled to the token's decimals;
//   - the receipt's block is on the canonical chain, has at least the
//     configured number of confirmations, and is no older than MaxAge.
//
// A block's age is measured from the later of the clock and the chain
// head's timestamp, so a chain whose time runs ahead of the clock (the
// devnet after AdjustTime, a skewed server clock) ages transactions too.
//
// Mismatches are fault.Invalid with the API's public messages; chain
// failures are fault.Unavailable. Why a claim was refused is logged at debug
// level, never shown to the client.
package evm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// DefaultMaxAge is the oldest transaction accepted when Config.MaxAge is 0,
// as the API reference documents.
const DefaultMaxAge = 5 * time.Minute

// Client is the part of *ethclient.Client the verifier uses.
type Client interface {
	// ChainID is checked against the configured chain ID on first use, so
	// an RPC URL pointing at the wrong network is refused.
	ChainID(ctx context.Context) (*big.Int, error)
	// TransactionReceipt returns ethereum.NotFound for unknown or pending
	// transactions.
	TransactionReceipt(ctx context.Context, txHash common.Hash) (*types.Receipt, error)
	// HeaderByNumber gives the canonical header at the receipt's height
	// and (number nil) the head, for confirmations and the chain's time.
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	// HeaderByHash gives the receipt's block header, compared with the
	// canonical one.
	HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error)
	// CallContract reads decimals() and symbol() in [Verifier.CheckTokens].
	CallContract(ctx context.Context, call ethereum.CallMsg, blockNumber *big.Int) ([]byte, error)
}

var _ Client = (*ethclient.Client)(nil)

// Config configures a [Verifier].
type Config struct {
	// Chains are the networks on which purchases are accepted; see
	// [DefaultChains]. IDs must be unique.
	Chains []Chain
	// ReceivingAddress is where users send USDT, the same on every chain.
	// It must not be the zero address.
	ReceivingAddress common.Address
	// MaxAge is the oldest block accepted, measured from the later of Now
	// and the head block's time; 0 means [DefaultMaxAge].
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Dial connects to a chain. nil means ethclient.DialContext on
	// c.RPCURL, refusing chains without one as unavailable. Clients are
	// dialed on first use and kept; a failed dial is retried next time.
	Dial func(ctx context.Context, c Chain) (Client, error)
	// Logger receives debug records of refusals and warnings about chains;
	// nil discards them.
	Logger *slog.Logger
}

// Verifier checks payment claims against the configured chains. It is safe
// for concurrent use.
type Verifier struct {
	chains    map[uint64]*chainConn
	order     []uint64
	receiving common.Address
	maxAge    time.Duration
	now       func() time.Time
	log       *slog.Logger
	ownsConns bool
	transfer  common.Hash // keccak256(transferEvent)
}

// chainConn is a configured chain and its lazily dialed client.
type chainConn struct {
	chain  Chain
	dial   func(ctx context.Context, c Chain) (Client, error)
	owned  bool // clients come from dialRPC and are closed by the verifier
	mu     sync.Mutex
	client Client
}

var _ billing.PaymentVerifier = (*Verifier)(nil)

// transferEvent is the ERC-20 Transfer event's signature; its Keccak-256
// hash is topics[0] of every Transfer log.
const transferEvent = "Transfer(address,address,uint256)"

// New checks cfg and returns a Verifier. It does not contact any chain.
func New(cfg Config) (*Verifier, error) {
	if cfg.ReceivingAddress == (common.Address{}) {
		return nil, fault.New(fault.Invalid, "evm: receiving address is required")
	}
	if cfg.MaxAge < 0 {
		return nil, fault.New(fault.Invalid, "evm: negative maximum age")
	}
	v := &Verifier{
		chains:    make(map[uint64]*chainConn, len(cfg.Chains)),
		receiving: cfg.ReceivingAddress,
		maxAge:    cfg.MaxAge,
		now:       cfg.Now,
		log:       cfg.Logger,
		transfer:  crypto.Keccak256Hash([]byte(transferEvent)),
	}
	if v.maxAge == 0 {
		v.maxAge = DefaultMaxAge
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dial := cfg.Dial
	if dial == nil {
		dial = dialRPC
		v.ownsConns = true
	}
	for _, c := range cfg.Chains {
		switch {
		case c.ID == 0:
			return nil, fault.Newf(fault.Invalid, "evm: chain %q has no chain ID", c.Name)
		case c.Token == (common.Address{}):
			return nil, fault.Newf(fault.Invalid, "evm: chain %d has no token address", c.ID)
		case v.chains[c.ID] != nil:
			return nil, fault.Newf(fault.Invalid, "evm: chain %d is configured twice", c.ID)
		}
		v.chains[c.ID] = &chainConn{chain: c, dial: dial, owned: v.ownsConns}
		v.order = append(v.order, c.ID)
	}
	return v, nil
}

// dialRPC is the default dialer.
func dialRPC(ctx context.Context, c Chain) (Client, error) {
	if c.RPCURL == "" {
		return nil, errors.New("no RPC URL configured")
	}
	return ethclient.DialContext(ctx, c.RPCURL)
}

// ReceivingAddress returns the receiving address as lowercase 0x-hex.
func (v *Verifier) ReceivingAddress() string { return lower(v.receiving) }

// Chains returns the configured chains, in configuration order.
func (v *Verifier) Chains() []Chain {
	out := make([]Chain, 0, len(v.order))
	for _, id := range v.order {
		out = append(out, v.chains[id].chain)
	}
	return out
}

// Close closes the connections the default dialer opened. Clients from a
// custom Config.Dial belong to the caller and are left alone. The Verifier
// may still be used afterwards; it dials again.
func (v *Verifier) Close() error {
	if !v.ownsConns {
		return nil
	}
	for _, cc := range v.chains {
		cc.mu.Lock()
		if c, ok := cc.client.(interface{ Close() }); ok {
			c.Close()
		}
		cc.client = nil
		cc.mu.Unlock()
	}
	return nil
}

// get returns the chain's client, dialing and checking its chain ID on
// first use.
func (cc *chainConn) get(ctx context.Context) (Client, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.client != nil {
		return cc.client, nil
	}
	c, err := cc.dial(ctx, cc.chain)
	if err != nil {
		return nil, err
	}
	id, err := c.ChainID(ctx)
	if err == nil && (!id.IsUint64() || id.Uint64() != cc.chain.ID) {
		err = fmt.Errorf("RPC endpoint serves chain %s, configured %d", id, cc.chain.ID)
	}
	if err != nil {
		if cl, ok := c.(interface{ Close() }); ok && cc.owned {
			cl.Close()
		}
		return nil, err
	}
	cc.client = c
	return c, nil
}

// unavailable is the error for a chain that cannot be reached.
func (v *Verifier) unavailable(ctx context.Context, c Chain, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fault.Wrap(ctxErr, fault.Canceled, "request canceled")
	}
	v.log.Warn("evm: chain unavailable", "chain_id", c.ID, "chain", c.Name, "err", err)
	return fault.Wrap(err, fault.Unavailable, fmt.Sprintf("chain %d is unavailable, try again later", c.ID))
}

// refuse logs why a claim failed and returns the public mismatch error.
func (v *Verifier) refuse(claim billing.PaymentClaim, reason string) error {
	v.log.Debug("evm: payment refused", "chain_id", claim.ChainID, "tx_hash", claim.TxHash, "from", claim.From, "reason", reason)
	return fault.New(fault.Invalid, billing.MsgVerificationFailed)
}

// ToTokenUnits converts an amount of money to the token's base units:
// amount * 10**decimals / 10**8 (a dollar is 10**8 micro-cents). ok is
// false when the amount is not positive or is not a whole number of base
// units (a 6-decimal token cannot carry 1 micro-cent).
func ToTokenUnits(amount billing.MicroCents, decimals uint8) (units *big.Int, ok bool) {
	if amount <= 0 {
		return nil, false
	}
	n := new(big.Int).Mul(big.NewInt(int64(amount)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil))
	q, r := new(big.Int).QuoRem(n, big.NewInt(int64(billing.Dollar)), new(big.Int))
	return q, r.Sign() == 0
}

// VerifyPayment checks claim against its chain and returns the verified
// transfer. See the package documentation for the rules.
func (v *Verifier) VerifyPayment(ctx context.Context, claim billing.PaymentClaim) (billing.VerifiedPayment, error) {
	var none billing.VerifiedPayment
	cc := v.chains[claim.ChainID]
	if cc == nil {
		return none, fault.Newf(fault.Invalid, "unsupported chain_id %d", claim.ChainID)
	}
	chain := cc.chain
	if !strings.EqualFold(strings.TrimSpace(claim.Token), "USDT") {
		return none, fault.Newf(fault.Invalid, "unsupported token %q: only USDT is accepted", claim.Token)
	}
	txHash, ok := parseTxHash(claim.TxHash)
	if !ok {
		return none, fault.New(fault.Invalid, "invalid tx_hash")
	}
	if claim.Amount <= 0 {
		return none, fault.New(fault.Invalid, billing.MsgInvalidAmount)
	}
	if !common.IsHexAddress(claim.From) {
		return none, v.refuse(claim, "claiming wallet is not an address")
	}
	from := common.HexToAddress(claim.From)
	if from == v.receiving {
		// The receiving address paying itself moves no money.
		return none, v.refuse(claim, "the claiming wallet is the receiving address")
	}
	want, exact := ToTokenUnits(claim.Amount, chain.Decimals)
	if !exact {
		return none, v.refuse(claim, fmt.Sprintf("amount %d micro-cents is not a whole number of %d-decimal units", claim.Amount, chain.Decimals))
	}

	client, err := cc.get(ctx)
	if err != nil {
		return none, v.unavailable(ctx, chain, err)
	}
	receipt, err := client.TransactionReceipt(ctx, txHash)
	if errors.Is(err, ethereum.NotFound) {
		return none, fault.New(fault.Invalid, "transaction not found or not yet mined")
	}
	if err != nil {
		return none, v.unavailable(ctx, chain, err)
	}
	if receipt.TxHash != (common.Hash{}) && receipt.TxHash != txHash {
		return none, v.unavailable(ctx, chain, fmt.Errorf("RPC returned the receipt of %s for %s", receipt.TxHash, txHash))
	}
	if receipt.Status != types.ReceiptStatusSuccessful {
		return none, v.refuse(claim, "transaction failed")
	}
	if reason := matchTransfer(receipt.Logs, v.transfer, chain.Token, from, v.receiving, want); reason != "" {
		return none, v.refuse(claim, reason)
	}
	if receipt.BlockNumber == nil {
		return none, fault.New(fault.Invalid, "transaction not found or not yet mined")
	}

	header, err := client.HeaderByNumber(ctx, receipt.BlockNumber)
	if errors.Is(err, ethereum.NotFound) {
		return none, fault.New(fault.Invalid, "transaction is not on the canonical chain")
	}
	if err != nil {
		return none, v.unavailable(ctx, chain, err)
	}
	// The canonical header at that height must be the receipt's block.
	// Both headers are hashed here the same way rather than the canonical
	// one compared with receipt.BlockHash: on chains whose headers carry
	// fields go-ethereum does not know (Polygon, Avalanche and others have
	// had such), Header.Hash() differs from the node's block hash.
	byHash, err := client.HeaderByHash(ctx, receipt.BlockHash)
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		return none, v.unavailable(ctx, chain, err)
	}
	if err != nil || byHash.Hash() != header.Hash() {
		v.log.Debug("evm: receipt block not canonical", "chain_id", chain.ID, "tx_hash", txHash, "block", receipt.BlockNumber)
		return none, fault.New(fault.Invalid, "transaction is not on the canonical chain")
	}
	head, err := client.HeaderByNumber(ctx, nil)
	if err != nil {
		return none, v.unavailable(ctx, chain, err)
	}
	blockTime := time.Unix(int64(header.Time), 0)
	now := v.now()
	if headTime := time.Unix(int64(head.Time), 0); headTime.After(now) {
		now = headTime
	}
	if now.Sub(blockTime) > v.maxAge {
		return none, fault.Newf(fault.Invalid, billing.MsgExpiredFormat, int(v.maxAge.Seconds()))
	}
	block := receipt.BlockNumber.Uint64()
	var confs uint64
	if head.Number != nil && head.Number.IsUint64() && head.Number.Uint64() >= block {
		confs = head.Number.Uint64() - block + 1
	}
	if need := max(chain.Confirmations, 1); confs < need {
		return none, fault.Newf(fault.Invalid, "transaction has %d of %d confirmations", confs, need)
	}

	return billing.VerifiedPayment{
		ChainID:   chain.ID,
		TxHash:    strings.ToLower(txHash.Hex()),
		From:      lower(from),
		To:        lower(v.receiving),
		Token:     lower(chain.Token),
		Value:     want,
		Amount:    claim.Amount,
		BlockTime: blockTime,
	}, nil
}

// matchTransfer looks for the one Transfer log that pays the claim. It
// returns "" when found, else a reason for the logs.
func matchTransfer(logs []*types.Log, topic common.Hash, token, from, to common.Address, value *big.Int) string {
	reason := "no Transfer log from the configured token"
	for _, l := range logs {
		if l == nil || l.Removed || l.Address != token || len(l.Topics) != 3 || l.Topics[0] != topic {
			continue
		}
		switch {
		case common.BytesToAddress(l.Topics[2].Bytes()) != to:
			reason = "recipient is not the receiving address"
		case common.BytesToAddress(l.Topics[1].Bytes()) != from:
			reason = "sender is not the claiming wallet"
		case len(l.Data) != 32 || new(big.Int).SetBytes(l.Data).Cmp(value) != 0:
			reason = "value differs from the claimed amount"
		default:
			return ""
		}
	}
	return reason
}

// parseTxHash accepts 0x followed by 64 hex digits in either case.
func parseTxHash(s string) (common.Hash, bool) {
	if len(s) != 66 || s[:2] != "0x" {
		return common.Hash{}, false
	}
	for _, r := range s[2:] {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return common.Hash{}, false
		}
	}
	return common.HexToHash(s), true
}

// lower formats an address as lowercase 0x-hex.
func lower(a common.Address) string { return strings.ToLower(a.Hex()) }
