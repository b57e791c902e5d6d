package storagetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/page"
)

func testPointsAward(t *testing.T, f Factory) {
	ps := as[billing.PointsStore](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0()
	acct := billAddr(1)

	n, err := ps.PointsBalance(ctx, acct)
	require.NoError(t, err)
	require.Zero(t, n)
	h, err := billing.AllPoints(ctx, ps, acct)
	require.NoError(t, err)
	require.NotNil(t, h)
	require.Empty(t, h)

	award := func(trigger string, pts int64, at time.Time) billing.PointsEntry {
		e, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: trigger, Points: pts, Description: trigger + " award", CreatedAt: at})
		require.NoError(t, err)
		require.NotEmpty(t, e.ID)
		require.Equal(t, acct, e.Account)
		require.Equal(t, trigger, e.Trigger)
		require.Equal(t, pts, e.Points)
		require.Equal(t, trigger+" award", e.Description)
		billRequireTime(t, at, e.CreatedAt)
		return e
	}
	w := award(billing.TriggerWelcomeBonus, 100, t0)
	c := award(billing.TriggerCreditPurchase, 25, t0.Add(time.Hour))
	u1 := award(billing.TriggerChatUsage, 1, t0.Add(30*time.Minute))
	u2 := award(billing.TriggerChatUsage, 2, t0.Add(30*time.Minute))
	neg := award("adjustment", -3, t0.Add(2*time.Hour))
	_, err = ps.AwardPoints(ctx, billing.PointsEntry{Account: billAddr(2), Trigger: billing.TriggerFeedActive, Points: 1000})
	require.NoError(t, err)

	n, err = ps.PointsBalance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, int64(125), n)
	h, err = billing.AllPoints(ctx, ps, acct)
	require.NoError(t, err)
	ties := []billing.PointsEntry{u2, u1} // same time: by ID, descending
	if u1.ID > u2.ID {
		ties = []billing.PointsEntry{u1, u2}
	}
	require.Equal(t, []billing.PointsEntry{neg, c, ties[0], ties[1], w}, h, "newest first, ties by ID")

	// In pages of 2, each strictly older than the last.
	var paged []billing.PointsEntry
	for r := (page.Request{Limit: 2}); ; {
		p, err := ps.PointsHistory(ctx, acct, r)
		require.NoError(t, err)
		require.LessOrEqual(t, len(p.Items), 2)
		paged = append(paged, p.Items...)
		if !p.More {
			break
		}
		r.After = p.Next
	}
	require.Equal(t, h, paged)
}

func testPointsIdempotent(t *testing.T, f Factory) {
	ps := as[billing.PointsStore](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	e1, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerWelcomeBonus, Points: 100, IdempotencyKey: "welcome", CreatedAt: billT0()})
	require.NoError(t, err)
	require.Equal(t, "welcome", e1.IdempotencyKey)
	e2, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerWelcomeBonus, Points: 999, IdempotencyKey: "welcome", CreatedAt: billT0().Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, e1, e2, "a used key stores nothing and returns the earlier entry")
	other, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: billAddr(2), Trigger: billing.TriggerWelcomeBonus, Points: 100, IdempotencyKey: "welcome"})
	require.NoError(t, err)
	require.NotEqual(t, e1.ID, other.ID, "keys are per account")
	n, err := ps.PointsBalance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, int64(100), n)
	h, err := billing.AllPoints(ctx, ps, acct)
	require.NoError(t, err)
	require.Len(t, h, 1)
}

func testPointsMetadata(t *testing.T, f Factory) {
	ps := as[billing.PointsStore](t, fresh(t, f))
	ctx := t.Context()
	acct := billAddr(1)
	meta := map[string]any{
		"usd":     25,
		"rate":    1.5,
		"tx_hash": "0xabc",
		"chain":   map[string]any{"id": 8453, "name": "base"},
		"models":  []any{"a", 2, true, nil},
	}
	e, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerCreditPurchase, Points: 25, Metadata: meta, CreatedAt: billT0()})
	require.NoError(t, err)
	// Numbers come back as float64, as encoding/json decodes them.
	want := map[string]any{
		"usd":     float64(25),
		"rate":    1.5,
		"tx_hash": "0xabc",
		"chain":   map[string]any{"id": float64(8453), "name": "base"},
		"models":  []any{"a", float64(2), true, nil},
	}
	require.Equal(t, want, e.Metadata)
	meta["usd"] = 0 // the store keeps its own copy
	plain, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerChatUsage, Points: 1, CreatedAt: billT0().Add(time.Second)})
	require.NoError(t, err)
	require.Nil(t, plain.Metadata)
	empty, err := ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerChatUsage, Points: 1, Metadata: map[string]any{}, CreatedAt: billT0().Add(2 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, map[string]any{}, empty.Metadata)

	h, err := billing.AllPoints(ctx, ps, acct)
	require.NoError(t, err)
	require.Len(t, h, 3)
	require.Equal(t, map[string]any{}, h[0].Metadata)
	require.Nil(t, h[1].Metadata)
	require.Equal(t, want, h[2].Metadata)

	_, err = ps.AwardPoints(ctx, billing.PointsEntry{Account: acct, Trigger: billing.TriggerChatUsage, Points: 1, Metadata: map[string]any{"bad": func() {}}})
	billRequireCode(t, err, fault.Invalid)
}

func testPointsValidation(t *testing.T, f Factory) {
	ps := as[billing.PointsStore](t, fresh(t, f))
	ctx := t.Context()
	_, err := ps.AwardPoints(ctx, billing.PointsEntry{Trigger: billing.TriggerChatUsage, Points: 1})
	billRequireCode(t, err, fault.Invalid)
	_, err = ps.AwardPoints(ctx, billing.PointsEntry{Account: billAddr(1), Points: 1})
	billRequireCode(t, err, fault.Invalid)
	e, err := ps.AwardPoints(ctx, billing.PointsEntry{ID: "fixed-id", Account: billAddr(1), Trigger: billing.TriggerChatUsage, Points: 1})
	require.NoError(t, err)
	require.Equal(t, "fixed-id", e.ID, "a given ID is kept")
	_, err = ps.AwardPoints(ctx, billing.PointsEntry{ID: "fixed-id", Account: billAddr(2), Trigger: billing.TriggerChatUsage, Points: 1})
	billRequireCode(t, err, fault.Conflict)
	n, err := ps.PointsBalance(ctx, billAddr(2))
	require.NoError(t, err)
	require.Zero(t, n)
}

// testPointsRace awards one keyed bonus from 8 goroutines over two handles.
func testPointsRace(t *testing.T, f Factory) {
	open := f(t)
	pss := [2]billing.PointsStore{as[billing.PointsStore](t, open(t)), as[billing.PointsStore](t, open(t))}
	acct := billAddr(1)
	const n = 8
	billWarm(n, func(i int) { _, _ = pss[i%2].PointsBalance(context.Background(), acct) })
	got := make([]billing.PointsEntry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = pss[i%2].AwardPoints(context.Background(), billing.PointsEntry{Account: acct, Trigger: billing.TriggerWelcomeBonus, Points: 100, IdempotencyKey: "welcome", Metadata: map[string]any{"i": 1}, CreatedAt: billT0()})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, got[0], got[i])
	}
	b, err := pss[0].PointsBalance(t.Context(), acct)
	require.NoError(t, err)
	require.Equal(t, int64(100), b)
}
