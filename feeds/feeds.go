// Package feeds serves the paid news feed: items gathered from pluggable
// sources (RSS, Atom and JSON Feed over HTTP, the X API v2, local files,
// or an embedder's own [FeedSource]), given a headline, a summary and a
// category by a model, and read by wallets with an active hourly
// subscription (a billing subscription of kind "feed", resource "news").
//
// # The pipeline
//
// Each source is polled on its own schedule; a failing source backs off
// (doubling, capped, with jitter, and honouring Retry-After) and never
// stops the others. A raw item's ID is stable within its source (a
// tweet's ID, a feed entry's GUID, else its link, else a hash of its
// title and content): Store.Enqueue records it once, for ever (until far
// past the retention), so an item deleted or expired never comes back.
// New items wait in a queue for enrichment: a bounded number of workers
// lease them (so that several processes on one database never enrich one
// item twice), ask the model for JSON with a headline of at most 15
// words, a summary of at most 40 and one of the seven category IDs, and
// check the answer. An over-long headline or summary is cut at a word
// boundary (repaired); a category off the list is matched to one by name
// (repaired) or asked again; an answer that cannot be read is asked again.
// An item is stored only once valid. When the model is down, items wait
// and are retried later with backoff; after MaxAttempts they are dropped.
// Enrichment is bounded by concurrency, by tokens per answer and by
// enrichments per hour (Options).
//
// # Reading
//
// Items are listed newest first, ties broken by ID. The API's cursor is
// "before", a Unix timestamp in seconds: items strictly older. Timestamps
// are kept in whole seconds, and a page never splits the items sharing
// one second: a full page ends before its last second's group when that
// group may continue, and a group larger than a page is returned whole
// (up to PageMax), so walking pages by the last item's timestamp returns
// every item exactly once.
package feeds

import (
	"context"
	"time"

	"github.com/perceptron-cloud/perceptron/page"
)

// Kind and Resource name the news feed's billing subscription.
const (
	Kind     = "feed"
	Resource = "news"
)

// Category is a news category.
type Category struct {
	ID          string
	Name        string
	Description string
}

// Categories are the news categories, as the API reference lists them.
func Categories() []Category {
	return []Category{
		{"crypto", "Crypto", "Cryptocurrency market news"},
		{"politics", "Politics", "Political developments"},
		{"economics", "Economics", "Economic indicators and analysis"},
		{"technology", "Technology", "Technology and software news"},
		{"regulatory", "Regulatory", "Financial regulation updates"},
		{"entertainment", "Entertainment", "Media and cultural trends"},
		{"sports", "Sports", "Sports news and scores"},
	}
}

// ValidCategory reports whether id is a category ID.
func ValidCategory(id string) bool {
	for _, c := range Categories() {
		if c.ID == id {
			return true
		}
	}
	return false
}

// Item is one news item as the API shows it.
type Item struct {
	ID        string
	Timestamp time.Time // whole seconds
	Category  string
	Headline  string // at most 15 words
	Summary   string // at most 40 words
	Source    string
	Link      string // empty when there is none
}

// Key is an item's position in a list: newest first by timestamp (Unix
// microseconds of whole seconds), ties by ID.
func Key(it Item) page.Key { return page.Key{Order: it.Timestamp.UnixMicro(), ID: it.ID} }

// RawItem is what a source yields, before enrichment.
type RawItem struct {
	// ID identifies the item for good, unique across sources: sources
	// prefix their own IDs ("tweet-123", "rss-...", "file-...").
	ID        string
	Title     string
	Content   string
	Link      string
	Source    string // a human-readable source name
	Published time.Time
	// Tags are the source's own categories or keywords, if any: a hint
	// for the category.
	Tags []string
}

// FeedSource produces raw items: an RSS/Atom feed, a social timeline, a
// file. Fetch returns the items it has now (new or not: the pipeline
// dedupes); an error makes the poller back off, and an error wrapping
// *RetryAfter says when to try again.
type FeedSource interface {
	Name() string
	Fetch(ctx context.Context) ([]RawItem, error)
}

// RetryAfter is a source's request to wait before the next fetch (an
// HTTP 429 or 503 with Retry-After, or a rate-limit reset).
type RetryAfter struct {
	Wait time.Duration
	Err  error
}

func (r *RetryAfter) Error() string { return r.Err.Error() + " (retry after " + r.Wait.String() + ")" }

// Unwrap returns the underlying error.
func (r *RetryAfter) Unwrap() error { return r.Err }

// Pending is a raw item waiting for enrichment.
type Pending struct {
	Raw      RawItem
	Attempts int
}

// Store keeps the feed: the IDs seen, the enrichment queue and the items.
type Store interface {
	// Enqueue records the raw items' IDs as seen and queues the ones not
	// seen before for enrichment, due at once; it returns how many were
	// new. An ID is seen for good (until ForgetSeen), so an item that was
	// deleted or expired is not queued again.
	Enqueue(ctx context.Context, items []RawItem, now time.Time) (int, error)
	// Lease returns up to limit queued items due at now, and makes them
	// due again only at now+lease: a worker that dies leaves them to
	// another after the lease. Two callers never lease one item at once.
	Lease(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Pending, error)
	// Publish stores the enriched item and removes its raw item from the
	// queue, in one transaction.
	Publish(ctx context.Context, it Item) error
	// Retry puts a leased item back, due at next, with one more attempt
	// counted.
	Retry(ctx context.Context, id string, next time.Time) error
	// Drop removes a queued item that will not be enriched (it stays
	// seen).
	Drop(ctx context.Context, id string) error
	// GetItem returns an item, or fault.NotFound.
	GetItem(ctx context.Context, id string) (Item, error)
	// ListItems returns a page of items, newest first (see Key), of one
	// category, or of all when category is "".
	ListItems(ctx context.Context, category string, p page.Request) (page.Page[Item], error)
	// ExpireItems deletes up to limit items published before t; it
	// returns how many it deleted.
	ExpireItems(ctx context.Context, t time.Time, limit int) (int, error)
	// ForgetSeen deletes up to limit seen IDs recorded before t (long
	// after their items expired); it returns how many.
	ForgetSeen(ctx context.Context, t time.Time, limit int) (int, error)
}

// Items pages: the API's default and largest page, and the largest a
// store returns (a group of items sharing one second may exceed PageMax).
const (
	PageSize     = 50
	PageMax      = 100
	StorePageMax = 1000
)
