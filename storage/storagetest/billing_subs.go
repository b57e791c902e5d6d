package storagetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

// billSubs returns the ledger and subscription store of one handle.
func billSubs(t *testing.T, s Store) (billing.Ledger, billing.SubscriptionStore) {
	return as[billing.Ledger](t, s), as[billing.SubscriptionStore](t, s)
}

// billNewSub is a subscription of acct to resource costing cost an hour,
// anchored at anchor, with its first posting.
func billNewSub(acct, resource string, cost billing.MicroCents, anchor time.Time) (billing.Subscription, billing.Posting) {
	return billing.Subscription{Account: acct, Kind: "domain", Resource: resource, Type: billing.Domain, HourlyCost: cost, Anchor: anchor},
		billing.Posting{Account: acct, Type: billing.Domain, Amount: cost, Description: "first hour of " + resource, At: anchor}
}

// billCharge charges the period of sub starting at start.
func billCharge(ss billing.SubscriptionStore, sub billing.Subscription, start time.Time) (billing.Subscription, billing.Entry, error) {
	return ss.ChargePeriod(context.Background(), sub.ID, start, billing.Posting{Account: sub.Account, Type: sub.Type, Amount: sub.HourlyCost, Description: fmt.Sprintf("%s@%d", sub.ID, start.Unix()), At: start})
}

func testSubsCreateAndCharge(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	acct := billAddr(1)
	billCredit(t, l, acct, 1000, t0)

	s, first := billNewSub(acct, "example.com", 100, t0)
	sub, e, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	require.NotEmpty(t, sub.ID)
	require.Equal(t, acct, sub.Account)
	require.Equal(t, "domain", sub.Kind)
	require.Equal(t, "example.com", sub.Resource)
	require.Equal(t, billing.Domain, sub.Type)
	require.Equal(t, billing.MicroCents(100), sub.HourlyCost)
	billRequireTime(t, t0, sub.Anchor)
	billRequireTime(t, t0.Add(time.Hour), sub.PrepaidUntil)
	require.Equal(t, billing.SubActive, sub.Status)
	billRequireTime(t, t0, sub.CreatedAt)
	require.True(t, sub.EndedAt.IsZero())
	require.Equal(t, billing.MicroCents(-100), e.Amount)
	require.Equal(t, billing.MicroCents(900), e.BalanceAfter)
	require.Equal(t, billing.Domain, e.Type)
	require.Equal(t, "first hour of example.com", e.Description)
	got, err := ss.GetSubscription(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, sub, got)

	// The next period is the prepaid end, and is charged once.
	sub2, e2, err := billCharge(ss, sub, t0.Add(time.Hour))
	require.NoError(t, err)
	billRequireTime(t, t0.Add(2*time.Hour), sub2.PrepaidUntil)
	require.Equal(t, billing.SubActive, sub2.Status)
	require.Equal(t, billing.MicroCents(-100), e2.Amount)
	require.Equal(t, billing.MicroCents(800), e2.BalanceAfter)
	got, err = ss.GetSubscription(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, sub2, got)

	for _, start := range []time.Time{
		t0.Add(time.Hour),     // charged already
		t0,                    // the first period, charged at creation
		t0.Add(3 * time.Hour), // not the prepaid end
		t0.Add(2*time.Hour + time.Minute),
	} {
		_, _, err = billCharge(ss, sub, start)
		billRequireCode(t, err, fault.Conflict)
	}
	billRequireBooks(t, l, acct, billing.Balance{Total: 800})

	// Catching up after downtime: the missed periods, from the anchor.
	for k := 2; k <= 4; k++ {
		sub2, _, err = billCharge(ss, sub, t0.Add(time.Duration(k)*time.Hour))
		require.NoError(t, err)
		billRequireTime(t, t0.Add(time.Duration(k+1)*time.Hour), sub2.PrepaidUntil)
	}
	es := billRequireBooks(t, l, acct, billing.Balance{Total: 500})
	require.Len(t, es, 6)

	_, _, err = ss.ChargePeriod(ctx, "no-such-subscription", t0, billing.Posting{Amount: 1})
	billRequireCode(t, err, fault.NotFound)
	_, err = ss.GetSubscription(ctx, "no-such-subscription")
	billRequireCode(t, err, fault.NotFound)
}

