package feeds_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/feeds"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/feeds"
)

// feedServer serves one feed in the format the path names (/rss, /atom,
// /json), written by gorilla/feeds (an independent writer of the three
// formats), with an ETag and Last-Modified, answering 304 to a matching
// conditional request.
type feedServer struct {
	items    []*gorilla.Item
	requests atomic.Int64
	notMod   atomic.Int64
	status   atomic.Int64 // if set, every answer has this status
}

func (fs *feedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fs.requests.Add(1)
	if st := fs.status.Load(); st != 0 {
		if st == 429 {
			w.Header().Set("Retry-After", "120")
		}
		w.WriteHeader(int(st))
		return
	}
	f := &gorilla.Feed{Title: "Example News", Link: &gorilla.Link{Href: "https://news.example/"}, Created: time.Unix(1_748_000_000, 0)}
	f.Items = fs.items
	var body string
	var err error
	switch r.URL.Path {
	case "/rss":
		body, err = f.ToRss()
		w.Header().Set("Content-Type", "application/rss+xml")
	case "/atom":
		body, err = f.ToAtom()
		w.Header().Set("Content-Type", "application/atom+xml")
	case "/json":
		body, err = f.ToJSON()
		w.Header().Set("Content-Type", "application/feed+json")
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	etag := fmt.Sprintf(`"v%d"`, len(fs.items))
	lastMod := time.Unix(1_748_000_000+int64(len(fs.items)), 0).UTC().Format(http.TimeFormat)
	if r.Header.Get("If-None-Match") == etag {
		fs.notMod.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", lastMod)
	_, _ = w.Write([]byte(body))
}

func gorillaItem(i int) *gorilla.Item {
	return &gorilla.Item{
		Id: fmt.Sprintf("urn:news:%d", i), Title: fmt.Sprintf("Headline number %d", i),
		Link:        &gorilla.Link{Href: fmt.Sprintf("https://news.example/%d", i)},
		Description: fmt.Sprintf("<p>Story <b>%d</b> &amp; its details.</p>", i),
		Created:     time.Unix(1_748_000_000+int64(i)*60, 0), Updated: time.Unix(1_748_000_000+int64(i)*60, 0),
	}
}

func TestHTTPFeedFormatsAndConditionalGets(t *testing.T) {
	fs := &feedServer{items: []*gorilla.Item{gorillaItem(1), gorillaItem(2)}}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	for _, format := range []string{"rss", "atom", "json"} {
		t.Run(format, func(t *testing.T) {
			src, err := feeds.NewHTTPFeed(srv.URL+"/"+format, feeds.HTTPFeedOptions{})
			require.NoError(t, err)
			items, err := src.Fetch(context.Background())
			require.NoError(t, err)
			require.Len(t, items, 2)
			byTitle := map[string]feeds.RawItem{}
			for _, it := range items {
				byTitle[it.Title] = it
				require.True(t, strings.HasPrefix(it.ID, "rss-"), it.ID)
				require.Equal(t, "Example News", it.Source)
			}
			one := byTitle["Headline number 1"]
			require.Equal(t, "https://news.example/1", one.Link)
			require.Equal(t, "Story 1 & its details.", one.Content, "HTML stripped")
			require.Equal(t, int64(1_748_000_060), one.Published.Unix())

			// The same feed again: a conditional request, 304, no items.
			before := fs.notMod.Load()
			items, err = src.Fetch(context.Background())
			require.NoError(t, err)
			require.Empty(t, items)
			require.Equal(t, before+1, fs.notMod.Load())

			// IDs are stable across fetches of a changed feed.
			fs.items = append(fs.items, gorillaItem(3))
			defer func() { fs.items = fs.items[:2] }()
			again, err := src.Fetch(context.Background())
			require.NoError(t, err)
			require.Len(t, again, 3)
			ids := map[string]bool{}
			for _, it := range again {
				ids[it.ID] = true
			}
			require.True(t, ids[one.ID])
		})
	}
}

func TestHTTPFeedErrors(t *testing.T) {
	fs := &feedServer{items: []*gorilla.Item{gorillaItem(1)}}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	src, err := feeds.NewHTTPFeed(srv.URL+"/rss", feeds.HTTPFeedOptions{})
	require.NoError(t, err)

	fs.status.Store(500)
	_, err = src.Fetch(context.Background())
	require.ErrorContains(t, err, "500")
	fs.status.Store(429)
	_, err = src.Fetch(context.Background())
	var ra *feeds.RetryAfter
	require.ErrorAs(t, err, &ra)
	require.Equal(t, 120*time.Second, ra.Wait)
	fs.status.Store(0)

	// Oversized, declared or not.
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/declared" {
			w.Header().Set("Content-Length", "5000000")
		}
		w.Write([]byte(`<?xml version="1.0"?><rss><channel><title>x</title>` + strings.Repeat("<!-- padding -->", 1<<16)))
	}))
	defer big.Close()
	for _, path := range []string{"/declared", "/chunked"} {
		src, err := feeds.NewHTTPFeed(big.URL+path, feeds.HTTPFeedOptions{MaxBodyBytes: 64 << 10})
		require.NoError(t, err)
		_, err = src.Fetch(context.Background())
		require.ErrorIs(t, err, feeds.ErrTooLarge, path)
	}
	// Not a feed.
	junk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>hello</html>")) }))
	defer junk.Close()
	src, err = feeds.NewHTTPFeed(junk.URL, feeds.HTTPFeedOptions{})
	require.NoError(t, err)
	_, err = src.Fetch(context.Background())
	require.Error(t, err)
	// Slow: the fetch timeout.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	src, err = feeds.NewHTTPFeed(slow.URL, feeds.HTTPFeedOptions{Timeout: 100 * time.Millisecond})
	require.NoError(t, err)
	_, err = src.Fetch(context.Background())
	require.Error(t, err)
	_, err = feeds.NewHTTPFeed("ftp://x", feeds.HTTPFeedOptions{})
	require.Error(t, err)
}

