package feeds_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

// scriptedModel answers each item (found by its title in the prompt)
// with the next answer of its script; an answer "DOWN" is the provider
// being unreachable.
type scriptedModel struct {
	mu      sync.Mutex
	scripts map[string][]string
	calls   map[string]int
}

func (m *scriptedModel) Name() string { return "scripted" }

func (m *scriptedModel) ChatCompletion(_ context.Context, req *inference.ChatRequest) (*inference.ChatResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	user := req.Messages[len(req.Messages)-1].Content
	for title, script := range m.scripts {
		if strings.Contains(user, "title: "+title+"\n") {
			n := m.calls[title]
			m.calls[title]++
			answer := script[min(n, len(script)-1)]
			if answer == "DOWN" {
				return nil, fault.New(fault.Unavailable, inference.MsgUnavailable)
			}
			return &inference.ChatResponse{Choices: []inference.Choice{{Message: inference.Message{Role: "assistant", Content: answer}}}}, nil
		}
	}
	return nil, fmt.Errorf("no script for %q", user)
}

func (m *scriptedModel) ChatCompletionStream(context.Context, *inference.ChatRequest) (inference.Stream, error) {
	return nil, fault.New(fault.Upstream, "no streams")
}

// staticSource yields the same items every fetch.
type staticSource struct{ items []feeds.RawItem }

func (s *staticSource) Name() string                                   { return "static" }
func (s *staticSource) Fetch(context.Context) ([]feeds.RawItem, error) { return s.items, nil }

