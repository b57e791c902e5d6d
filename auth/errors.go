package auth

import "github.com/perceptron-cloud/perceptron/fault"

// The public messages of auth errors, as the API reference words them.
const (
	MsgInvalidNonce       = "invalid or expired nonce"
	MsgChallengeExpired   = "challenge expired"
	MsgSignatureFailed    = "signature verification failed"
	MsgAddressMismatch    = "signature does not match claimed address"
	MsgInvalidAddress     = "invalid wallet address"
	MsgMissingToken       = "missing bearer token"
	MsgInvalidToken       = "invalid or revoked API key"
	MsgClientKeyForbidden = "client API keys are not authorized for this operation"
	MsgLabelLength        = "label must be between 1 and 64 characters"
	MsgKeyLimitNoPurchase = "maximum of 2 API keys reached without a credit purchase"
	MsgKeyLimit           = "maximum of 50 API keys reached"
	MsgKeyNotFound        = "API key not found"
)

// ErrClientKeyForbidden is returned when a client key is used where only a
// master key may act.
func ErrClientKeyForbidden() error { return fault.New(fault.Forbidden, MsgClientKeyForbidden) }
