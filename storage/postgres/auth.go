package postgres

import "github.com/perceptron-cloud/perceptron/auth"

// The auth store is the shared one (sqlstore.Auth, embedded in Store): a
// client key's count and insert are serialized per wallet by an advisory
// lock (pgDialect.Serialize), and the nonce sweep skips rows another
// process is deleting.
var _ auth.Store = (*Store)(nil)

// serializeLockClass is the first key of the transaction-scoped advisory
// lock that pgDialect.Serialize takes (the second is a hash of the
// scope: "client-keys:ADDRESS", "migrations"), so that Perceptron's locks
// keep to a key space of their own in a shared database.
const serializeLockClass int32 = 0x70637431 // "pct1"
