package devnet

import (
	_ "embed"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi"
	bind "github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// The TestUSDT contract as compiled by contracts/compile.js (solc 0.8.30,
// optimizer on with 200 runs, EVM version cancun); see contracts/README.md.
var (
	//go:embed contracts/TestUSDT.abi
	tokenABI string
	//go:embed contracts/TestUSDT.bin
	tokenBin string
)

// Token parameters of the devnet's USDT.
const (
	// TokenName is the devnet USDT's name().
	TokenName = "Tether USD (dev)"
	// TokenSymbol is its symbol().
	TokenSymbol = "USDT"
	// TokenDecimals is its decimals(), as on Ethereum.
	TokenDecimals = 6
)

// TokenABI returns the TestUSDT contract's ABI as JSON.
func TokenABI() string { return tokenABI }

// ParseTokenABI parses [TokenABI].
func ParseTokenABI() (abi.ABI, error) { return abi.JSON(strings.NewReader(tokenABI)) }

// TokenBytecode returns TestUSDT's creation bytecode (without constructor
// arguments).
func TokenBytecode() ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(tokenBin))
	if err != nil {
		return nil, fmt.Errorf("devnet: embedded TestUSDT bytecode: %w", err)
	}
	return b, nil
}

// DeployToken sends a transaction creating a TestUSDT with the given name,
// symbol and decimals, owned (and mintable only) by opts.From. The caller
// commits a block and checks the receipt. Tests use it to deploy look-alike
// and 18-decimal tokens next to the devnet's own.
func DeployToken(opts *bind.TransactOpts, backend bind.ContractBackend, name, symbol string, decimals uint8) (common.Address, *types.Transaction, error) {
	parsed, err := ParseTokenABI()
	if err != nil {
		return common.Address{}, nil, err
	}
	code, err := TokenBytecode()
	if err != nil {
		return common.Address{}, nil, err
	}
	args, err := parsed.Pack("", name, symbol, decimals)
	if err != nil {
		return common.Address{}, nil, err
	}
	return bind.DeployContract(opts, code, backend, args)
}
