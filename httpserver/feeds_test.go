package httpserver_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/dev"
	"github.com/perceptron-cloud/perceptron/feeds"
)

// devFeedEnv is a platform in Dev mode without its chain: the sample
// news enriched by the dev model.
func devFeedEnv(t *testing.T, tick time.Duration) *env {
	cfg := dev.Enable(perceptron.Config{TickInterval: tick})
	cfg.DevChain = nil
	c := &clock{t: time.Now().Truncate(time.Second)}
	cfg.Now = c.Now
	cfg.Feeds.Sources[0].(*feeds.FileSource).Now = c.Now
	e := newEnv(t, cfg)
	e.clock = c
	return e
}

func TestFeedEndpoints(t *testing.T) {
	e := devFeedEnv(t, 0)
	a := e.newAgent(t, billing.FromCents(100))
	broke := e.newAgent(t, 0)
	poor := e.newAgent(t, billing.FromCents(5))

	st, cats := e.call("GET", "/api/feeds/news/categories", "", nil)
	require.Equal(t, 200, st)
	require.Len(t, cats["categories"], 7)
	require.Equal(t, map[string]any{"id": "crypto", "name": "Crypto", "description": "Cryptocurrency market news"}, cats["categories"].([]any)[0])

	e.expectError(401, "missing bearer token", "GET", "/api/feeds/news", "", nil)
	e.expectError(403, "news feed subscription required", "GET", "/api/feeds/news", a.key, nil)
	e.expectError(403, "news feed subscription required", "GET", "/api/feeds/news/file-dev-01", a.key, nil)
	st, s := e.call("GET", "/api/feeds/news/status", a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"feed_type": "news", "status": "Inactive", "subscribed_at": 0.0, "prepaid_until": 0.0, "hourly_cost": 10.0}, s)
	e.expectError(402, "no account found, purchase credits first", "POST", "/api/feeds/news/subscribe", broke.key, nil)
	e.expectError(402, "insufficient credits for news feed subscription", "POST", "/api/feeds/news/subscribe", poor.key, nil)
	e.expectError(404, "not subscribed to news feed", "POST", "/api/feeds/news/unsubscribe", a.key, nil)

	st, sub := e.call("POST", "/api/feeds/news/subscribe", a.key, nil)
	require.Equal(t, 200, st, "%v", sub)
	require.Equal(t, map[string]any{"status": "subscribed", "prepaid_until": float64(e.clock.Now().Add(time.Hour).Unix()), "hourly_cost_cents": 10.0}, sub)
	e.expectError(409, "already subscribed to news feed", "POST", "/api/feeds/news/subscribe", a.key, nil)
	require.Equal(t, int64(90), e.balanceCents(a.key))
	h := e.history(a.key)
	require.Equal(t, "NewsFeed", h[0].TxType)
	require.Equal(t, int64(-10), h[0].Amount)
	st, s = e.call("GET", "/api/feeds/news/status", a.master, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "Active", s["status"])
	_, sum := e.call("GET", "/api/metrics/summary", a.master, nil)
	require.Equal(t, 1.0, sum["active_services"].(map[string]any)["feeds"])
	feedCost := 0.0
	for _, c := range sum["cost_by_service"].([]any) {
		if c.(map[string]any)["service"] == "feed" {
			feedCost = c.(map[string]any)["cost_cents"].(float64)
		}
	}
	require.Equal(t, 10.0, feedCost)
	require.Equal(t, float64(e.clock.Now().Unix()), s["subscribed_at"])

	// The sample items arrive, enriched by the dev model.
	var items []any
	require.Eventually(t, func() bool {
		_, b := e.call("GET", "/api/feeds/news?limit=100", a.key, nil)
		items = b["items"].([]any)
		return len(items) == 28
	}, 10*time.Second, 50*time.Millisecond)
	cats3 := map[string]bool{}
	for _, raw := range items {
		it := raw.(map[string]any)
		cats3[it["category"].(string)] = true
		require.LessOrEqual(t, feeds.WordCount(it["headline"].(string)), 15)
		require.LessOrEqual(t, feeds.WordCount(it["summary"].(string)), 40)
		require.NotEmpty(t, it["source"])
		require.NotNil(t, it["link"])
	}
	require.Len(t, cats3, 7)
	first := items[0].(map[string]any)
	require.Greater(t, first["timestamp"].(float64), items[27].(map[string]any)["timestamp"].(float64), "newest first")

	// One item; a missing one.
	st, one := e.call("GET", "/api/feeds/news/"+first["id"].(string), a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, first, one)
	e.expectError(404, "not found", "GET", "/api/feeds/news/tweet-0", a.key, nil)

	// Category, limit, before.
	_, b := e.call("GET", "/api/feeds/news?category=sports", a.key, nil)
	require.Len(t, b["items"], 4)
	for _, raw := range b["items"].([]any) {
		require.Equal(t, "sports", raw.(map[string]any)["category"])
	}
	e.expectError(400, "invalid category: see GET /api/feeds/news/categories", "GET", "/api/feeds/news?category=gardening", a.key, nil)
	e.expectError(400, "limit must be a non-negative integer", "GET", "/api/feeds/news?limit=-1", a.key, nil)
	e.expectError(400, "before must be a Unix timestamp in seconds", "GET", "/api/feeds/news?before=soon", a.key, nil)
	_, b = e.call("GET", "/api/feeds/news?limit=500", a.key, nil)
	require.Len(t, b["items"], 28, "capped at 100")
	_, b = e.call("GET", "/api/feeds/news", a.key, nil)
	require.Len(t, b["items"], 28, "default 50")
	require.Len(t, e.pageFeed(t, a.key, url.Values{"limit": {"5"}}, 5), 28, "paging with before returns every item once")

	// feed_active points; unsubscribing ends reads.
	_, pts := e.call("GET", "/api/points/history", a.key, nil)
	found := false
	for _, tx := range pts["transactions"].([]any) {
		found = found || tx.(map[string]any)["trigger_type"] == "feed_active"
	}
	require.True(t, found)
	st, u := e.call("POST", "/api/feeds/news/unsubscribe", a.key, nil)
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"status": "unsubscribed"}, u)
	e.expectError(403, "news feed subscription required", "GET", "/api/feeds/news", a.key, nil)
	_, s = e.call("GET", "/api/feeds/news/status", a.key, nil)
	require.Equal(t, "Inactive", s["status"])
}

