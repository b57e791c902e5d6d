package storagetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// TestDomainStore runs the tunnel.Store part of the suite.
func TestDomainStore(t *testing.T, f Factory) {
	t.Run("ReserveAndGet", func(t *testing.T) { testDomainsReserve(t, f) })
	t.Run("ReserveRace", func(t *testing.T) { testDomainsRace(t, f) })
	t.Run("Ports", func(t *testing.T) { testDomainsPorts(t, f) })
	t.Run("ReleaseAndLapse", func(t *testing.T) { testDomainsRelease(t, f) })
	t.Run("Pages", func(t *testing.T) { testDomainsPages(t, f) })
}

// domReserve reserves subdomain for acct at `at`, costing cost an hour.
func domReserve(ctx context.Context, ds tunnel.Store, acct, subdomain string, cost billing.MicroCents, at time.Time) (tunnel.Domain, error) {
	id := uuid.NewString()
	sub := billing.Subscription{ID: id, Account: acct, Kind: tunnel.Kind, Resource: subdomain, Type: billing.Domain,
		HourlyCost: cost, Anchor: at, PrepaidUntil: at.Add(time.Hour), Status: billing.SubActive, CreatedAt: at, Exclusive: true}
	first := billing.Posting{Account: acct, Type: billing.Domain, Amount: cost, Description: "Domain: " + subdomain, At: at, IdempotencyKey: "sub:" + id + ":0"}
	return ds.ReserveDomain(ctx, tunnel.Domain{ID: id, Account: acct, Subdomain: subdomain, CreatedAt: at}, sub, first)
}

func testDomainsReserve(t *testing.T, f Factory) {
	s := fresh(t, f)
	l, ss, ds := as[billing.Ledger](t, s), as[billing.SubscriptionStore](t, s), as[tunnel.Store](t, s)
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	billCredit(t, l, b, 50, t0)

	d, err := domReserve(ctx, ds, a, "myapp", 100, t0)
	require.NoError(t, err)
	require.Equal(t, a, d.Account)
	require.Equal(t, "myapp", d.Subdomain)
	require.Zero(t, d.LocalPort)
	require.True(t, d.Active)
	require.Equal(t, billing.MicroCents(100), d.HourlyCost)
	billRequireTime(t, t0, d.CreatedAt)
	billRequireTime(t, t0.Add(time.Hour), d.PrepaidUntil)
	billRequireBooks(t, l, a, billing.Balance{Total: 900})
	sub, err := ss.GetSubscription(ctx, d.ID)
	require.NoError(t, err, "the domain's ID is its subscription's")
	require.True(t, sub.Exclusive)
	require.Equal(t, "myapp", sub.Resource)

	got, err := ds.GetDomain(ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, d, got)
	got, err = ds.ActiveDomain(ctx, "myapp")
	require.NoError(t, err)
	require.Equal(t, d, got)
	_, err = ds.ActiveDomain(ctx, "other")
	billRequireCode(t, err, fault.NotFound)
	_, err = ds.GetDomain(ctx, uuid.NewString())
	billRequireCode(t, err, fault.NotFound)

	// Taken: refused to another account, which pays nothing.
	_, err = domReserve(ctx, ds, b, "myapp", 10, t0)
	billRequireCode(t, err, fault.Conflict)
	billRequireBooks(t, l, b, billing.Balance{Total: 50})
	// Short of funds: nothing is written.
	_, err = domReserve(ctx, ds, b, "poor", 100, t0)
	billRequireCode(t, err, fault.InsufficientFunds)
	billRequireBooks(t, l, b, billing.Balance{Total: 50})
	_, err = ds.ActiveDomain(ctx, "poor")
	billRequireCode(t, err, fault.NotFound)
	subs, err := ss.ListSubscriptions(ctx, b)
	require.NoError(t, err)
	require.Empty(t, subs)
}