func testSubsCreateConflict(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	billCredit(t, l, b, 1000, t0)

	s, first := billNewSub(a, "example.com", 100, t0)
	sub, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	_, _, err = ss.CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.Conflict)
	billRequireBooks(t, l, a, billing.Balance{Total: 900})

	// A subscription ID is unique.
	dup, dupFirst := billNewSub(a, "example.net", 100, t0)
	dup.ID = sub.ID
	_, _, err = ss.CreateSubscription(ctx, dup, dupFirst)
	billRequireCode(t, err, fault.Conflict)
	esBefore := billRequireBooks(t, l, a, billing.Balance{Total: 900})
	require.Len(t, esBefore, 2)

	// Another resource, kind or account is another subscription.
	s2, first2 := billNewSub(a, "example.org", 100, t0)
	_, _, err = ss.CreateSubscription(ctx, s2, first2)
	require.NoError(t, err)
	s3, first3 := billNewSub(a, "example.com", 100, t0)
	s3.Kind = "feed"
	_, _, err = ss.CreateSubscription(ctx, s3, first3)
	require.NoError(t, err)
	s4, first4 := billNewSub(b, "example.com", 100, t0)
	_, _, err = ss.CreateSubscription(ctx, s4, first4)
	require.NoError(t, err)
	billRequireBooks(t, l, a, billing.Balance{Total: 700})

	// Once cancelled, the resource may be subscribed again.
	require.NoError(t, ss.CancelSubscription(ctx, a, sub.ID, t0.Add(time.Minute)))
	again, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	require.NotEqual(t, sub.ID, again.ID)
	billRequireBooks(t, l, a, billing.Balance{Total: 600})
}

func testSubsCreateInsufficient(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)

	s, first := billNewSub(a, "example.com", 100, t0)
	_, _, err := ss.CreateSubscription(ctx, s, first) // unknown account
	billRequireCode(t, err, fault.InsufficientFunds)
	billCredit(t, l, a, 99, t0)
	_, _, err = ss.CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.InsufficientFunds)
	subs, err := ss.ListSubscriptions(ctx, a)
	require.NoError(t, err)
	require.Empty(t, subs, "a refused subscription leaves nothing behind")
	due, err := ss.DueSubscriptions(ctx, t0.Add(48*time.Hour), 10)
	require.NoError(t, err)
	require.Empty(t, due)
	es := billRequireBooks(t, l, a, billing.Balance{Total: 99})
	require.Len(t, es, 1)

	// Held money is not available either.
	billCredit(t, l, a, 1, t0)
	h, err := l.PlaceHold(ctx, billing.HoldRequest{Account: a, Amount: 1, ExpiresAt: billFar()})
	require.NoError(t, err)
	_, _, err = ss.CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.InsufficientFunds)
	require.NoError(t, l.ReleaseHold(ctx, h.ID))
	_, _, err = ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	billRequireBooks(t, l, a, billing.Balance{})
}

func testSubsIdempotentCreate(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)
	billCredit(t, l, a, 1000, t0)
	s, first := billNewSub(a, "example.com", 100, t0)
	first.IdempotencyKey = "subscribe-1"
	sub, e, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	sub2, e2, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err, "a retry under the same key returns the subscription it made")
	require.Equal(t, sub, sub2)
	require.Equal(t, e, e2)
	billRequireBooks(t, l, a, billing.Balance{Total: 900})

	other, otherFirst := billNewSub(a, "example.org", 100, t0)
	otherFirst.IdempotencyKey = "subscribe-1"
	_, _, err = ss.CreateSubscription(ctx, other, otherFirst)
	billRequireCode(t, err, fault.Conflict)
	// A key used by a plain debit is not a subscription.
	_, err = l.Debit(ctx, billing.Posting{Account: a, Type: billing.Domain, Amount: 100, IdempotencyKey: "plain"})
	require.NoError(t, err)
	_, first3 := billNewSub(a, "example.net", 100, t0)
	s3, _ := billNewSub(a, "example.net", 100, t0)
	first3.IdempotencyKey = "plain"
	_, _, err = ss.CreateSubscription(ctx, s3, first3)
	billRequireCode(t, err, fault.Conflict)
	subs, err := ss.ListSubscriptions(ctx, a)
	require.NoError(t, err)
	require.Len(t, subs, 1)
	billRequireBooks(t, l, a, billing.Balance{Total: 800})
}

