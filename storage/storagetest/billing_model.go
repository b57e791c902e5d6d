package storagetest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// billModelSeedEnv, if set to an integer, replays the randomized ledger
// test with that seed.
const billModelSeedEnv = "PERCEPTRON_LEDGER_SEED"

// billModel is the auditor: what the ledger should hold.
type billModel struct {
	accts map[string]*billModelAcct
	holds []*billModelHold
	keys  []*billModelKey
}

type billModelAcct struct {
	balance, held billing.MicroCents
	entries       int
	audited       int // entries checked so far
}

type billModelHold struct {
	id        string
	acct      string
	amount    billing.MicroCents
	expiresAt time.Time
	open      bool
}

// billModelKey is a keyed request that succeeded, to be retried.
type billModelKey struct {
	op      string // credit, debit, hold
	posting billing.Posting
	hold    billing.HoldRequest
	entry   billing.Entry
	held    billing.Hold
}

// testLedgerModel runs a few hundred seeded random operations against two
// handles and checks the ledger against billModel after every step.
func testLedgerModel(t *testing.T, f Factory) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(billModelSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, billModelSeedEnv)
		seed = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("randomized ledger test failed with seed %d; replay with %s=%d", seed, billModelSeedEnv, seed)
		}
	})
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	ls := billHandles(t, f)
	ctx := t.Context()
	t0 := billT0()
	accts := []string{billAddr(1), billAddr(2)}
	m := &billModel{accts: map[string]*billModelAcct{}}
	for _, a := range accts {
		m.accts[a] = &billModelAcct{}
	}

	const steps = 300
	for step := range steps {
		l := ls[r.IntN(2)]
		now := t0.Add(time.Duration(step) * time.Minute)
		acct := accts[r.IntN(len(accts))]
		ma := m.accts[acct]
		key := ""
		if r.IntN(3) == 0 {
			key = fmt.Sprintf("key-%d", step)
		}
		amount := func(max int) billing.MicroCents { return billing.MicroCents(1 + r.IntN(max)) }
		var what string

		switch op := r.IntN(100); {
		case op < 22:
			p := billing.Posting{Account: acct, Type: billing.Purchase, Amount: amount(5000), IdempotencyKey: key, At: now}
			what = fmt.Sprintf("credit %d key %q", p.Amount, key)
			e, err := l.Credit(ctx, p)
			require.NoError(t, err, what)
			ma.balance += p.Amount
			ma.entries++
			require.Equal(t, p.Amount, e.Amount, what)
			require.Equal(t, ma.balance, e.BalanceAfter, what)
			if key != "" {
				m.keys = append(m.keys, &billModelKey{op: "credit", posting: p, entry: e})
			}
		case op < 45:
			p := billing.Posting{Account: acct, Type: billing.ChatInference, Amount: amount(4000), IdempotencyKey: key, At: now}
			what = fmt.Sprintf("debit %d key %q (available %d)", p.Amount, key, ma.balance-ma.held)
			e, err := l.Debit(ctx, p)
			if p.Amount > ma.balance-ma.held {
				billRequireCode(t, err, fault.InsufficientFunds)
				break
			}
			require.NoError(t, err, what)
			ma.balance -= p.Amount
			ma.entries++
			require.Equal(t, -p.Amount, e.Amount, what)
			require.Equal(t, ma.balance, e.BalanceAfter, what)
			if key != "" {
				m.keys = append(m.keys, &billModelKey{op: "debit", posting: p, entry: e})
			}
		case op < 62:
			hr := billing.HoldRequest{Account: acct, Amount: amount(4000), ExpiresAt: now.Add(time.Duration(r.IntN(60)) * time.Minute), IdempotencyKey: key, At: now}
			what = fmt.Sprintf("hold %d key %q (available %d)", hr.Amount, key, ma.balance-ma.held)
			h, err := l.PlaceHold(ctx, hr)
			if hr.Amount > ma.balance-ma.held {
				billRequireCode(t, err, fault.InsufficientFunds)
				break
			}
			require.NoError(t, err, what)
			ma.held += hr.Amount
			require.Equal(t, hr.Amount, h.Amount, what)
			m.holds = append(m.holds, &billModelHold{id: h.ID, acct: acct, amount: hr.Amount, expiresAt: hr.ExpiresAt, open: true})
			if key != "" {
				m.keys = append(m.keys, &billModelKey{op: "hold", hold: hr, held: h})
			}
		case op < 76:
			h := m.pickHold(r)
			// A third of the settlements may exceed their holds, by up
			// to twice the hold.
			beyond := r.IntN(3) == 0
			amt := billing.MicroCents(0)
			if h.amount > 0 && beyond {
				amt = billing.MicroCents(r.IntN(int(h.amount) * 3))
			} else if h.amount > 0 {
				amt = billing.MicroCents(r.IntN(int(h.amount) * 13 / 10))
			}
			what = fmt.Sprintf("settle %s of %d for %d beyond %v (open %v)", h.id, h.amount, amt, beyond, h.open)
			e, err := l.SettleHold(ctx, billing.Settlement{HoldID: h.id, Amount: amt, Type: billing.ChatInference, ExceedHold: beyond, At: now})
			if !h.open {
				billRequireCode(t, err, fault.NotFound)
				break
			}
			require.NoError(t, err, what)
			ha := m.accts[h.acct]
			settled := min(amt, h.amount)
			if beyond && amt > h.amount {
				// The excess, from what is available besides every hold.
				settled = h.amount + min(amt-h.amount, ha.balance-ha.held)
			}
			h.open = false
			ha.held -= h.amount
			ha.balance -= settled
			ha.entries++
			require.Equal(t, -settled, e.Amount, what)
			require.Equal(t, ha.balance, e.BalanceAfter, what)
			require.Equal(t, h.acct, e.Account, what)
		case op < 84:
			h := m.pickHold(r)
			what = fmt.Sprintf("release %s (open %v)", h.id, h.open)
			err := l.ReleaseHold(ctx, h.id)
			if !h.open {
				billRequireCode(t, err, fault.NotFound)
				break
			}
			require.NoError(t, err, what)
			h.open = false
			m.accts[h.acct].held -= h.amount
		case op < 95:
			if len(m.keys) == 0 {
				continue
			}
			k := m.keys[r.IntN(len(m.keys))]
			same := r.IntN(2) == 0
			what = fmt.Sprintf("retry %s key %q same %v", k.op, k.posting.IdempotencyKey+k.hold.IdempotencyKey, same)
			switch k.op {
			case "credit", "debit":
				p := k.posting
				p.At = now
				call := l.Credit
				if k.op == "debit" {
					call = l.Debit
				}
				if !same {
					if r.IntN(2) == 0 {
						p.Amount++
					} else if k.op == "credit" {
						call, p.Type = l.Debit, billing.ChatInference
					} else {
						call, p.Type = l.Credit, billing.Purchase
					}
				}
				e, err := call(ctx, p)
				if !same {
					billRequireCode(t, err, fault.Conflict)
					break
				}
				require.NoError(t, err, what)
				require.Equal(t, k.entry, e, what)
			case "hold":
				hr := k.hold
				hr.At = now
				hr.ExpiresAt = now.Add(time.Hour)
				if !same {
					hr.Amount++
				}
				h, err := l.PlaceHold(ctx, hr)
				if !same {
					billRequireCode(t, err, fault.Conflict)
					break
				}
				require.NoError(t, err, what)
				require.Equal(t, k.held, h, what)
			}
		default:
			what = fmt.Sprintf("release expired at %v", now)
			want := 0
			for _, h := range m.holds {
				if h.open && !h.expiresAt.After(now) {
					h.open = false
					m.accts[h.acct].held -= h.amount
					want++
				}
			}
			n, err := l.ReleaseExpiredHolds(ctx, now)
			require.NoError(t, err, what)
			require.Equal(t, want, n, what)
		}

		// Audit every account after every step, through either handle: the
		// balance, and the entries this step wrote (all entries of a step
		// carry its time); every 25 steps and at the end, all entries.
		for _, a := range accts {
			mb := m.accts[a]
			msg := fmt.Sprintf("step %d (%s), account %s", step, what, a)
			la := ls[r.IntN(2)]
			bal, err := la.Balance(ctx, a)
			require.NoError(t, err, msg)
			require.Equal(t, billing.Balance{Total: mb.balance, Held: mb.held}, bal, msg)
			require.GreaterOrEqual(t, bal.Available(), billing.MicroCents(0), msg)
			full := step%25 == 0 || step == steps-1
			since := now
			if full {
				since = time.Time{}
			}
			es, err := billing.AllEntries(ctx, la, a, billing.EntryFilter{Since: since})
			require.NoError(t, err, msg)
			if full {
				require.Len(t, es, mb.entries, msg)
				var sum billing.MicroCents
				for _, e := range es {
					sum += e.Amount
				}
				require.Equal(t, mb.balance, sum, msg)
			} else {
				require.Len(t, es, mb.entries-mb.audited, msg)
			}
			mb.audited = mb.entries
			if len(es) > 0 {
				require.Equal(t, mb.balance, es[len(es)-1].BalanceAfter, msg)
			}
		}
	}
}

// pickHold returns a random known hold, or now and then one that does not
// exist.
func (m *billModel) pickHold(r *rand.Rand) *billModelHold {
	if len(m.holds) == 0 || r.IntN(20) == 0 {
		return &billModelHold{id: fmt.Sprintf("missing-%d", r.IntN(1000))}
	}
	// Favour open holds so that most settles and releases do something.
	if r.IntN(3) > 0 {
		var open []*billModelHold
		for _, h := range m.holds {
			if h.open {
				open = append(open, h)
			}
		}
		if len(open) > 0 {
			return open[r.IntN(len(open))]
		}
	}
	return m.holds[r.IntN(len(m.holds))]
}
