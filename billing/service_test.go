package billing_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const acct = "0x00000000000000000000000000000000000000aa"

func newService(t *testing.T, opts billing.Options) (*billing.Service, *clock) {
	c := &clock{t: time.Unix(1_748_000_000, 0).UTC()}
	opts.Now = c.Now
	return billing.NewService(memory.New(), opts), c
}

func credit(t *testing.T, s *billing.Service, c *clock, amount billing.MicroCents) {
	_, err := s.Ledger().Credit(context.Background(), billing.Posting{
		Account: acct, Type: billing.Purchase, Amount: amount, Description: "test", At: c.Now(),
	})
	require.NoError(t, err)
}

func TestParseDollars(t *testing.T) {
	for in, want := range map[string]int64{"25": 2500, "25.5": 2550, "25.00": 2500, "0.01": 1, "007": 700, "5": 500} {
		got, err := billing.ParseDollars(in)
		require.NoError(t, err, in)
		require.Equal(t, billing.FromCents(want), got, in)
	}
	for _, in := range []string{"", ".5", "25.", "25.001", "-1", "+1", "1e3", "1,00", " 1", "1 ", "0x10", "١٢", "NaN", "9999999999999"} {
		_, err := billing.ParseDollars(in)
		require.ErrorIs(t, err, fault.Invalid, in)
		require.Equal(t, billing.MsgInvalidAmount, fault.MessageOf(err), in)
	}
}

func TestFloorCents(t *testing.T) {
	require.Equal(t, int64(0), billing.MicroCents(999_999).FloorCents())
	require.Equal(t, int64(1), billing.MicroCents(1_000_000).FloorCents())
	require.Equal(t, int64(-1), billing.MicroCents(-1).FloorCents())
	require.Equal(t, int64(-1), billing.MicroCents(-1_000_000).FloorCents())
	require.Equal(t, "$25.00", billing.FormatDollars(25*billing.Dollar))
}

// Tiny charges show as differences of shown balances, which always add up.
func TestHistoryShownCentsAddUp(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, 10*billing.Dollar)
	for i := 0; i < 1000; i++ {
		_, err := s.Ledger().Debit(ctx, billing.Posting{
			Account: acct, Type: billing.ChatInference, Amount: 3_333, Description: "tiny", At: c.Now(),
		})
		require.NoError(t, err)
	}
	bal, err := s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, 10*billing.Dollar-3_333_000, bal.Total) // exact: nothing lost to rounding
	var hist []billing.HistoryEntry
	for h, err := range s.History(ctx, acct) { // 1001 entries: three pages
		require.NoError(t, err)
		hist = append(hist, h)
	}
	require.Len(t, hist, 1001)
	for i := 0; i+1 < len(hist); i++ { // newest first; each row chains to the one below
		require.Less(t, hist[i+1].Seq, hist[i].Seq)
		require.Equal(t, hist[i].BalanceAfter-hist[i].Amount, hist[i+1].BalanceAfter)
		require.Equal(t, hist[i].ShownBalanceAfter-hist[i].ShownAmount, hist[i+1].ShownBalanceAfter)
		if hist[i].Amount < 0 {
			require.LessOrEqual(t, hist[i].ShownAmount, int64(0), "a debit never shows as a credit")
		}
	}
	var shown int64
	var exact billing.MicroCents
	for _, h := range hist {
		shown += h.ShownAmount
		exact += h.Amount
	}
	require.Equal(t, bal.Total.FloorCents(), shown)
	require.Equal(t, bal.Total, exact)
	require.Equal(t, bal.Total.FloorCents(), hist[0].ShownBalanceAfter) // newest first
}