// Of accounts racing for one subdomain on two handles exactly one wins;
// the others are charged nothing and have no domain.
func testDomainsRace(t *testing.T, f Factory) {
	open := f(t)
	h := [2]Store{open(t), open(t)}
	l := as[billing.Ledger](t, h[0])
	ds := [2]tunnel.Store{as[tunnel.Store](t, h[0]), as[tunnel.Store](t, h[1])}
	ctx := t.Context()
	t0 := billT0()
	const racers, cost = 8, billing.MicroCents(10_000)
	accts := make([]string, racers)
	for i := range accts {
		accts[i] = billAddr(200 + i)
		billCredit(t, l, accts[i], 5*cost, t0)
	}
	billWarm(racers, func(i int) { _, _ = ds[i%2].ListDomains(ctx, accts[i], page.Request{}) })
	var wins atomic.Int32
	var winner atomic.Value
	var wg sync.WaitGroup
	for i, a := range accts {
		wg.Go(func() {
			d, err := domReserve(ctx, ds[i%2], a, "race", cost, t0)
			switch {
			case err == nil:
				wins.Add(1)
				winner.Store(d)
			case fault.CodeOf(err) == fault.Conflict:
			default:
				t.Errorf("%s: %v", a, err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(1), wins.Load())
	won := winner.Load().(tunnel.Domain)
	for _, a := range accts {
		want := 5 * cost
		if a == won.Account {
			want -= cost
		}
		billRequireBooks(t, l, a, billing.Balance{Total: want})
		p, err := ds[0].ListDomains(ctx, a, page.Request{})
		require.NoError(t, err)
		if a == won.Account {
			require.Len(t, p.Items, 1)
		} else {
			require.Empty(t, p.Items)
		}
	}
	got, err := ds[1].ActiveDomain(ctx, "race")
	require.NoError(t, err)
	require.Equal(t, won.ID, got.ID)
}

func testDomainsPorts(t *testing.T, f Factory) {
	s := fresh(t, f)
	l, ds := as[billing.Ledger](t, s), as[tunnel.Store](t, s)
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 1000, t0)
	billCredit(t, l, b, 1000, t0)
	d1, err := domReserve(ctx, ds, a, "one", 10, t0)
	require.NoError(t, err)
	d2, err := domReserve(ctx, ds, a, "two", 10, t0)
	require.NoError(t, err)
	d3, err := domReserve(ctx, ds, b, "three", 10, t0)
	require.NoError(t, err)

	got, err := ds.AssignPort(ctx, a, d1.ID, 10001)
	require.NoError(t, err)
	require.Equal(t, uint16(10001), got.LocalPort)
	require.Equal(t, int64(1), got.PortVersion)
	_, err = ds.AssignPort(ctx, a, d2.ID, 10001)
	billRequireCode(t, err, fault.Conflict)
	_, err = ds.AssignPort(ctx, b, d3.ID, 10001)
	require.NoError(t, err, "another account may use the same port")
	_, err = ds.AssignPort(ctx, b, d1.ID, 10002)
	billRequireCode(t, err, fault.NotFound) // not b's
	got, err = ds.AssignPort(ctx, a, d1.ID, 10003)
	require.NoError(t, err)
	require.Equal(t, int64(2), got.PortVersion)
	got, err = ds.AssignPort(ctx, a, d2.ID, 10001)
	require.NoError(t, err, "10001 is free again")
	require.Equal(t, uint16(10001), got.LocalPort)

	got, err = ds.UnassignPort(ctx, a, d1.ID)
	require.NoError(t, err)
	require.Zero(t, got.LocalPort)
	require.Equal(t, int64(3), got.PortVersion)
	stored, err := ds.GetDomain(ctx, d1.ID)
	require.NoError(t, err)
	require.Equal(t, got, stored)
	_, err = ds.UnassignPort(ctx, b, d1.ID)
	billRequireCode(t, err, fault.NotFound)
}

func testDomainsRelease(t *testing.T, f Factory) {
	s := fresh(t, f)
	l, ss, ds := as[billing.Ledger](t, s), as[billing.SubscriptionStore](t, s), as[tunnel.Store](t, s)
	ctx := t.Context()
	t0 := billT0()
	a, b := billAddr(1), billAddr(2)
	billCredit(t, l, a, 150, t0)
	billCredit(t, l, b, 1000, t0)
	d, err := domReserve(ctx, ds, a, "gone", 10, t0)
	require.NoError(t, err)
	_, err = ds.AssignPort(ctx, a, d.ID, 10005)
	require.NoError(t, err)

	_, err = ds.ReleaseDomain(ctx, b, d.ID, t0)
	billRequireCode(t, err, fault.NotFound) // not b's
	rel, err := ds.ReleaseDomain(ctx, a, d.ID, t0.Add(time.Minute))
	require.NoError(t, err)
	require.False(t, rel.Active)
	require.Zero(t, rel.LocalPort)
	billRequireBooks(t, l, a, billing.Balance{Total: 140}) // no refund
	sub, err := ss.GetSubscription(ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, billing.SubCancelled, sub.Status)
	_, err = ds.ReleaseDomain(ctx, a, d.ID, t0)
	billRequireCode(t, err, fault.NotFound)
	_, err = ds.AssignPort(ctx, a, d.ID, 10006)
	billRequireCode(t, err, fault.NotFound)
	_, err = ds.ActiveDomain(ctx, "gone")
	billRequireCode(t, err, fault.NotFound)
	got, err := ds.GetDomain(ctx, d.ID)
	require.NoError(t, err, "a released domain is still found by ID")
	require.False(t, got.Active)

	// Free at once: b reserves it.
	d2, err := domReserve(ctx, ds, b, "gone", 10, t0.Add(2*time.Minute))
	require.NoError(t, err)
	got, err = ds.ActiveDomain(ctx, "gone")
	require.NoError(t, err)
	require.Equal(t, d2.ID, got.ID)

	// A lapse for lack of funds: a has 140, the domain costs 100 an hour.
	d3, err := domReserve(ctx, ds, a, "lapse", 100, t0)
	require.NoError(t, err)
	_, err = ds.AssignPort(ctx, a, d3.ID, 10007)
	require.NoError(t, err)
	sub3, err := ss.GetSubscription(ctx, d3.ID)
	require.NoError(t, err)
	_, _, err = billCharge(ss, sub3, sub3.PrepaidUntil)
	billRequireCode(t, err, fault.InsufficientFunds)
	got, err = ds.GetDomain(ctx, d3.ID)
	require.NoError(t, err)
	require.False(t, got.Active)
	_, err = ds.ActiveDomain(ctx, "lapse")
	billRequireCode(t, err, fault.NotFound)
	p, err := ds.ListDomains(ctx, a, page.Request{})
	require.NoError(t, err)
	require.Empty(t, p.Items)
	// Its port is free for a's next domain.
	billCredit(t, l, a, 1000, t0)
	d4, err := domReserve(ctx, ds, a, "again", 10, t0.Add(3*time.Minute))
	require.NoError(t, err)
	_, err = ds.AssignPort(ctx, a, d4.ID, 10007)
	require.NoError(t, err)
}

// Pages of an account's domains, many sharing a creation time, hold
// every active domain once, newest first.
func testDomainsPages(t *testing.T, f Factory) {
	s := fresh(t, f)
	l, ds := as[billing.Ledger](t, s), as[tunnel.Store](t, s)
	ctx := t.Context()
	t0 := billT0()
	a := billAddr(1)
	billCredit(t, l, a, 1_000_000, t0)
	want := map[string]bool{}
	for i := range 23 {
		d, err := domReserve(ctx, ds, a, "d"+string(rune('a'+i)), 10, t0.Add(time.Duration(i/5)*time.Second))
		require.NoError(t, err)
		want[d.ID] = true
	}
	seen := map[string]bool{}
	r := page.Request{Limit: 4}
	var prev page.Key
	for {
		p, err := ds.ListDomains(ctx, a, r)
		require.NoError(t, err)
		for _, d := range p.Items {
			k := tunnel.Key(d)
			require.True(t, prev.Older(k.Order, k.ID), "newest first, strictly older pages")
			prev = k
			require.False(t, seen[d.ID], "repeated")
			seen[d.ID] = true
		}
		if !p.More {
			break
		}
		r.After = p.Next
	}
	require.Equal(t, want, seen)
	p, err := ds.ListDomains(ctx, billAddr(9), page.Request{})
	require.NoError(t, err)
	require.NotNil(t, p.Items)
	require.Empty(t, p.Items)
	require.False(t, p.More)
}
