package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
)

// The in-memory half of the ledger.
//
// A SQLite file belongs to one process (Open takes an exclusive lock on
// it), so this process sees every change to it. That lets the store keep
// two things in memory instead of writing them:
//
//   - Holds. A hold is a reservation that lives for one request; a crash
//     releases it anyway (the next Open releases whatever an earlier
//     version left in the holds table). So PlaceHold, ReleaseHold and
//     ReleaseExpiredHolds touch only memory, and only SettleHold writes:
//     the debit and its entry, in one durable transaction.
//   - The balances of the accounts that have holds, so a hold is decided
//     without reading the database.
//
// The book's rule: for every cached account, balance is the committed
// database balance less the journaled settlements not yet applied to it,
// and held is the sum of its open holds and of the debits in flight (a
// debit reserves its amount like a hold while its transaction runs). A
// balance-changing transaction marks its accounts busy (settlements of
// them wait), first has every journaled settlement of them applied, and
// applies its delta to the book after it commits, while it still holds
// the writer lock (Store.wmu). An account is loaded into the cache only
// under that lock, when no committed transaction can be waiting to apply
// its delta. Between a commit and its apply the book errs on the safe
// side: it still counts the debit's reservation as held.
type book struct {
	mu    sync.Mutex
	idle  sync.Cond // signalled when an account stops being busy
	accts map[string]*bookAcct
	holds map[string]*bookHold
	keys  map[bookKey]string // (account, idempotency key) → hold ID
}

type bookAcct struct {
	// balance is the account's balance: the database's, less the
	// journaled settlements not applied to it yet (see SettleHold).
	balance int64
	held    int64 // open holds and debits in flight
	// refs counts what keeps the account in the cache: open holds,
	// settlements not yet applied, transactions in flight.
	refs int
	// busy counts write transactions that change the balance in the
	// database; settlements of the account wait for them.
	busy int
	// unapplied counts journaled settlements not yet in the database.
	unapplied int
}

type bookKey struct{ account, key string }

// Hold states.
const (
	holdOpen = iota
	holdSettling
	holdResolved
)

type bookHold struct {
	h      billing.Hold
	fp     string
	key    string
	status int
}

// maxIdleAccounts bounds the cache: when more accounts than this have no
// hold, the idle ones are dropped (they are loaded again when needed).
const maxIdleAccounts = 100_000

func newBook() *book {
	b := &book{accts: map[string]*bookAcct{}, holds: map[string]*bookHold{}, keys: map[bookKey]string{}}
	b.idle.L = &b.mu
	return b
}

// acct returns the cached account, or nil. b.mu must be held.
func (b *book) acct(account string) *bookAcct { return b.accts[account] }

// load returns the cached account, reading it from the database if it is
// not cached. The caller holds s.wmu (so no committed transaction is
// waiting to apply a delta) and b.mu.
func (s *Store) load(ctx context.Context, account string) (*bookAcct, error) {
	b := s.book
	if a := b.accts[account]; a != nil {
		return a, nil
	}
	var bal, held int64
	err := s.read().QueryRowContext(ctx, sqlBalance, account).Scan(&bal, &held)
	if errors.Is(err, sql.ErrNoRows) {
		bal = 0
	} else if err != nil {
		return nil, err
	}
	if len(b.accts) >= maxIdleAccounts {
		for k, a := range b.accts {
			if a.refs == 0 {
				delete(b.accts, k)
			}
		}
	}
	// The holds table is not used by this process; Open released what an
	// earlier version left in it, so held is 0 here.
	a := &bookAcct{balance: bal}
	b.accts[account] = a
	return a, nil
}

// lockedAcct returns the account locked in the book (b.mu held on return
// when err is nil), loading it under the writer lock if it is not cached.
func (s *Store) lockedAcct(ctx context.Context, account string) (*bookAcct, error) {
	b := s.book
	b.mu.Lock()
	if a := b.accts[account]; a != nil {
		return a, nil
	}
	b.mu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b.mu.Lock()
	a, err := s.load(ctx, account)
	if err != nil {
		b.mu.Unlock()
		return nil, err
	}
	return a, nil
}

// release frees what a resolved hold or a finished debit kept from an
// account. b.mu must be held.
func (a *bookAcct) release(amount int64) {
	a.held -= amount
	a.refs--
}

// maxKeyedHolds bounds how many resolved holds with an idempotency key
// the book remembers (see pruneResolved).
const maxKeyedHolds = 100_000

// pruneResolved forgets resolved holds that expired at or before now. A
// resolved hold with an idempotency key is kept for the life of the
// process, so a retry under its key returns it (or conflicts), unless
// more than maxKeyedHolds such holds pile up. b.mu must be held.
func (b *book) pruneResolved(now time.Time) {
	keyedToo := len(b.keys) > maxKeyedHolds
	for id, h := range b.holds {
		if h.status == holdResolved && !h.h.ExpiresAt.After(now) && (h.key == "" || keyedToo) {
			delete(b.holds, id)
			if h.key != "" {
				delete(b.keys, bookKey{h.h.Account, h.key})
			}
		}
	}
}
