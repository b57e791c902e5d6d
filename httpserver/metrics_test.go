package httpserver_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

type metricsSummary struct {
	CreditsBalanceCents  int64            `json:"credits_balance_cents"`
	BurnRateCentsPerHour int64            `json:"burn_rate_cents_per_hour"`
	RunwayHours          float64          `json:"runway_hours"`
	TotalTokens24h       int64            `json:"total_tokens_24h"`
	TotalRequests24h     int64            `json:"total_requests_24h"`
	TotalCost24hCents    int64            `json:"total_cost_24h_cents"`
	ActiveServices       map[string]int64 `json:"active_services"`
	CostByService        []struct {
		Service   string `json:"service"`
		CostCents int64  `json:"cost_cents"`
		Tokens    int64  `json:"tokens"`
	} `json:"cost_by_service"`
}

type metricsHistory struct {
	PeriodHours int64 `json:"period_hours"`
	Buckets     []struct {
		Timestamp     int64 `json:"timestamp"`
		ChatTokens    int64 `json:"chat_tokens"`
		ChatCostCents int64 `json:"chat_cost_cents"`
		Requests      int64 `json:"requests"`
	} `json:"buckets"`
}

// getJSON GETs path and decodes a 200 answer into v, returning its ETag.
func (e *env) getJSON(path, token string, v any) string {
	e.t.Helper()
	r, body := e.raw("GET", path, token, nil, nil)
	require.Equal(e.t, 200, r.StatusCode, body)
	require.Equal(e.t, "application/json", r.Header.Get("Content-Type"))
	require.NoError(e.t, json.Unmarshal([]byte(body), v), body)
	etag := r.Header.Get("ETag")
	require.Regexp(e.t, `^"[0-9a-f]{32}"$`, etag)
	return etag
}