// fakeX speaks the X API v2's documented JSON for the three endpoints
// the source uses, checks the bearer token, honours since_id, and
// answers 429 with x-rate-limit-reset when told to.
type fakeX struct {
	t       *testing.T
	tweets  []map[string]any // newest first: id, text, created_at, author_id
	limited atomic.Bool
	sinces  []string
}

func (x *fakeX) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer test-bearer" {
		w.WriteHeader(401)
		w.Write([]byte(`{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}`))
		return
	}
	if x.limited.Load() {
		w.Header().Set("x-rate-limit-reset", strconv.FormatInt(time.Now().Add(90*time.Second).Unix(), 10))
		w.WriteHeader(429)
		w.Write([]byte(`{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}`))
		return
	}
	users := []map[string]any{{"id": "2244994945", "name": "X Developers", "username": "XDevelopers"}}
	switch {
	case r.URL.Path == "/2/users/by/username/XDevelopers":
		json.NewEncoder(w).Encode(map[string]any{"data": users[0]})
		return
	case r.URL.Path == "/2/users/2244994945/tweets", r.URL.Path == "/2/tweets/search/recent":
	default:
		w.WriteHeader(404)
		w.Write([]byte(`{"errors":[{"message":"not found"}]}`))
		return
	}
	q := r.URL.Query()
	require.Equal(x.t, "created_at,author_id,entities", q.Get("tweet.fields"))
	x.sinces = append(x.sinces, q.Get("since_id"))
	var data []map[string]any
	for _, tw := range x.tweets {
		id, _ := strconv.ParseInt(tw["id"].(string), 10, 64)
		since, _ := strconv.ParseInt(q.Get("since_id"), 10, 64)
		if id > since {
			data = append(data, tw)
		}
	}
	meta := map[string]any{"result_count": len(data)}
	if len(data) > 0 {
		meta["newest_id"] = data[0]["id"]
		meta["oldest_id"] = data[len(data)-1]["id"]
	}
	body := map[string]any{"meta": meta}
	if len(data) > 0 {
		body["data"] = data
		body["includes"] = map[string]any{"users": users}
	}
	json.NewEncoder(w).Encode(body)
}

func TestXSource(t *testing.T) {
	x := &fakeX{t: t, tweets: []map[string]any{
		{"id": "1460323737035677698", "text": "Introducing a new era of the API #dev", "created_at": "2021-11-15T19:08:05.000Z", "author_id": "2244994945",
			"entities": map[string]any{"hashtags": []map[string]any{{"start": 33, "end": 37, "tag": "dev"}}}},
		{"id": "1445880548472328192", "text": "Older post", "created_at": "2021-10-06T22:26:22.000Z", "author_id": "2244994945"},
	}}
	srv := httptest.NewServer(x)
	defer srv.Close()
	src, err := feeds.NewXSource(feeds.XOptions{BaseURL: srv.URL, BearerToken: "test-bearer", Accounts: []string{"@XDevelopers"}, Queries: []string{"from:XDevelopers -is:retweet"}})
	require.NoError(t, err)
	items, err := src.Fetch(context.Background())
	require.NoError(t, err)
	require.Len(t, items, 4, "two from the account, two from the search")
	it := items[0]
	require.Equal(t, "tweet-1460323737035677698", it.ID)
	require.Equal(t, "@XDevelopers", it.Source)
	require.Equal(t, "https://x.com/XDevelopers/status/1460323737035677698", it.Link)
	require.Equal(t, []string{"dev"}, it.Tags)
	require.Equal(t, time.Date(2021, 11, 15, 19, 8, 5, 0, time.UTC), it.Published.UTC())

	// Only newer posts are asked for next.
	x.tweets = append([]map[string]any{{"id": "1460323737035677699", "text": "Newest", "created_at": "2021-11-15T20:00:00.000Z", "author_id": "2244994945"}}, x.tweets...)
	items, err = src.Fetch(context.Background())
	require.NoError(t, err)
	require.Len(t, items, 2)
	require.Equal(t, "1460323737035677698", x.sinces[len(x.sinces)-1])

	// Rate limited: a RetryAfter until the reset.
	x.limited.Store(true)
	_, err = src.Fetch(context.Background())
	var ra *feeds.RetryAfter
	require.ErrorAs(t, err, &ra)
	require.InDelta(t, 90, ra.Wait.Seconds(), 3)
	x.limited.Store(false)

	bad, err := feeds.NewXSource(feeds.XOptions{BaseURL: srv.URL, BearerToken: "wrong", Accounts: []string{"XDevelopers"}})
	require.NoError(t, err)
	_, err = bad.Fetch(context.Background())
	require.ErrorContains(t, err, "401")
	require.False(t, errors.As(err, &ra))
	_, err = feeds.NewXSource(feeds.XOptions{Accounts: []string{"a"}})
	require.Error(t, err, "no bearer token")
}