func testSubsLapse(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)
	billCredit(t, l, a, 250, t0)
	s, first := billNewSub(a, "example.com", 100, t0)
	sub, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	sub, _, err = billCharge(ss, sub, t0.Add(time.Hour))
	require.NoError(t, err)

	// 50 left, 100 due: the subscription lapses and nothing is charged.
	lapsedAt := t0.Add(2*time.Hour + 5*time.Second)
	lapsed, _, err := ss.ChargePeriod(ctx, sub.ID, t0.Add(2*time.Hour), billing.Posting{Amount: 100, At: lapsedAt})
	billRequireCode(t, err, fault.InsufficientFunds)
	require.Equal(t, billing.SubInactive, lapsed.Status)
	got, err := ss.GetSubscription(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, billing.SubInactive, got.Status)
	billRequireTime(t, lapsedAt, got.EndedAt)
	billRequireTime(t, t0.Add(2*time.Hour), got.PrepaidUntil)
	es := billRequireBooks(t, l, a, billing.Balance{Total: 50})
	require.Len(t, es, 3)

	// An inactive subscription is not due and is not charged again.
	billCredit(t, l, a, 1000, t0)
	due, err := ss.DueSubscriptions(ctx, t0.Add(48*time.Hour), 10)
	require.NoError(t, err)
	require.Empty(t, due)
	_, _, err = billCharge(ss, sub, t0.Add(2*time.Hour))
	billRequireCode(t, err, fault.Conflict)
	billRequireCode(t, ss.CancelSubscription(ctx, a, sub.ID, t0), fault.NotFound)
	billRequireBooks(t, l, a, billing.Balance{Total: 1050})

	// The resource may be subscribed again.
	_, _, err = ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	billRequireBooks(t, l, a, billing.Balance{Total: 950})
}

func testSubsCancel(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	s, first := billNewSub(a, "example.com", 100, t0)
	sub, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)

	billRequireCode(t, ss.CancelSubscription(ctx, b, sub.ID, t0), fault.NotFound)
	billRequireCode(t, ss.CancelSubscription(ctx, a, "no-such-subscription", t0), fault.NotFound)
	at := t0.Add(10 * time.Minute)
	require.NoError(t, ss.CancelSubscription(ctx, a, sub.ID, at))
	got, err := ss.GetSubscription(ctx, sub.ID)
	require.NoError(t, err)
	require.Equal(t, billing.SubCancelled, got.Status)
	billRequireTime(t, at, got.EndedAt)
	billRequireTime(t, t0.Add(time.Hour), got.PrepaidUntil)
	billRequireCode(t, ss.CancelSubscription(ctx, a, sub.ID, at), fault.NotFound)

	// Cancelled: no more charges, no refund.
	_, _, err = billCharge(ss, sub, t0.Add(time.Hour))
	billRequireCode(t, err, fault.Conflict)
	due, err := ss.DueSubscriptions(ctx, t0.Add(48*time.Hour), 10)
	require.NoError(t, err)
	require.Empty(t, due)
	billRequireBooks(t, l, a, billing.Balance{Total: 900})
}