// When funds run out the subscription lapses to Inactive and reads stop.
func TestFeedLapses(t *testing.T) {
	e := devFeedEnv(t, 20*time.Millisecond)
	a := e.newAgent(t, billing.FromCents(15))
	st, _ := e.call("POST", "/api/feeds/news/subscribe", a.key, nil)
	require.Equal(t, 200, st)
	e.clock.Advance(time.Hour + time.Second)
	require.Eventually(t, func() bool {
		_, s := e.call("GET", "/api/feeds/news/status", a.key, nil)
		return s["status"] == "Inactive"
	}, 5*time.Second, 20*time.Millisecond)
	e.expectError(403, "news feed subscription required", "GET", "/api/feeds/news", a.key, nil)
	subs, err := e.p.Billing.Subscriptions(context.Background(), a.account)
	require.NoError(t, err)
	require.Equal(t, billing.SubInactive, subs[0].Status)
	require.Equal(t, int64(5), e.balanceCents(a.key), "one hour charged, the second could not be")
}

// 500 items sharing timestamps, paged over HTTP with before: each once.
func TestFeedPagination500(t *testing.T) {
	e := devFeedEnv(t, 0)
	a := e.newAgent(t, billing.FromCents(100))
	st, _ := e.call("POST", "/api/feeds/news/subscribe", a.key, nil)
	require.Equal(t, 200, st)
	store := e.p.Store().(feeds.Store)
	// Within the retention (the sweep deletes older items), and older
	// than the sample items.
	t0 := e.clock.Now().Add(-3 * 24 * time.Hour)
	want := map[string]bool{}
	for i := range 500 {
		it := feeds.Item{ID: fmt.Sprintf("tweet-%d", 9000+i), Timestamp: t0.Add(time.Duration(i/9) * time.Second), Category: "politics", Headline: "h", Summary: "s", Source: "X"}
		require.NoError(t, store.Publish(context.Background(), it))
		want[it.ID] = true
	}
	seen := map[string]bool{}
	for id := range e.pageFeed(t, a.key, url.Values{"limit": {"50"}, "category": {"politics"}}, 50) {
		if strings.HasPrefix(id, "tweet-") { // not the sample items
			seen[id] = true
		}
	}
	require.Equal(t, want, seen)
}

// pageFeed walks GET /api/feeds/news with q, each page's last timestamp
// as the next before, and returns the IDs seen, failing on a repeat or a
// page over limit.
func (e *env) pageFeed(t *testing.T, key string, q url.Values, limit int) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for pages := 0; pages < 1000; pages++ {
		_, b := e.call("GET", "/api/feeds/news?"+q.Encode(), key, nil)
		page := b["items"].([]any)
		if len(page) == 0 {
			return seen
		}
		require.LessOrEqual(t, len(page), limit)
		for _, raw := range page {
			id := raw.(map[string]any)["id"].(string)
			require.False(t, seen[id], "repeated %s", id)
			seen[id] = true
		}
		q.Set("before", strconv.FormatInt(int64(page[len(page)-1].(map[string]any)["timestamp"].(float64)), 10))
	}
	t.Fatal("more than 1000 pages")
	return nil
}