func TestPipelineDedupesAndEnriches(t *testing.T) {
	long := strings.Repeat("word ", 30)
	ok := func(h, s, c string) string {
		return fmt.Sprintf(`{"headline":%q,"summary":%q,"category":%q}`, h, s, c)
	}
	model := &scriptedModel{calls: map[string]int{}, scripts: map[string][]string{
		"fine":     {ok("Fine headline", "A fine summary.", "crypto")},
		"too long": {ok(long, long+long, "Technology")},                                       // cut, and the category matched by name
		"off list": {ok("H", "S", "gardening"), ok("Off list fixed", "Now valid.", "sports")}, // asked again
		"fenced":   {"```json\n" + ok("Fenced", "In a fence.", "tech") + "\n```"},             // an alias
		"silent":   {"", "no json here"},                                                      // never valid: retried later
		"down":     {"DOWN", ok("Back up", "The model came back.", "economics")},
		"hopeless": {"nope"},
	}}
	now := time.Unix(1_748_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	st := memory.New()
	bill := billing.NewService(st, billing.Options{Now: clock})
	var raws []feeds.RawItem
	for i, title := range []string{"fine", "too long", "off list", "fenced", "silent", "down", "hopeless"} {
		raws = append(raws, feeds.RawItem{ID: fmt.Sprintf("test-%d", i), Title: title, Content: "content", Source: "Test", Published: now.Add(-time.Duration(i) * time.Minute)})
	}
	src := &staticSource{items: raws}
	svc := feeds.NewService(st, bill, feeds.Options{Sources: []feeds.FeedSource{src}, Model: model, ModelID: "m", MaxAttempts: 3, Now: clock})
	ctx := context.Background()

	require.NoError(t, svc.PollSource(ctx, src))
	require.NoError(t, svc.PollSource(ctx, src)) // the same items again: not queued twice
	n, err := svc.EnrichOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 4, n, "fine, too long, off list, fenced")
	items, err := svc.Items(ctx, "", time.Time{}, 0)
	require.NoError(t, err)
	byID := map[string]feeds.Item{}
	for _, it := range items {
		byID[it.ID] = it
		require.LessOrEqual(t, feeds.WordCount(it.Headline), feeds.MaxHeadlineWords)
		require.LessOrEqual(t, feeds.WordCount(it.Summary), feeds.MaxSummaryWords)
		require.True(t, feeds.ValidCategory(it.Category), it.Category)
	}
	require.Len(t, byID, 4)
	require.Equal(t, "technology", byID["test-1"].Category)
	require.Equal(t, feeds.MaxHeadlineWords, feeds.WordCount(byID["test-1"].Headline), "cut at 15 words")
	require.Equal(t, feeds.MaxSummaryWords, feeds.WordCount(byID["test-1"].Summary))
	require.Equal(t, "Off list fixed", byID["test-2"].Headline)
	require.Equal(t, "technology", byID["test-3"].Category)
	require.Equal(t, "Test", byID["test-0"].Source)
	require.True(t, now.Truncate(time.Second).Equal(byID["test-0"].Timestamp))

	// Not due yet: nothing happens.
	n, err = svc.EnrichOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	// Later: the model is back for "down"; "silent" and "hopeless" fail again.
	advance(time.Minute)
	n, err = svc.EnrichOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	it, err := svc.Items(ctx, "economics", time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, it, 1)
	require.Equal(t, "Back up", it[0].Headline)
	// After MaxAttempts the hopeless ones are dropped, never stored.
	for range 5 {
		advance(10 * time.Minute)
		_, err = svc.EnrichOnce(ctx)
		require.NoError(t, err)
	}
	items, err = svc.Items(ctx, "", time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, items, 5)
	for _, it := range items {
		require.NotEqual(t, "test-4", it.ID)
		require.NotEqual(t, "test-6", it.ID)
	}
	require.Equal(t, 3*2, model.calls["silent"], "asked twice per attempt, three attempts")
	// Polled again, nothing comes back: the dropped ones are seen.
	require.NoError(t, svc.PollSource(ctx, src))
	n, err = svc.EnrichOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// Retention: expired items go, and do not return.
	advance(8 * 24 * time.Hour)
	require.NoError(t, svc.Sweep(ctx))
	items, err = svc.Items(ctx, "", time.Time{}, 0)
	require.NoError(t, err)
	require.Empty(t, items)
	require.NoError(t, svc.PollSource(ctx, src))
	n, err = svc.EnrichOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

// A page never splits the items of one second: walking 500 items, many
// sharing a second, by the last item's timestamp returns each once.
func TestItemsPagesBySecond(t *testing.T) {
	st := memory.New()
	svc := feeds.NewService(st, billing.NewService(st, billing.Options{}), feeds.Options{})
	ctx := context.Background()
	t0 := time.Unix(1_748_000_000, 0)
	want := map[string]bool{}
	for i := range 500 {
		// Groups of 1 to 13 items per second, one of 120 (larger than a page).
		sec := i / 7
		if i >= 200 && i < 320 {
			sec = 1000
		}
		it := feeds.Item{ID: fmt.Sprintf("tweet-%d", i), Timestamp: t0.Add(time.Duration(sec) * time.Second), Category: "crypto", Headline: "h", Summary: "s", Source: "X"}
		require.NoError(t, st.Publish(ctx, it))
		want[it.ID] = true
	}
	for _, limit := range []int{1, 7, 20, 50, 100} {
		seen := map[string]bool{}
		var before time.Time
		for pages := 0; ; pages++ {
			require.Less(t, pages, 1000)
			items, err := svc.Items(ctx, "", before, limit)
			require.NoError(t, err)
			if len(items) == 0 {
				break
			}
			for _, it := range items {
				require.False(t, seen[it.ID], "limit %d: %s repeated", limit, it.ID)
				seen[it.ID] = true
			}
			before = items[len(items)-1].Timestamp
		}
		require.Equal(t, want, seen, "limit %d", limit)
	}
	_, err := svc.Items(ctx, "gardening", time.Time{}, 0)
	require.Equal(t, fault.Invalid, fault.CodeOf(err))
}

// failingSource always fails.
type failingSource struct{ calls atomic.Int64 }

func (f *failingSource) Name() string { return "failing" }
func (f *failingSource) Fetch(context.Context) ([]feeds.RawItem, error) {
	f.calls.Add(1)
	return nil, errors.New("connection refused")
}

// A source that fails never stops the others, and backs off on its own;
// enrichment keeps to its hourly budget.
func TestRunIsolatesSourcesAndKeepsTheBudget(t *testing.T) {
	st := memory.New()
	bad := &failingSource{}
	var raws []feeds.RawItem
	for i := range 5 {
		raws = append(raws, feeds.RawItem{ID: fmt.Sprintf("ok-%d", i), Title: "fine", Content: "c", Source: "S", Published: time.Now()})
	}
	model := &scriptedModel{calls: map[string]int{}, scripts: map[string][]string{"fine": {`{"headline":"h","summary":"s","category":"crypto"}`}}}
	svc := feeds.NewService(st, billing.NewService(st, billing.Options{}), feeds.Options{
		Sources: []feeds.FeedSource{bad, &staticSource{items: raws}}, PollInterval: 80 * time.Millisecond,
		Model: model, ModelID: "m", MaxPerHour: 3,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	require.Eventually(t, func() bool {
		items, _ := svc.Items(context.Background(), "", time.Time{}, 0)
		return len(items) == 3
	}, 5*time.Second, 10*time.Millisecond, "the good source's items arrive")
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	items, err := svc.Items(context.Background(), "", time.Time{}, 0)
	require.NoError(t, err)
	require.Len(t, items, 3, "no more than the hourly budget")
	require.Equal(t, 3, model.calls["fine"])
	calls := bad.calls.Load()
	require.GreaterOrEqual(t, calls, int64(2), "the failing source is retried")
	require.Less(t, calls, int64(40), "with backoff, not in a loop")
}