func testSubsDue(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)
	billCredit(t, l, a, 10_000, t0)
	create := func(res string, anchor time.Time) billing.Subscription {
		s, first := billNewSub(a, res, 100, anchor)
		sub, _, err := ss.CreateSubscription(ctx, s, first)
		require.NoError(t, err)
		return sub
	}
	// Prepaid until t0+1h, t0+1h30, t0+2h, t0+3h.
	s1 := create("one", t0)
	s3 := create("three", t0.Add(time.Hour))
	s2 := create("two", t0.Add(30*time.Minute))
	s4 := create("four", t0.Add(2*time.Hour))
	ids := func(now time.Time, limit int) []string {
		subs, err := ss.DueSubscriptions(ctx, now, limit)
		require.NoError(t, err)
		out := make([]string, len(subs))
		for i, s := range subs {
			require.Equal(t, billing.SubActive, s.Status)
			require.False(t, s.PrepaidUntil.After(now))
			out[i] = s.ID
		}
		return out
	}
	none, err := ss.DueSubscriptions(ctx, t0.Add(time.Hour-time.Microsecond), 10)
	require.NoError(t, err)
	require.NotNil(t, none)
	require.Empty(t, none)
	require.Equal(t, []string{s1.ID}, ids(t0.Add(time.Hour), 10), "due at PrepaidUntil")
	require.Equal(t, []string{s1.ID, s2.ID, s3.ID}, ids(t0.Add(2*time.Hour), 10), "longest due first")
	require.Equal(t, []string{s1.ID, s2.ID}, ids(t0.Add(5*time.Hour), 2))
	require.Equal(t, []string{s1.ID, s2.ID, s3.ID, s4.ID}, ids(t0.Add(5*time.Hour), 100))

	_, _, err = billCharge(ss, s1, s1.PrepaidUntil) // now prepaid until t0+2h
	require.NoError(t, err)
	require.Equal(t, []string{s2.ID, s1.ID, s3.ID}, ids(t0.Add(2*time.Hour), 10))
	require.NoError(t, ss.CancelSubscription(ctx, a, s2.ID, t0))
	require.Equal(t, []string{s1.ID, s3.ID}, ids(t0.Add(2*time.Hour), 10))

	_, err = ss.DueSubscriptions(ctx, t0, 0)
	billRequireCode(t, err, fault.Invalid)
}

func testSubsList(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	billCredit(t, l, b, 1000, t0)
	var want []string
	for i, at := range []time.Time{t0, t0.Add(time.Hour), t0.Add(time.Hour), t0.Add(2 * time.Hour)} {
		s, first := billNewSub(a, fmt.Sprintf("r%d", i), 100, at)
		sub, _, err := ss.CreateSubscription(ctx, s, first)
		require.NoError(t, err)
		want = append([]string{sub.ID}, want...)
	}
	s, first := billNewSub(b, "r0", 100, t0)
	_, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	subs, err := ss.ListSubscriptions(ctx, a)
	require.NoError(t, err)
	got := make([]string, len(subs))
	for i, s := range subs {
		require.Equal(t, a, s.Account)
		got[i] = s.ID
	}
	require.Equal(t, want, got, "newest first, ties newest written first")
	subs, err = ss.ListSubscriptions(ctx, billAddr(3))
	require.NoError(t, err)
	require.NotNil(t, subs)
	require.Empty(t, subs)
}

func testSubsValidation(t *testing.T, f Factory) {
	l, ss := billSubs(t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)
	billCredit(t, l, a, 1000, t0)
	for name, mod := range map[string]func(*billing.Subscription, *billing.Posting){
		"no account":       func(s *billing.Subscription, p *billing.Posting) { s.Account, p.Account = "", "" },
		"no kind":          func(s *billing.Subscription, _ *billing.Posting) { s.Kind = "" },
		"no resource":      func(s *billing.Subscription, _ *billing.Posting) { s.Resource = "" },
		"no cost":          func(s *billing.Subscription, _ *billing.Posting) { s.HourlyCost = 0 },
		"no first charge":  func(_ *billing.Subscription, p *billing.Posting) { p.Amount = 0 },
		"negative charge":  func(_ *billing.Subscription, p *billing.Posting) { p.Amount = -100 },
		"another's charge": func(_ *billing.Subscription, p *billing.Posting) { p.Account = billAddr(2) },
	} {
		t.Run(name, func(t *testing.T) {
			s, first := billNewSub(a, "example.com", 100, t0)
			mod(&s, &first)
			_, _, err := ss.CreateSubscription(ctx, s, first)
			billRequireCode(t, err, fault.Invalid)
		})
	}
	s, first := billNewSub(a, "example.com", 100, t0)
	sub, _, err := ss.CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	_, _, err = ss.ChargePeriod(ctx, sub.ID, sub.PrepaidUntil, billing.Posting{Amount: 0})
	billRequireCode(t, err, fault.Invalid)
	_, _, err = ss.ChargePeriod(ctx, sub.ID, sub.PrepaidUntil, billing.Posting{Account: billAddr(2), Amount: 100})
	billRequireCode(t, err, fault.Invalid)
	// The refused charges left the period chargeable.
	got, _, err := ss.ChargePeriod(ctx, sub.ID, sub.PrepaidUntil, billing.Posting{Amount: 100})
	require.NoError(t, err)
	billRequireTime(t, t0.Add(2*time.Hour), got.PrepaidUntil)
	billRequireBooks(t, l, a, billing.Balance{Total: 800})
}

