package feeds

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mmcdole/gofeed"
)

// Limits of an HTTP fetch, after miniflux's.
const (
	DefaultMaxBodyBytes = 15 << 20
	DefaultFetchTimeout = 20 * time.Second
)

// HTTPFeedOptions configures an [HTTPFeed].
type HTTPFeedOptions struct {
	// Name is the source's human-readable name (an item's "source");
	// empty means the feed's own title, else the URL's host.
	Name string
	// Client sends the requests; nil means a client with Timeout.
	Client *http.Client
	// Timeout bounds one fetch; zero means DefaultFetchTimeout.
	Timeout time.Duration
	// MaxBodyBytes bounds a feed's body; zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// UserAgent is sent with every request; empty means "perceptron-feeds".
	UserAgent string
}

// HTTPFeed is an RSS, Atom or JSON Feed fetched over HTTP and parsed with
// github.com/mmcdole/gofeed. It sends If-None-Match and If-Modified-Since
// from the last answer (a 304 yields no items), refuses bodies over the
// limit, and turns 429 and 503 with Retry-After into *RetryAfter. Item
// IDs are "rss-" and a hash of the feed URL and the entry's GUID (else its
// link, else its title and content). Safe for one poller at a time.
type HTTPFeed struct {
	url  string
	opts HTTPFeedOptions

	mu           sync.Mutex
	etag, lastMo string
}

var _ FeedSource = (*HTTPFeed)(nil)

// NewHTTPFeed returns the source of the feed at rawURL.
func NewHTTPFeed(rawURL string, opts HTTPFeedOptions) (*HTTPFeed, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("feeds: %q is not an http(s) URL", rawURL)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultFetchTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "perceptron-feeds"
	}
	return &HTTPFeed{url: rawURL, opts: opts}, nil
}

// Name is the source's name, or its URL.
func (f *HTTPFeed) Name() string {
	if f.opts.Name != "" {
		return f.opts.Name
	}
	return f.url
}

// ErrTooLarge is a feed body over the limit.
var ErrTooLarge = errors.New("feeds: body over the size limit")

// Fetch gets and parses the feed.
func (f *HTTPFeed) Fetch(ctx context.Context) ([]RawItem, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", f.opts.UserAgent)
	req.Header.Set("Accept", "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5")
	f.mu.Lock()
	if f.etag != "" {
		req.Header.Set("If-None-Match", f.etag)
	}
	if f.lastMo != "" {
		req.Header.Set("If-Modified-Since", f.lastMo)
	}
	f.mu.Unlock()
	res, err := f.opts.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode == http.StatusNotModified:
		return nil, nil
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable:
		err := fmt.Errorf("feeds: %s answered %s", f.url, res.Status)
		if wait, ok := retryAfter(res.Header.Get("Retry-After"), time.Now()); ok {
			return nil, &RetryAfter{Wait: wait, Err: err}
		}
		return nil, err
	case res.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("feeds: %s answered %s", f.url, res.Status)
	}
	if res.ContentLength > f.opts.MaxBodyBytes {
		return nil, ErrTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, f.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > f.opts.MaxBodyBytes {
		return nil, ErrTooLarge
	}
	feed, err := gofeed.NewParser().Parse(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("feeds: parsing %s: %w", f.url, err)
	}
	f.mu.Lock()
	f.etag, f.lastMo = res.Header.Get("ETag"), res.Header.Get("Last-Modified")
	f.mu.Unlock()
	name := f.opts.Name
	if name == "" {
		name = strings.TrimSpace(feed.Title)
	}
	if name == "" {
		u, _ := url.Parse(f.url)
		name = u.Host
	}
	out := make([]RawItem, 0, len(feed.Items))
	for _, it := range feed.Items {
		key := it.GUID
		if key == "" {
			key = it.Link
		}
		if key == "" {
			key = it.Title + "\x00" + it.Description + "\x00" + it.Content
		}
		sum := sha256.Sum256([]byte(f.url + "\x00" + key))
		published := time.Now()
		switch {
		case it.PublishedParsed != nil:
			published = *it.PublishedParsed
		case it.UpdatedParsed != nil:
			published = *it.UpdatedParsed
		}
		out = append(out, RawItem{
			ID:        "rss-" + hex.EncodeToString(sum[:12]),
			Title:     plainText(it.Title),
			Content:   plainText(firstNonEmpty(it.Description, it.Content)),
			Link:      it.Link,
			Source:    name,
			Published: published,
			Tags:      it.Categories,
		})
	}
	return out, nil
}

var tags = regexp.MustCompile(`<[^>]*>`)

// plainText strips HTML tags and entities from a feed's text.
func plainText(s string) string {
	return oneLine(html.UnescapeString(tags.ReplaceAllString(s, " ")))
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// FileSource reads raw items from a JSON file: an array of objects with
// "id", "title", "content", "link", "source", "published" (RFC 3339) and
// "tags". IDs are prefixed "file-". It is for offline use and tests;
// Fetch reads the whole file each time (the pipeline dedupes). Data, if
// set, is used instead of reading Path.
type FileSource struct {
	Path string
	Data []byte
	// Now, if set, makes published times relative: an item's published
	// time is Now() minus its "age_seconds" when it has one.
	Now func() time.Time
}

var _ FeedSource = (*FileSource)(nil)

// Name is "file:" and the path.
func (f *FileSource) Name() string { return "file:" + f.Path }

type fileItem struct {
	ID         string    `json:"id"`
	Title      string    `json:"title"`
	Content    string    `json:"content"`
	Link       string    `json:"link"`
	Source     string    `json:"source"`
	Published  time.Time `json:"published"`
	AgeSeconds int64     `json:"age_seconds"`
	Tags       []string  `json:"tags"`
}

// Fetch reads the file.
func (f *FileSource) Fetch(context.Context) ([]RawItem, error) {
	data := f.Data
	if data == nil {
		var err error
		if data, err = os.ReadFile(f.Path); err != nil {
			return nil, err
		}
	}
	var items []fileItem
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("feeds: %s: %w", f.Name(), err)
	}
	out := make([]RawItem, 0, len(items))
	for _, it := range items {
		if it.ID == "" {
			return nil, fmt.Errorf("feeds: %s: an item without an id", f.Name())
		}
		pub := it.Published
		if f.Now != nil && it.AgeSeconds > 0 {
			pub = f.Now().Add(-time.Duration(it.AgeSeconds) * time.Second)
		}
		if pub.IsZero() {
			pub = time.Now()
		}
		out = append(out, RawItem{ID: "file-" + it.ID, Title: it.Title, Content: it.Content, Link: it.Link,
			Source: firstNonEmpty(it.Source, "file"), Published: pub, Tags: it.Tags})
	}
	return out, nil
}
