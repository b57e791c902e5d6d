package evm

import (
	"github.com/ethereum/go-ethereum/common"
)

// Chain is one network on which USDT purchases are accepted.
type Chain struct {
	// ID is the EIP-155 chain ID.
	ID uint64
	// Name is for logs and operators, e.g. "Ethereum".
	Name string
	// RPCURL is the JSON-RPC endpoint (http, https, ws or wss). With the
	// default dialer a chain without one is listed but refused as
	// unavailable.
	RPCURL string
	// Token is the USDT contract. Only Transfer logs emitted by this
	// address count: a look-alike token emitting the same event is refused.
	Token common.Address
	// Decimals is the token's decimals(): the claimed dollar amount must
	// equal the transfer's value divided by 10**Decimals exactly.
	Decimals uint8
	// Confirmations is how many blocks, counting the transaction's own, the
	// chain must have before a payment is accepted. 0 and 1 both mean "mined".
	Confirmations uint64
}

// DefaultChains returns the USDT deployments Perceptron knows about, with no
// RPC URLs: the operator supplies an endpoint for each chain it wants to
// accept and should review every entry before shipping them.
//
// The addresses and decimals come from the project's field notes, which
// give them as the canonical Tether USDT deployments (Tether's own
// supported-protocols list and each chain's block explorer are the sources
// to re-check them against). Each address was also cross-checked against
// several independent public codebases (token lists, wallet and bridge
// integrations), which agree on all five, and on BSC's 18 decimals. They
// were not read from the chains when this was
// written; operators must verify them, for example with
// [Verifier.CheckTokens] and an explorer, before accepting real money:
//
//   - Ethereum (1): 0xdAC17F958D2ee523a2206206994597C13D831ec7, 6 decimals
//   - Arbitrum One (42161): 0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9, 6 decimals
//   - OP Mainnet (10): 0x94b008aA00579c1307B0EF2c499aD98a8ce58e58, 6 decimals
//   - Polygon PoS (137): 0xc2132D05D31c914a87C6611C10748AEb04B58e8F, 6 decimals
//   - BNB Smart Chain (56): 0x55d398326f99059fF775485246999027B3197955, 18 decimals
//     (Binance-Peg BSC-USD; note the 18 decimals)
//
// Base (8453) is deliberately absent: no authoritative USDT contract on Base
// was found, and a wrong default is worse than none. An operator who has
// verified one can append a Chain for it.
//
// Confirmations are conservative defaults (about a minute or less on each
// chain), well within the default maximum transaction age of five minutes.
// Run [Verifier.CheckTokens] at start to have each token's decimals() and
// symbol() checked against the configuration.
func DefaultChains() []Chain {
	return []Chain{
		{ID: 1, Name: "Ethereum", Token: common.HexToAddress("0xdAC17F958D2ee523a2206206994597C13D831ec7"), Decimals: 6, Confirmations: 3},
		{ID: 42161, Name: "Arbitrum One", Token: common.HexToAddress("0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9"), Decimals: 6, Confirmations: 1},
		{ID: 10, Name: "OP Mainnet", Token: common.HexToAddress("0x94b008aA00579c1307B0EF2c499aD98a8ce58e58"), Decimals: 6, Confirmations: 1},
		{ID: 137, Name: "Polygon PoS", Token: common.HexToAddress("0xc2132D05D31c914a87C6611C10748AEb04B58e8F"), Decimals: 6, Confirmations: 10},
		{ID: 56, Name: "BNB Smart Chain", Token: common.HexToAddress("0x55d398326f99059fF775485246999027B3197955"), Decimals: 18, Confirmations: 5},
	}
}