// testSubsConcurrentTicks has two handles, as two server processes, tick
// 10 subscriptions through 5 periods with several goroutines each: every
// period is charged exactly once.
func testSubsConcurrentTicks(t *testing.T, f Factory) {
	open := f(t)
	h := [2]Store{open(t), open(t)}
	l := as[billing.Ledger](t, h[0])
	sss := [2]billing.SubscriptionStore{as[billing.SubscriptionStore](t, h[0]), as[billing.SubscriptionStore](t, h[1])}
	ctx := t.Context()
	t0 := billT0()
	const nsubs, periods, cost = 10, 5, billing.MicroCents(1_000)
	accts := []string{billAddr(1), billAddr(2)}
	for _, a := range accts {
		billCredit(t, l, a, 100*cost, t0)
	}
	subs := make(map[string]billing.Subscription)
	for i := range nsubs {
		s, first := billNewSub(accts[i%2], fmt.Sprintf("res-%d", i), cost, t0.Add(time.Duration(i)*time.Minute))
		sub, _, err := sss[i%2].CreateSubscription(ctx, s, first)
		require.NoError(t, err)
		subs[sub.ID] = sub
	}
	end := t0.Add(periods * time.Hour)

	var charged, conflicts atomic.Int32
	var wg sync.WaitGroup
	const tickers = 6 // 3 per handle
	billWarm(2*tickers, func(i int) { _, _ = sss[i%2].DueSubscriptions(ctx, t0, 1) })
	for w := range tickers {
		wg.Go(func() {
			ss := sss[w%2]
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for round := 0; ; round++ {
				due, err := ss.DueSubscriptions(ctx, end.Add(30*time.Minute), 100)
				if err != nil {
					t.Errorf("due: %v", err)
					return
				}
				if len(due) == 0 {
					return
				}
				if round > 1000 {
					t.Errorf("ticker %d: still %d due after %d rounds", w, len(due), round)
					return
				}
				r.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
				for _, sub := range due {
					// Now and then retry a period that is surely charged.
					start := sub.PrepaidUntil
					if r.IntN(4) == 0 {
						start = start.Add(-time.Hour)
					}
					_, _, err := billCharge(ss, sub, start)
					switch {
					case err == nil:
						charged.Add(1)
					case fault.CodeOf(err) == fault.Conflict:
						conflicts.Add(1)
					default:
						t.Errorf("charge %s at %v: %v", sub.ID, start, err)
					}
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(nsubs*periods), charged.Load(), "one charge per period")
	require.Positive(t, conflicts.Load(), "the tickers should have collided")

	for id, sub := range subs {
		got, err := sss[1].GetSubscription(ctx, id)
		require.NoError(t, err)
		require.Equal(t, billing.SubActive, got.Status)
		billRequireTime(t, sub.PrepaidUntil.Add(periods*time.Hour), got.PrepaidUntil)
	}
	for _, a := range accts {
		es := billRequireBooks(t, l, a, billing.Balance{Total: 100*cost - nsubs/2*(1+periods)*cost})
		require.Len(t, es, 1+nsubs/2*(1+periods))
		seen := make(map[string]bool)
		for _, e := range es[1:] {
			require.Equal(t, -cost, e.Amount)
			require.False(t, seen[e.Description], "period charged twice: %s", e.Description)
			seen[e.Description] = true
		}
	}
}

// testSubsCreateRace subscribes one account to one resource from 8
// goroutines over two handles: one subscription, one first charge.
func testSubsCreateRace(t *testing.T, f Factory) {
	open := f(t)
	h := [2]Store{open(t), open(t)}
	l := as[billing.Ledger](t, h[0])
	sss := [2]billing.SubscriptionStore{as[billing.SubscriptionStore](t, h[0]), as[billing.SubscriptionStore](t, h[1])}
	a := billAddr(1)
	billCredit(t, l, a, 1000, billT0())
	const n = 8
	billWarm(2*n, func(i int) { _, _ = sss[i%2].ListSubscriptions(context.Background(), a) })
	var won, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			s, first := billNewSub(a, "example.com", 100, billT0())
			_, _, err := sss[i%2].CreateSubscription(context.Background(), s, first)
			switch {
			case err == nil:
				won.Add(1)
			case fault.CodeOf(err) == fault.Conflict:
				refused.Add(1)
			default:
				t.Errorf("create: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	require.Equal(t, int32(1), won.Load())
	require.Equal(t, int32(n-1), refused.Load())
	subs, err := sss[1].ListSubscriptions(t.Context(), a)
	require.NoError(t, err)
	require.Len(t, subs, 1)
	es := billRequireBooks(t, l, a, billing.Balance{Total: 900})
	require.Len(t, es, 2)
}

// testSubsExclusiveRace: an exclusive subscription holds its kind and
// resource for one account. 8 accounts race for one subdomain over two
// handles: exactly one wins, and no loser is charged anything. While it
// is active nobody else gets it, exclusive or not; once cancelled, another
// account does. A resource nobody holds exclusively may be shared.
func testSubsExclusiveRace(t *testing.T, f Factory) {
	open := f(t)
	h := [2]Store{open(t), open(t)}
	l := as[billing.Ledger](t, h[0])
	sss := [2]billing.SubscriptionStore{as[billing.SubscriptionStore](t, h[0]), as[billing.SubscriptionStore](t, h[1])}
	ctx := t.Context()
	t0 := billT0()
	const racers, cost = 8, billing.MicroCents(10_000)
	accts := make([]string, racers)
	for i := range accts {
		accts[i] = billAddr(100 + i)
		billCredit(t, l, accts[i], 5*cost, t0)
	}
	var wins atomic.Int32
	var winner atomic.Value
	var wg sync.WaitGroup
	billWarm(racers, func(i int) { _, _ = sss[i%2].ListSubscriptions(ctx, accts[i]) })
	for i, a := range accts {
		wg.Go(func() {
			s, first := billNewSub(a, "myapp", cost, t0)
			s.Exclusive = true
			sub, _, err := sss[i%2].CreateSubscription(ctx, s, first)
			switch {
			case err == nil:
				wins.Add(1)
				winner.Store(sub)
			case fault.CodeOf(err) == fault.Conflict:
			default:
				t.Errorf("%s: %v", a, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(1), wins.Load(), "exactly one account reserves the resource")
	won := winner.Load().(billing.Subscription)
	require.True(t, won.Exclusive)
	for _, a := range accts {
		want := 5 * cost
		if a == won.Account {
			want -= cost
		}
		billRequireBooks(t, l, a, billing.Balance{Total: want}) // a loser paid nothing
	}

	// Held: refused to anyone else, exclusive or not.
	other := accts[0]
	if other == won.Account {
		other = accts[1]
	}
	s, first := billNewSub(other, "myapp", cost, t0.Add(time.Minute))
	_, _, err := sss[0].CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.Conflict)
	s.Exclusive = true
	_, _, err = sss[1].CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.Conflict)

	// Released: another account may take it.
	require.NoError(t, sss[0].CancelSubscription(ctx, won.Account, won.ID, t0.Add(2*time.Minute)))
	got, _, err := sss[1].CreateSubscription(ctx, s, first)
	require.NoError(t, err)
	require.True(t, got.Exclusive)
	back, err := sss[0].GetSubscription(ctx, got.ID)
	require.NoError(t, err)
	require.True(t, back.Exclusive, "stored")

	// Shared: without an exclusive holder, two accounts subscribe to one
	// resource (a feed), and then an exclusive claim on it is refused.
	for _, a := range accts[2:4] {
		s, first := billNewSub(a, "news", cost, t0)
		s.Kind = "feed"
		_, _, err := sss[0].CreateSubscription(ctx, s, first)
		require.NoError(t, err)
	}
	s, first = billNewSub(accts[4], "news", cost, t0)
	s.Kind, s.Exclusive = "feed", true
	_, _, err = sss[1].CreateSubscription(ctx, s, first)
	billRequireCode(t, err, fault.Conflict)
}
