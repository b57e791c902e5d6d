package feeds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// XOptions configures an [XSource].
type XOptions struct {
	// BaseURL is the API root; empty means https://api.x.com.
	BaseURL string
	// BearerToken is the app's bearer token; required.
	BearerToken string
	// Accounts are user names whose posts are read (GET
	// /2/users/:id/tweets, the ID found once by GET
	// /2/users/by/username/:username).
	Accounts []string
	// Queries are searches of recent posts (GET /2/tweets/search/recent).
	Queries []string
	// Client sends the requests; nil means a client with a 20 s timeout.
	Client *http.Client
	// MaxResults is asked per request (10-100); zero means 100.
	MaxResults int
}

// XSource reads posts from the X (Twitter) API v2 with an app bearer
// token: the operator's accounts and searches. Each request asks only for
// posts newer than the newest seen (since_id). A 429 becomes *RetryAfter
// until x-rate-limit-reset. Items are "tweet-{id}", linked to
// https://x.com/{username}/status/{id}, their source "@username" (or the
// user's name). Safe for one poller at a time.
type XSource struct {
	opts XOptions

	mu    sync.Mutex
	ids   map[string]string // username -> user ID
	since map[string]string // account or query -> newest post ID seen
}

var _ FeedSource = (*XSource)(nil)

// NewXSource returns the source for opts.
func NewXSource(opts XOptions) (*XSource, error) {
	if opts.BearerToken == "" {
		return nil, errors.New("feeds: XOptions.BearerToken is required")
	}
	if len(opts.Accounts) == 0 && len(opts.Queries) == 0 {
		return nil, errors.New("feeds: an X source needs accounts or queries")
	}
	if opts.BaseURL == "" {
		opts.BaseURL = "https://api.x.com"
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if opts.MaxResults <= 0 || opts.MaxResults > 100 {
		opts.MaxResults = 100
	}
	return &XSource{opts: opts, ids: map[string]string{}, since: map[string]string{}}, nil
}

// Name is "x".
func (x *XSource) Name() string { return "x" }

type xUser struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Username string `json:"username"`
}

type xTweet struct {
	ID        string    `json:"id"`
	Text      string    `json:"text"`
	CreatedAt time.Time `json:"created_at"`
	AuthorID  string    `json:"author_id"`
	Entities  struct {
		Hashtags []struct {
			Tag string `json:"tag"`
		} `json:"hashtags"`
		URLs []struct {
			ExpandedURL string `json:"expanded_url"`
		} `json:"urls"`
	} `json:"entities"`
}

type xPage struct {
	Data     []xTweet `json:"data"`
	Includes struct {
		Users []xUser `json:"users"`
	} `json:"includes"`
	Meta struct {
		NewestID    string `json:"newest_id"`
		ResultCount int    `json:"result_count"`
	} `json:"meta"`
}

// Fetch reads every account and query once; a failure of one is
// returned after the others were read (their items with it).
func (x *XSource) Fetch(ctx context.Context) ([]RawItem, error) {
	var out []RawItem
	var errs []error
	for _, a := range x.opts.Accounts {
		items, err := x.account(ctx, a)
		out = append(out, items...)
		if err != nil {
			errs = append(errs, err)
			if isRetryAfter(err) {
				break
			}
		}
	}
	for _, q := range x.opts.Queries {
		if len(errs) > 0 && isRetryAfter(errs[len(errs)-1]) {
			break
		}
		v := url.Values{"query": {q}}
		items, err := x.timeline(ctx, "q:"+q, "/2/tweets/search/recent", v)
		out = append(out, items...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, err := range errs {
		if isRetryAfter(err) {
			return out, err
		}
	}
	return out, errors.Join(errs...)
}

func isRetryAfter(err error) bool {
	var ra *RetryAfter
	return errors.As(err, &ra)
}

func (x *XSource) account(ctx context.Context, username string) ([]RawItem, error) {
	username = strings.TrimPrefix(username, "@")
	x.mu.Lock()
	id := x.ids[username]
	x.mu.Unlock()
	if id == "" {
		var u struct {
			Data xUser `json:"data"`
		}
		if err := x.get(ctx, "/2/users/by/username/"+url.PathEscape(username), nil, &u); err != nil {
			return nil, err
		}
		if u.Data.ID == "" {
			return nil, fmt.Errorf("feeds: x: no user %q", username)
		}
		id = u.Data.ID
		x.mu.Lock()
		x.ids[username] = id
		x.mu.Unlock()
	}
	return x.timeline(ctx, "u:"+username, "/2/users/"+id+"/tweets", url.Values{})
}

func (x *XSource) timeline(ctx context.Context, key, path string, v url.Values) ([]RawItem, error) {
	v.Set("max_results", strconv.Itoa(x.opts.MaxResults))
	v.Set("tweet.fields", "created_at,author_id,entities")
	v.Set("expansions", "author_id")
	v.Set("user.fields", "name,username")
	x.mu.Lock()
	since := x.since[key]
	x.mu.Unlock()
	if since != "" {
		v.Set("since_id", since)
	}
	var p xPage
	if err := x.get(ctx, path, v, &p); err != nil {
		return nil, err
	}
	users := map[string]xUser{}
	for _, u := range p.Includes.Users {
		users[u.ID] = u
	}
	out := make([]RawItem, 0, len(p.Data))
	for _, t := range p.Data {
		u := users[t.AuthorID]
		source, link := "X", ""
		if u.Username != "" {
			source = "@" + u.Username
			link = "https://x.com/" + u.Username + "/status/" + t.ID
		}
		if u.Name != "" && u.Username == "" {
			source = u.Name
		}
		var tagList []string
		for _, h := range t.Entities.Hashtags {
			tagList = append(tagList, h.Tag)
		}
		pub := t.CreatedAt
		if pub.IsZero() {
			pub = time.Now()
		}
		title := cutWords(t.Text, MaxHeadlineWords)
		out = append(out, RawItem{ID: "tweet-" + t.ID, Title: title, Content: t.Text, Link: link, Source: source, Published: pub, Tags: tagList})
	}
	if p.Meta.NewestID != "" {
		x.mu.Lock()
		x.since[key] = p.Meta.NewestID
		x.mu.Unlock()
	}
	return out, nil
}

// xError is the API's error body: a problem ({"title","detail"}) or
// {"errors":[{"message"}]}.
type xError struct {
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

func (x *XSource) get(ctx context.Context, path string, v url.Values, out any) error {
	u := x.opts.BaseURL + path
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+x.opts.BearerToken)
	req.Header.Set("User-Agent", "perceptron-feeds")
	res, err := x.opts.Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, DefaultMaxBodyBytes))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		var e xError
		_ = json.Unmarshal(body, &e)
		msg := firstNonEmpty(e.Detail, e.Title)
		if msg == "" && len(e.Errors) > 0 {
			msg = e.Errors[0].Message
		}
		err := fmt.Errorf("feeds: x %s: %s %s", path, res.Status, msg)
		if res.StatusCode == http.StatusTooManyRequests {
			wait := time.Minute
			if reset, perr := strconv.ParseInt(res.Header.Get("x-rate-limit-reset"), 10, 64); perr == nil {
				wait = max(time.Until(time.Unix(reset, 0)), time.Second)
			} else if d, ok := retryAfter(res.Header.Get("Retry-After"), time.Now()); ok {
				wait = d
			}
			return &RetryAfter{Wait: wait, Err: err}
		}
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("feeds: x %s: %w", path, err)
	}
	return nil
}