// TestMetricsAfterChat checks GET /api/metrics/summary and
// /api/metrics/history after completions: counts, costs, aligned buckets,
// parameter validation, and ETags.
func TestMetricsAfterChat(t *testing.T) {
	_, prov := fakeProvider(t, "fake", inferencetest.Config{PromptTokens: 13, CompletionTokens: 8, Chunks: 4})
	e := newChatEnv(t, []inference.Model{chatModel("test/chat", "fake", false)}, prov)
	a := e.newAgent(t, 100*billing.Dollar)
	chat := func(stream bool) {
		t.Helper()
		r, body := e.raw("POST", "/api/v1/chat/completions", a.key, chatBody("test/chat", "hi", stream), nil)
		require.Equal(t, 200, r.StatusCode, body)
	}
	chat(false)
	chat(true)

	// Summary: master key only.
	e.expectError(403, auth.MsgClientKeyForbidden, "GET", "/api/metrics/summary", a.key, nil)
	var sum metricsSummary
	sumTag := e.getJSON("/api/metrics/summary", a.master, &sum)
	require.Equal(t, int64(42), sum.TotalTokens24h, "2 x (13 + 8)")
	require.Equal(t, int64(2), sum.TotalRequests24h)
	require.Equal(t, int64(8), sum.TotalCost24hCents, "2 x 3.7 cents, rounded up once")
	require.Equal(t, int64(9992), sum.CreditsBalanceCents)
	require.Equal(t, e.balanceCents(a.key), sum.CreditsBalanceCents)
	require.Positive(t, sum.RunwayHours)
	require.Equal(t, map[string]int64{"domains": 0, "feeds": 0, "tunnels": 0}, sum.ActiveServices)
	require.Equal(t, "chat", sum.CostByService[0].Service)
	require.Equal(t, int64(8), sum.CostByService[0].CostCents)
	require.Equal(t, int64(42), sum.CostByService[0].Tokens)

	// History: buckets aligned to their width, the requests in the
	// current one.
	now := e.clock.Now().Unix()
	for _, q := range []struct {
		query         string
		period, width int64
	}{
		{"", 24, 60},
		{"?period=24&bucket_minutes=60", 24, 60},
		{"?period=6&bucket_minutes=7", 6, 7},
		{"?period=720&bucket_minutes=1440", 720, 1440},
		{"?period=1&bucket_minutes=1", 1, 1},
	} {
		var h metricsHistory
		e.getJSON("/api/metrics/history"+q.query, a.master, &h)
		require.Equal(t, q.period, h.PeriodHours, q.query)
		width := q.width * 60
		require.NotEmpty(t, h.Buckets, q.query)
		var tokens, requests, cost int64
		for i, b := range h.Buckets {
			require.Zero(t, b.Timestamp%width, "%s: bucket %d at %d", q.query, i, b.Timestamp)
			if i > 0 {
				require.Equal(t, width, b.Timestamp-h.Buckets[i-1].Timestamp, q.query)
			}
			tokens += b.ChatTokens
			requests += b.Requests
			cost += b.ChatCostCents
		}
		first, last := h.Buckets[0], h.Buckets[len(h.Buckets)-1]
		require.LessOrEqual(t, first.Timestamp, now-q.period*3600, q.query)
		require.LessOrEqual(t, last.Timestamp, now, q.query)
		require.Greater(t, last.Timestamp+width, now, "%s: the last bucket holds now", q.query)
		require.Equal(t, int64(42), last.ChatTokens, q.query)
		require.Equal(t, int64(2), last.Requests, q.query)
		require.Equal(t, int64(42), tokens, q.query)
		require.Equal(t, int64(2), requests, q.query)
		require.Equal(t, int64(8), cost, q.query) // 3.7 cents twice in one bucket: 7.4, rounded up
	}

	// Bad parameters: 400 with a clear message.
	const badPeriod = "period must be between 1 and 720 hours"
	const badBucket = "bucket_minutes must be between 1 and 1440"
	for q, msg := range map[string]string{
		"period=0": badPeriod, "period=721": badPeriod, "period=abc": badPeriod, "period=-1": badPeriod, "period=1.5": badPeriod,
		"bucket_minutes=0": badBucket, "bucket_minutes=1441": badBucket, "bucket_minutes=x": badBucket, "bucket_minutes=-5": badBucket,
	} {
		e.expectError(400, msg, "GET", "/api/metrics/history?"+q, a.master, nil)
	}
	e.expectError(403, auth.MsgClientKeyForbidden, "GET", "/api/metrics/history", a.key, nil)

	// ETags: a matching If-None-Match is 304 with an empty body.
	var h0 metricsHistory
	histTag := e.getJSON("/api/metrics/history", a.master, &h0)
	for path, tag := range map[string]string{"/api/metrics/summary": sumTag, "/api/metrics/history": histTag} {
		r, body := e.raw("GET", path, a.master, nil, http.Header{"If-None-Match": {tag}})
		require.Equal(t, http.StatusNotModified, r.StatusCode, path)
		require.Empty(t, body, path)
		require.Equal(t, tag, r.Header.Get("ETag"), path)
		// A list with the tag and W/ forms match too; another tag does not.
		r, _ = e.raw("GET", path, a.master, nil, http.Header{"If-None-Match": {`"other", W/` + tag}})
		require.Equal(t, http.StatusNotModified, r.StatusCode, path)
		r, body = e.raw("GET", path, a.master, nil, http.Header{"If-None-Match": {`"other"`}})
		require.Equal(t, 200, r.StatusCode, path)
		require.NotEmpty(t, body)
	}

	// Another request changes both: the old tags no longer match.
	chat(false)
	for path, tag := range map[string]string{"/api/metrics/summary": sumTag, "/api/metrics/history": histTag} {
		r, body := e.raw("GET", path, a.master, nil, http.Header{"If-None-Match": {tag}})
		require.Equal(t, 200, r.StatusCode, path)
		require.NotEmpty(t, body, path)
		require.NotEqual(t, tag, r.Header.Get("ETag"), path)
		require.NotEmpty(t, r.Header.Get("ETag"), path)
	}
	sumTag2 := e.getJSON("/api/metrics/summary", a.master, &sum)
	require.NotEqual(t, sumTag, sumTag2)
	require.Equal(t, int64(63), sum.TotalTokens24h)
	require.Equal(t, int64(3), sum.TotalRequests24h)
	require.Equal(t, int64(12), sum.TotalCost24hCents, "3 x 3.7 cents = 11.1, rounded up")
	var h1 metricsHistory
	e.getJSON("/api/metrics/history", a.master, &h1)
	require.Equal(t, int64(3), h1.Buckets[len(h1.Buckets)-1].Requests)
}
