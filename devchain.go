package perceptron

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/ethereum/go-ethereum/common"

	"github.com/perceptron-cloud/perceptron/billing/evm"
)

// DevChain is an in-process development chain on which purchases are paid
// offline: in Dev mode the purchase verifier accepts payments on it, and
// the httpserver package serves its routes under /devnet/. Package dev
// provides one, over go-ethereum's simulated chain. This package does not
// import it, so a program that embeds the SDK without asking for a dev
// chain links no Ethereum node and no chain database.
type DevChain interface {
	// ReceivingAddress is where purchases are paid on the chain.
	ReceivingAddress() common.Address
	// EVMChain describes the chain to the purchase verifier.
	EVMChain() evm.Chain
	// Dial returns a client of the chain (c is EVMChain's value).
	Dial(ctx context.Context, c evm.Chain) (evm.Client, error)
	// RPCHandler serves the chain's JSON-RPC API (POST /devnet/rpc).
	RPCHandler() http.Handler
	// Info describes the chain (GET /devnet/info); rpcURL is where
	// RPCHandler is served.
	Info(rpcURL string) DevChainInfo
	// Faucet sends usdt (a decimal string, such as "100.00") of the
	// chain's test USDT, and gas, to `to` (POST /devnet/faucet).
	Faucet(ctx context.Context, to common.Address, usdt string) (DevFaucetResult, error)
	// Close stops the chain.
	Close() error
}

// DevChainInfo is what GET /devnet/info returns.
type DevChainInfo struct {
	// ChainID is the chain's ID.
	ChainID uint64 `json:"chain_id"`
	// RPCURL is the absolute URL of the JSON-RPC endpoint.
	RPCURL string `json:"rpc_url"`
	// USDTAddress is the test USDT contract, lowercase 0x-hex.
	USDTAddress string `json:"usdt_address"`
	// ReceivingAddress is where purchases are paid, lowercase 0x-hex.
	ReceivingAddress string `json:"receiving_address"`
}

// DevFaucetResult is what POST /devnet/faucet returns.
type DevFaucetResult struct {
	// Address received the funds (lowercase 0x-hex).
	Address string `json:"address"`
	// USDT is the amount minted, as a decimal string with 6 decimals.
	USDT string `json:"usdt"`
	// MintTxHash is the mint transaction.
	MintTxHash string `json:"mint_tx_hash"`
	// GasTxHash is the transfer of gas; empty when none was needed.
	GasTxHash string `json:"gas_tx_hash,omitempty"`
}

// DevChainConfig is what [Config.DevChain] starts a chain with.
type DevChainConfig struct {
	// ReceivingAddress is where purchases are paid; zero means the
	// chain's default.
	ReceivingAddress common.Address
	// Logger receives the chain's diagnostics; never nil.
	Logger *slog.Logger
}
