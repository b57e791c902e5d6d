package memory

import (
	"context"
	"sort"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/page"
)

var _ feeds.Store = (*Store)(nil)

// feedState is the news feed's part of the store.
type feedState struct {
	seen  map[string]time.Time
	queue map[string]*memQueued
	items map[string]feeds.Item
}

type memQueued struct {
	p   feeds.Pending
	due time.Time
}

func newFeedState() feedState {
	return feedState{seen: map[string]time.Time{}, queue: map[string]*memQueued{}, items: map[string]feeds.Item{}}
}

// Enqueue records the IDs and queues the new ones.
func (s *Store) Enqueue(_ context.Context, items []feeds.RawItem, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.feeds
	added := 0
	for _, it := range items {
		if _, ok := f.seen[it.ID]; ok {
			continue
		}
		f.seen[it.ID] = now
		it.Tags = append([]string(nil), it.Tags...)
		f.queue[it.ID] = &memQueued{p: feeds.Pending{Raw: it}, due: now}
		added++
	}
	return added, nil
}

// Lease returns the due items, oldest due first, and defers them.
func (s *Store) Lease(_ context.Context, now time.Time, lease time.Duration, limit int) ([]feeds.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*memQueued
	for _, q := range s.feeds.queue {
		if !q.due.After(now) {
			due = append(due, q)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		return due[i].due.Before(due[j].due) || due[i].due.Equal(due[j].due) && due[i].p.Raw.ID < due[j].p.Raw.ID
	})
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]feeds.Pending, 0, len(due))
	for _, q := range due {
		q.due = now.Add(lease)
		out = append(out, q.p)
	}
	return out, nil
}

// Publish stores the item and dequeues it.
func (s *Store) Publish(_ context.Context, it feeds.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	it.Timestamp = it.Timestamp.Truncate(time.Second).UTC()
	if _, ok := s.feeds.items[it.ID]; !ok {
		s.feeds.items[it.ID] = it
	}
	delete(s.feeds.queue, it.ID)
	return nil
}

// Retry makes a queued item due at next.
func (s *Store) Retry(_ context.Context, id string, next time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.feeds.queue[id]; q != nil {
		q.due = next
		q.p.Attempts++
	}
	return nil
}

// Drop dequeues an item.
func (s *Store) Drop(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.feeds.queue, id)
	return nil
}

// GetItem returns an item.
func (s *Store) GetItem(_ context.Context, id string) (feeds.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.feeds.items[id]
	if !ok {
		return feeds.Item{}, fault.New(fault.NotFound, "not found")
	}
	return it, nil
}

// ListItems returns a page of items, newest first.
func (s *Store) ListItems(_ context.Context, category string, r page.Request) (page.Page[feeds.Item], error) {
	size := r.Size(feeds.PageSize, feeds.StorePageMax)
	s.mu.Lock()
	var all []feeds.Item
	for _, it := range s.feeds.items {
		if k := feeds.Key(it); (category == "" || it.Category == category) && r.After.Older(k.Order, k.ID) {
			all = append(all, it)
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		a, b := feeds.Key(all[i]), feeds.Key(all[j])
		return a.Order > b.Order || a.Order == b.Order && a.ID > b.ID
	})
	if len(all) > size+1 {
		all = all[:size+1]
	}
	return page.Of(all, size, feeds.Key), nil
}

// ExpireItems deletes up to limit items published before t.
func (s *Store) ExpireItems(_ context.Context, t time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, it := range s.feeds.items {
		if n < limit && it.Timestamp.Before(t) {
			delete(s.feeds.items, id)
			n++
		}
	}
	return n, nil
}

// ForgetSeen deletes up to limit seen IDs recorded before t.
func (s *Store) ForgetSeen(_ context.Context, t time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, at := range s.feeds.seen {
		if n < limit && at.Before(t) {
			delete(s.feeds.seen, id)
			n++
		}
	}
	return n, nil
}