func TestSubscriptionBilling(t *testing.T) {
	ctx := context.Background()
	var lapsed []billing.Subscription
	var feedLapses int
	s, c := newService(t, billing.Options{OnLapse: map[string]billing.LapseFunc{
		"domain": func(_ context.Context, sub billing.Subscription) { lapsed = append(lapsed, sub) },
		"feed":   func(context.Context, billing.Subscription) { feedLapses++ },
	}})
	defer func() { require.Zero(t, feedLapses, "only the lapsed kind's handler runs") }()
	credit(t, s, c, 35*billing.Cent)

	sub, err := s.Subscribe(ctx, billing.SubscribeRequest{
		Account: acct, Kind: "domain", Resource: "myapp", Type: billing.Domain, HourlyCost: 10 * billing.Cent,
	})
	require.NoError(t, err)
	require.Equal(t, c.Now().Add(time.Hour), sub.PrepaidUntil)
	bal, _ := s.Balance(ctx, acct)
	require.Equal(t, 25*billing.Cent, bal.Total) // first hour charged at once

	// Same resource twice: conflict.
	_, err = s.Subscribe(ctx, billing.SubscribeRequest{Account: acct, Kind: "domain", Resource: "myapp", Type: billing.Domain, HourlyCost: 10 * billing.Cent})
	require.ErrorIs(t, err, fault.Conflict)

	// Nothing due before the hour.
	c.Advance(59 * time.Minute)
	n, err := s.Tick(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// Downtime: 2h30m later two hours are due; both are charged, each at
	// its own period from the anchor.
	c.Advance(91 * time.Minute)
	n, err = s.Tick(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	got, err := s.Subscriptions(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, sub.Anchor.Add(3*time.Hour), got[0].PrepaidUntil)
	bal, _ = s.Balance(ctx, acct)
	require.Equal(t, 5*billing.Cent, bal.Total)

	// Ticking again charges nothing twice.
	n, err = s.Tick(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// The next hour cannot be paid: the subscription lapses and the owner is told.
	c.Advance(time.Hour)
	n, err = s.Tick(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Len(t, lapsed, 1)
	got, _ = s.Subscriptions(ctx, acct)
	require.Equal(t, billing.SubInactive, got[0].Status)
	bal, _ = s.Balance(ctx, acct)
	require.Equal(t, 5*billing.Cent, bal.Total)

	// domain_active points: one per paid hour.
	pts, err := s.Points(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, int64(3), pts)
}

func TestSubscriptionConcurrentTicksChargeOnce(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, 100*billing.Dollar)
	for i := 0; i < 5; i++ {
		_, err := s.Subscribe(ctx, billing.SubscribeRequest{
			Account: acct, Kind: "feed", Resource: string(rune('a' + i)), Type: billing.NewsFeed, HourlyCost: 7 * billing.Cent,
		})
		require.NoError(t, err)
	}
	c.Advance(4*time.Hour + time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = s.Tick(ctx) }()
	}
	wg.Wait()
	bal, _ := s.Balance(ctx, acct)
	require.Equal(t, 100*billing.Dollar-5*5*7*billing.Cent, bal.Total) // 5 subs x (first + 4 hours)
}

func TestCancelStopsBilling(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, billing.Dollar)
	sub, err := s.Subscribe(ctx, billing.SubscribeRequest{Account: acct, Kind: "feed", Resource: "news", Type: billing.NewsFeed, HourlyCost: 10 * billing.Cent})
	require.NoError(t, err)
	require.NoError(t, s.Cancel(ctx, acct, sub.ID))
	require.ErrorIs(t, s.Cancel(ctx, acct, sub.ID), fault.NotFound)
	c.Advance(5 * time.Hour)
	n, err := s.Tick(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	bal, _ := s.Balance(ctx, acct)
	require.Equal(t, 90*billing.Cent, bal.Total) // no refund, no further charge
}

func TestSubscribeWithoutFunds(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, 5*billing.Cent)
	_, err := s.Subscribe(ctx, billing.SubscribeRequest{Account: acct, Kind: "feed", Resource: "news", Type: billing.NewsFeed, HourlyCost: 10 * billing.Cent})
	require.ErrorIs(t, err, fault.InsufficientFunds)
	subs, err := s.Subscriptions(ctx, acct)
	require.NoError(t, err)
	require.Empty(t, subs)
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, 50*billing.Dollar)
	_, err := s.Subscribe(ctx, billing.SubscribeRequest{Account: acct, Kind: "domain", Resource: "x", Type: billing.Domain, HourlyCost: 10 * billing.Cent})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		c.Advance(10 * time.Minute)
		_, err := s.Ledger().Debit(ctx, billing.Posting{
			Account: acct, Type: billing.ChatInference, Amount: 40 * billing.Cent, At: c.Now(),
			Usage: &billing.Usage{Model: "m", InputTokens: 1000, OutputTokens: 500},
		})
		require.NoError(t, err)
	}
	sum, err := s.Summary(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, int64(5000-10-120), sum.BalanceCents)
	require.Equal(t, int64(4500), sum.Tokens24h)
	require.Equal(t, int64(3), sum.Requests24h)
	require.Equal(t, int64(130), sum.Cost24hCents)
	require.Equal(t, int64(1), sum.ActiveDomains)
	require.Equal(t, int64(10+120/24), sum.BurnRateCentsPerHr)
	require.InDelta(t, 4870.0/15.0, sum.RunwayHours, 0.01)
	require.Equal(t, []billing.ServiceCost{
		{Service: "chat", CostCents: 120, Tokens: 4500}, {Service: "stt"}, {Service: "feed"}, {Service: "domain", CostCents: 10},
	}, sum.CostByService)

	b, err := s.UsageHistory(ctx, acct, 1, 5)
	require.NoError(t, err)
	var tokens, reqs, chat, dom int64
	for _, bk := range b {
		require.Zero(t, bk.Start.Unix()%300, "aligned to the bucket width")
		tokens += bk.ChatTokens
		reqs += bk.Requests
		chat += bk.ChatCostCents
		dom += bk.DomainCostCents
	}
	require.Equal(t, int64(4500), tokens)
	require.Equal(t, int64(3), reqs)
	require.Equal(t, int64(120), chat)
	require.Equal(t, int64(10), dom)
	require.Len(t, b, 13) // an hour of 5-minute buckets, both ends included

	for _, bad := range [][2]int64{{0, 60}, {721, 60}, {24, 0}, {24, 1441}} {
		_, err := s.UsageHistory(ctx, acct, bad[0], bad[1])
		require.ErrorIs(t, err, fault.Invalid)
	}
	// Nothing burns: runway 0.
	s2, _ := newService(t, billing.Options{})
	sum, err = s2.Summary(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, sum.RunwayHours)
}

