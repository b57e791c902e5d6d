// Package feeds will serve the paid news feed: items gathered from
// pluggable sources, headlines and summaries written by a model, and access
// gated by an hourly subscription (billing.SubscriptionStore).
//
// Not implemented yet: this package holds the types and interfaces the
// rest of the SDK is shaped around. Nothing here fetches or serves news.
package feeds

import (
	"context"
	"time"
)

// Item is one news item as the API shows it.
type Item struct {
	ID        string
	Timestamp time.Time
	Category  string
	Headline  string // at most 15 words
	Summary   string // at most 40 words
	Source    string
	Link      string
}

// RawItem is what a source yields before headlines are written.
type RawItem struct {
	// GUID identifies the item within its source; items are deduplicated
	// by it (falling back to the link, then title and content).
	GUID      string
	Title     string
	Content   string
	Link      string
	Source    string
	Published time.Time
}

// FeedSource produces raw items: an RSS/Atom feed, a social timeline, a
// file. Fetch honours conditional requests and returns only new items
// where the source can tell.
type FeedSource interface {
	Name() string
	Fetch(ctx context.Context) ([]RawItem, error)
}

// Cursor pages through items, always towards older ones. It is a
// (timestamp, id) pair so items sharing a timestamp are neither skipped
// nor repeated.
type Cursor struct {
	Before time.Time
	ID     string
}

// ItemStore keeps items.
type ItemStore interface {
	PutItems(ctx context.Context, items []Item) (added int, err error)
	GetItem(ctx context.Context, id string) (Item, error)
	ListItems(ctx context.Context, category string, before Cursor, limit int) ([]Item, error)
}
