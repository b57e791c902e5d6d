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

	"github.com/perceptron-cloud/perceptron/page"
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

// ItemStore keeps items.
type ItemStore interface {
	PutItems(ctx context.Context, items []Item) (added int, err error)
	GetItem(ctx context.Context, id string) (Item, error)
	// ListItems returns a page of items, newest first, keyed by
	// (published time in Unix microseconds, ID); see package page. A
	// timestamp cursor is page.Key{Order: t.UnixMicro()}: strictly older
	// items only, so a group sharing one timestamp is never split.
	ListItems(ctx context.Context, category string, p page.Request) (page.Page[Item], error)
}
