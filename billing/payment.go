package billing

import (
	"context"
	"math/big"
	"time"
)

// PaymentClaim is a user's claim that an on-chain transfer paid for credits.
type PaymentClaim struct {
	// ChainID is the EIP-155 chain ID.
	ChainID uint64
	// TxHash is the transaction hash, lowercase 0x-hex.
	TxHash string
	// Token is the token symbol the user named ("USDT").
	Token string
	// From is the authenticated wallet, lowercase: the transfer's sender
	// must be this address.
	From string
	// Amount is the claimed amount in micro-cents; the transfer's value
	// must equal it exactly.
	Amount MicroCents
}

// VerifiedPayment is a transfer the chain confirmed.
type VerifiedPayment struct {
	ChainID   uint64
	TxHash    string
	From      string
	To        string
	Token     string // the token contract address, lowercase
	Value     *big.Int
	Amount    MicroCents
	BlockTime time.Time
}

// PaymentVerifier checks claimed payments against a chain. The evm
// subpackage implements it with go-ethereum's ethclient.
type PaymentVerifier interface {
	// VerifyPayment returns the verified transfer, or an error whose code
	// and message say why not (fault.Invalid with the API's messages for
	// mismatches, expiry and unknown chains; fault.Unavailable when the
	// chain cannot be reached).
	VerifyPayment(ctx context.Context, c PaymentClaim) (VerifiedPayment, error)
	// ReceivingAddress is where users send USDT (the same on every chain).
	ReceivingAddress() string
}

// Public messages of purchase errors, as the API reference words them.
const (
	MsgInvalidAmount      = "invalid amount"
	MsgMinimumPurchase    = "minimum purchase is $5"
	MsgVerificationFailed = "transaction verification failed (amount, token, or recipient mismatch)"
	MsgAlreadyProcessed   = "transaction already processed"
	// MsgExpiredFormat takes the maximum age in seconds.
	MsgExpiredFormat = "transaction expired: older than %d seconds"
)
