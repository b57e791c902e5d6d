package storagetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/page"
)

// TestFeedStore runs the feeds.Store part of the suite.
func TestFeedStore(t *testing.T, f Factory) {
	t.Run("QueueAndDedupe", func(t *testing.T) { testFeedsQueue(t, f) })
	t.Run("LeaseRace", func(t *testing.T) { testFeedsLeaseRace(t, f) })
	t.Run("Pages", func(t *testing.T) { testFeedsPages(t, f) })
}

func feedRaw(id string, at time.Time) feeds.RawItem {
	return feeds.RawItem{ID: id, Title: "title " + id, Content: "content of " + id, Link: "https://example.com/" + id, Source: "Example", Published: at, Tags: []string{"tech"}}
}

func testFeedsQueue(t *testing.T, f Factory) {
	fs := as[feeds.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0().Truncate(time.Second)
	n, err := fs.Enqueue(ctx, []feeds.RawItem{feedRaw("a", t0), feedRaw("b", t0), feedRaw("c", t0)}, t0)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = fs.Enqueue(ctx, []feeds.RawItem{feedRaw("a", t0), feedRaw("d", t0)}, t0)
	require.NoError(t, err)
	require.Equal(t, 1, n, "seen IDs are not queued again")

	got, err := fs.Lease(ctx, t0, time.Minute, 10)
	require.NoError(t, err)
	require.Len(t, got, 4)
	raw := map[string]feeds.Pending{}
	for _, p := range got {
		raw[p.Raw.ID] = p
	}
	require.Equal(t, feedRaw("b", t0).Title, raw["b"].Raw.Title)
	require.Equal(t, []string{"tech"}, raw["b"].Raw.Tags)
	billRequireTime(t, t0, raw["b"].Raw.Published)
	again, err := fs.Lease(ctx, t0.Add(30*time.Second), time.Minute, 10)
	require.NoError(t, err)
	require.Empty(t, again, "leased items are not due until the lease ends")

	require.NoError(t, fs.Retry(ctx, "a", t0.Add(2*time.Minute)))
	require.NoError(t, fs.Drop(ctx, "c"))
	it := feeds.Item{ID: "b", Timestamp: t0, Category: "technology", Headline: "h", Summary: "s", Source: "Example", Link: "https://example.com/b"}
	require.NoError(t, fs.Publish(ctx, it))
	stored, err := fs.GetItem(ctx, "b")
	require.NoError(t, err)
	billRequireTime(t, t0, stored.Timestamp)
	stored.Timestamp = it.Timestamp
	require.Equal(t, it, stored)
	_, err = fs.GetItem(ctx, "c")
	billRequireCode(t, err, fault.NotFound)

	// After the lease: a (retried, one attempt) at 2 min, d at 1 min.
	later, err := fs.Lease(ctx, t0.Add(90*time.Second), time.Minute, 10)
	require.NoError(t, err)
	require.Len(t, later, 1)
	require.Equal(t, "d", later[0].Raw.ID)
	later, err = fs.Lease(ctx, t0.Add(140*time.Second), time.Minute, 10) // d is leased until 150 s
	require.NoError(t, err)
	require.Len(t, later, 1)
	require.Equal(t, "a", later[0].Raw.ID)
	require.Equal(t, 1, later[0].Attempts)

	// Expired items are gone, and their IDs still seen.
	n, err = fs.ExpireItems(ctx, t0.Add(time.Second), 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = fs.GetItem(ctx, "b")
	billRequireCode(t, err, fault.NotFound)
	n, err = fs.Enqueue(ctx, []feeds.RawItem{feedRaw("b", t0), feedRaw("c", t0)}, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Zero(t, n, "deleted, expired and dropped items do not come back")
	n, err = fs.ForgetSeen(ctx, t0.Add(time.Second), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
}

// Two handles leasing at once never get the same item.
func testFeedsLeaseRace(t *testing.T, f Factory) {
	open := f(t)
	h := [2]feeds.Store{as[feeds.Store](t, open(t)), as[feeds.Store](t, open(t))}
	ctx := t.Context()
	t0 := billT0()
	var raws []feeds.RawItem
	for i := range 200 {
		raws = append(raws, feedRaw(fmt.Sprintf("r%03d", i), t0))
	}
	n, err := h[0].Enqueue(ctx, raws, t0)
	require.NoError(t, err)
	require.Equal(t, 200, n)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for {
				got, err := h[w%2].Lease(ctx, t0, time.Hour, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, p := range got {
					seen[p.Raw.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 200)
	for id, c := range seen {
		require.Equal(t, 1, c, "%s leased %d times", id, c)
	}
}

// 500 items, many sharing a timestamp, in pages: every item once, newest
// first, ties by ID; and by category.
func testFeedsPages(t *testing.T, f Factory) {
	fs := as[feeds.Store](t, fresh(t, f))
	ctx := t.Context()
	t0 := billT0().Truncate(time.Second)
	cats := []string{"crypto", "sports", "politics"}
	want, wantCat := map[string]bool{}, map[string]bool{}
	for i := range 500 {
		it := feeds.Item{ID: fmt.Sprintf("tweet-%04d", (i*37)%1000), Timestamp: t0.Add(time.Duration(i/7) * time.Second),
			Category: cats[i%3], Headline: "h", Summary: "s", Source: "X"}
		require.NoError(t, fs.Publish(ctx, it))
		want[it.ID] = true
		if it.Category == "sports" {
			wantCat[it.ID] = true
		}
	}
	for cat, expect := range map[string]map[string]bool{"": want, "sports": wantCat} {
		seen := map[string]bool{}
		r := page.Request{Limit: 13}
		var prev page.Key
		for {
			p, err := fs.ListItems(ctx, cat, r)
			require.NoError(t, err)
			for _, it := range p.Items {
				k := feeds.Key(it)
				require.True(t, prev.Older(k.Order, k.ID), "newest first, strictly older")
				prev = k
				require.False(t, seen[it.ID])
				seen[it.ID] = true
				if cat != "" {
					require.Equal(t, cat, it.Category)
				}
			}
			if !p.More {
				break
			}
			r.After = p.Next
		}
		require.Equal(t, expect, seen, "category %q", cat)
	}
}
