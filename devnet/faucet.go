package devnet

import (
	"bytes"
	"context"
	"fmt"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi"
	bind "github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Faucet limits.
const (
	// MaxFaucetUSDT is the most test USDT one faucet call mints.
	MaxFaucetUSDT = 1_000_000
	// msgInvalidFaucetAmount is the public message for a bad amount.
	msgInvalidFaucetAmount = `invalid usdt amount: want a positive decimal string such as "100.00", at most 6 decimals, at most 1000000`
	// msgInvalidFaucetAddress is the public message for the zero address.
	msgInvalidFaucetAddress = "invalid address"
)

// FaucetResult reports a faucet drip.
type FaucetResult struct {
	// Address received the funds (lowercase 0x-hex).
	Address string `json:"address"`
	// USDT is the amount minted, as a decimal string with 6 decimals.
	USDT string `json:"usdt"`
	// MintTxHash is the mint transaction.
	MintTxHash string `json:"mint_tx_hash"`
	// GasTxHash is the ETH transfer for gas; empty when the address
	// already had at least 0.5 ETH.
	GasTxHash string `json:"gas_tx_hash,omitempty"`
}

// gasDrip is the ETH sent for gas (1 ETH), gasFloor the balance under which
// it is sent (0.5 ETH).
func gasDrip() *big.Int  { return big.NewInt(1e18) }
func gasFloor() *big.Int { return big.NewInt(5e17) }

// ParseUSDT parses a positive decimal dollar string such as "100", "100.5"
// or "100.000001" (at most 6 decimals, at most [MaxFaucetUSDT]) into
// 6-decimal token units. Anything else is fault.Invalid.
func ParseUSDT(s string) (*big.Int, error) {
	bad := fault.New(fault.Invalid, msgInvalidFaucetAmount)
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(whole) > 7 || len(frac) > TokenDecimals || (dot && frac == "") {
		return nil, bad
	}
	for _, r := range whole + frac {
		if r < '0' || r > '9' {
			return nil, bad
		}
	}
	units, ok := new(big.Int).SetString(whole+frac+strings.Repeat("0", TokenDecimals-len(frac)), 10)
	if !ok {
		return nil, bad
	}
	limit := new(big.Int).Mul(big.NewInt(MaxFaucetUSDT), big.NewInt(1_000_000))
	if units.Sign() <= 0 || units.Cmp(limit) > 0 {
		return nil, bad
	}
	return units, nil
}

// formatUSDT formats 6-decimal units as a decimal string.
func formatUSDT(units *big.Int) string {
	q, r := new(big.Int).QuoRem(units, big.NewInt(1_000_000), new(big.Int))
	return fmt.Sprintf("%s.%06d", q, r.Int64())
}

// Faucet mints usdt (a decimal dollar string, see [ParseUSDT]) test USDT to
// `to` and, if it is an account (not a contract) holding less than 0.5 ETH,
// sends it 1 ETH for gas, then seals a block. Bad input is fault.Invalid.
func (c *Chain) Faucet(ctx context.Context, to common.Address, usdt string) (FaucetResult, error) {
	if to == (common.Address{}) {
		return FaucetResult{}, fault.New(fault.Invalid, msgInvalidFaucetAddress)
	}
	units, err := ParseUSDT(usdt)
	if err != nil {
		return FaucetResult{}, err
	}
	gasLimit, err := c.gasDripLimit(ctx, to)
	if err != nil {
		return FaucetResult{}, fault.Wrap(err, fault.Internal, "faucet failed")
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return FaucetResult{}, fault.New(fault.Unavailable, "devnet is closed")
	}
	opts, err := c.transactor(ctx)
	if err != nil {
		return FaucetResult{}, fault.Wrap(err, fault.Internal, "faucet failed")
	}
	token := bind.NewBoundContract(c.usdt, c.tokenABI, c.client, c.client, c.client)
	mint, err := token.Transact(opts, "mint", to, units)
	if err != nil {
		return FaucetResult{}, fault.Wrap(err, fault.Internal, "faucet failed")
	}
	txs := []*types.Transaction{mint}
	res := FaucetResult{Address: strings.ToLower(to.Hex()), USDT: formatUSDT(units), MintTxHash: mint.Hash().Hex()}
	if gasLimit > 0 {
		opts.Nonce = new(big.Int).Add(opts.Nonce, big.NewInt(1))
		opts.Value = gasDrip()
		opts.GasLimit = gasLimit
		gas, gasErr := bind.NewBoundContract(to, abi.ABI{}, c.client, c.client, c.client).RawTransact(opts, nil)
		if gasErr != nil {
			err = gasErr
		} else {
			txs = append(txs, gas)
			res.GasTxHash = gas.Hash().Hex()
		}
	}
	// Seal whatever was sent, even after an error, so no transaction of the
	// deployer lingers in the pool.
	hashes := make([]common.Hash, len(txs))
	for i, tx := range txs {
		hashes[i] = tx.Hash()
	}
	c.sealLocked(hashes...)
	if err != nil {
		return FaucetResult{}, fault.Wrap(err, fault.Internal, "faucet failed")
	}
	for _, tx := range txs {
		if err := c.checkReceipt(ctx, tx); err != nil {
			return FaucetResult{}, fault.Wrap(err, fault.Internal, "faucet failed")
		}
	}
	c.log.Debug("devnet: faucet", "to", res.Address, "usdt", res.USDT, "gas_tx", res.GasTxHash)
	return res, nil
}

// gasDripLimit returns the gas limit of an ETH drip to `to`, or 0 if it
// needs none: it holds at least 0.5 ETH, or it is a contract (contracts do
// not pay for gas). Plain accounts take 21000 gas; EIP-7702 delegated
// accounts may run code on receipt and get more.
func (c *Chain) gasDripLimit(ctx context.Context, to common.Address) (uint64, error) {
	balance, err := c.client.BalanceAt(ctx, to, nil)
	if err != nil {
		return 0, err
	}
	if balance.Cmp(gasFloor()) >= 0 {
		return 0, nil
	}
	code, err := c.client.CodeAt(ctx, to, nil)
	if err != nil {
		return 0, err
	}
	switch {
	case len(code) == 0:
		return 21_000, nil
	case bytes.HasPrefix(code, []byte{0xef, 0x01, 0x00}):
		return 200_000, nil
	}
	return 0, nil
}