// Spending under a cent shows: costs and the burn rate are summed in
// micro-cents and rounded up once, runway divides the exact figures, and
// the summary pages through more entries than one page holds.
func TestMetricsSubCentSpend(t *testing.T) {
	ctx := context.Background()
	s, c := newService(t, billing.Options{})
	credit(t, s, c, 10*billing.Dollar)
	const n, each = billing.HistoryPage + 100, 600 // 0.0006 cents a request
	for range n {
		_, err := s.Ledger().Debit(ctx, billing.Posting{
			Account: acct, Type: billing.ChatInference, Amount: each, At: c.Now(),
			Usage: &billing.Usage{Model: "m", InputTokens: 1, OutputTokens: 1},
		})
		require.NoError(t, err)
	}
	sum, err := s.Summary(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, int64(n), sum.Requests24h, "every page read")
	require.Equal(t, int64(2*n), sum.Tokens24h)
	require.Equal(t, int64(1), sum.Cost24hCents, "0.36 cents spent shows as 1, not 0")
	require.Equal(t, int64(1), sum.CostByService[0].CostCents)
	require.Equal(t, int64(1), sum.BurnRateCentsPerHr, "0.015 cents an hour shows as 1, not 0")
	exact := float64(10*billing.Dollar-n*each) / (float64(n*each) / 24)
	require.InDelta(t, exact, sum.RunwayHours, 0.01)
	b, err := s.UsageHistory(ctx, acct, 1, 60)
	require.NoError(t, err)
	var cost, reqs int64
	for _, bk := range b {
		cost += bk.ChatCostCents
		reqs += bk.Requests
	}
	require.Equal(t, int64(1), cost)
	require.Equal(t, int64(n), reqs)
}

// A Grant credits the wallet, shows in its history with its type, is
// not a completed purchase and awards no points; the ledger refuses an
// account that is not a wallet address, and a credit of a debit type.
func TestGrant(t *testing.T) {
	s, _ := newService(t, billing.Options{})
	ctx := context.Background()
	e, err := s.Grant(ctx, acct, billing.FromCents(300), "Trial credit", "trial")
	require.NoError(t, err)
	require.Equal(t, billing.Grant, e.Type)
	again, err := s.Grant(ctx, acct, billing.FromCents(300), "Trial credit", "trial")
	require.NoError(t, err)
	require.Equal(t, e, again, "a retry under the key applies once")
	bal, err := s.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.FromCents(300), bal.Total)
	bought, err := s.HasCompletedPurchase(ctx, acct)
	require.NoError(t, err)
	require.False(t, bought, "a Grant is not a purchase")
	pts, err := s.Store().PointsBalance(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, pts, "a Grant awards no purchase points")
	es, err := billing.AllEntries(ctx, s.Ledger(), acct, billing.EntryFilter{})
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, billing.Grant, es[0].Type)
	require.Equal(t, "Trial credit", es[0].Description)

	_, err = s.Grant(ctx, "bob", billing.Cent, "", "")
	require.ErrorIs(t, err, fault.Invalid)
	_, err = s.Ledger().Credit(ctx, billing.Posting{Account: "bob", Type: billing.Purchase, Amount: billing.Cent})
	require.ErrorIs(t, err, fault.Invalid)
	_, err = s.Ledger().Credit(ctx, billing.Posting{Account: acct, Type: billing.ChatInference, Amount: billing.Cent})
	require.ErrorIs(t, err, fault.Invalid)
	_, err = s.Grant(ctx, acct, 0, "", "")
	require.ErrorIs(t, err, fault.Invalid)
}
