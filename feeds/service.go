package feeds

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/page"
)

// Public messages, as the API reference words them.
const (
	MsgInsufficient   = "insufficient credits for news feed subscription"
	MsgNoAccount      = "no account found, purchase credits first"
	MsgAlready        = "already subscribed to news feed"
	MsgNotSubscribed  = "not subscribed to news feed"
	MsgRequired       = "news feed subscription required"
	MsgNotFound       = "not found"
	MsgBadCategory    = "invalid category: see GET /api/feeds/news/categories"
	DefaultHourlyCost = 10 * billing.Cent
)

// Defaults of [Options].
const (
	DefaultPollInterval = 5 * time.Minute
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultConcurrency  = 4
	DefaultMaxPerHour   = 1000
	DefaultMaxTokens    = 300
	DefaultMaxAttempts  = 6
)

// Options configures a [Service]. Zero fields take the defaults.
type Options struct {
	// Sources are polled every PollInterval (DefaultPollInterval); a
	// failing source backs off on its own, from PollInterval/8 doubling
	// up to 8·PollInterval, with jitter.
	Sources      []FeedSource
	PollInterval time.Duration
	// Model writes headlines, summaries and categories; ModelID is what
	// requests name (inference.Service.Model gives one for a catalog ID).
	// Nil means no enrichment: items wait in the queue.
	Model   inference.ModelProvider
	ModelID string
	// Concurrency bounds enrichments at once (DefaultConcurrency),
	// MaxPerHour enrichments per hour in this process
	// (DefaultMaxPerHour), MaxTokens each answer (DefaultMaxTokens).
	Concurrency int
	MaxPerHour  int
	MaxTokens   uint64
	// MaxAttempts is how many times an item is tried before it is
	// dropped (DefaultMaxAttempts); failures wait 30 s, doubling.
	MaxAttempts int
	// Retention is how long items are kept (DefaultRetention); their IDs
	// are remembered 4 times as long, at least 30 days.
	Retention time.Duration
	// HourlyCost is the subscription's price (DefaultHourlyCost).
	HourlyCost billing.MicroCents
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Service is the news feed: its pipeline and its subscriptions.
type Service struct {
	store   Store
	billing *billing.Service
	opts    Options
	log     *slog.Logger
	kick    chan struct{}

	mu        sync.Mutex
	hourStart time.Time
	hourCount int
}

// NewService returns the feed over store, charging through bill. Run
// starts its pipeline.
func NewService(store Store, bill *billing.Service, opts Options) *Service {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.MaxPerHour <= 0 {
		opts.MaxPerHour = DefaultMaxPerHour
	}
	if opts.MaxTokens == 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.HourlyCost <= 0 {
		opts.HourlyCost = DefaultHourlyCost
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{store: store, billing: bill, opts: opts, log: opts.Logger, kick: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// HourlyCost is the subscription's price.
func (s *Service) HourlyCost() billing.MicroCents { return s.opts.HourlyCost }

// Run polls the sources, enriches queued items and expires old ones
// until ctx ends.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, src := range s.opts.Sources {
		wg.Go(func() { s.poll(ctx, src) })
	}
	wg.Go(func() { s.enrichLoop(ctx) })
	wg.Go(func() { s.sweepLoop(ctx) })
	wg.Wait()
}

// poll fetches src on its schedule, backing off after failures.
func (s *Service) poll(ctx context.Context, src FeedSource) {
	failures := 0
	for {
		wait := s.opts.PollInterval
		if err := s.PollSource(ctx, src); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			base := s.opts.PollInterval / 8 << min(failures-1, 6)
			wait = min(base, 8*s.opts.PollInterval)
			wait = wait/2 + rand.N(wait/2+1)
			var ra *RetryAfter
			if errors.As(err, &ra) && ra.Wait > wait {
				wait = ra.Wait
			}
			s.log.WarnContext(ctx, "feed source failed", "source", src.Name(), "err", err, "retry_in", wait)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// PollSource fetches src once and queues its new items.
func (s *Service) PollSource(ctx context.Context, src FeedSource) error {
	items, err := src.Fetch(ctx)
	if len(items) > 0 {
		n, qerr := s.store.Enqueue(ctx, items, s.opts.Now())
		if qerr != nil {
			return qerr
		}
		if n > 0 {
			s.log.InfoContext(ctx, "feed items queued", "source", src.Name(), "new", n)
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	return err
}

func (s *Service) enrichLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if _, err := s.EnrichOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "feed enrichment failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// allow takes one enrichment from this hour's budget.
func (s *Service) allow(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.hourStart) >= time.Hour {
		s.hourStart, s.hourCount = now, 0
	}
	if s.hourCount >= s.opts.MaxPerHour {
		return false
	}
	s.hourCount++
	return true
}

// EnrichOnce leases what is due and enriches it, at most Concurrency at
// a time, within the hourly budget; it returns how many items it
// published.
func (s *Service) EnrichOnce(ctx context.Context) (int, error) {
	if s.opts.Model == nil {
		return 0, nil
	}
	now := s.opts.Now()
	due, err := s.store.Lease(ctx, now, 2*time.Minute, 4*s.opts.Concurrency)
	if err != nil {
		return 0, err
	}
	sem := make(chan struct{}, s.opts.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	published := 0
	for _, p := range due {
		if !s.allow(s.opts.Now()) {
			// Over budget: back in the queue, due when the hour turns.
			_ = s.store.Retry(context.WithoutCancel(ctx), p.Raw.ID, now.Add(10*time.Minute))
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if s.enrichOne(ctx, p) {
				mu.Lock()
				published++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return published, nil
}

func (s *Service) enrichOne(ctx context.Context, p Pending) bool {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	e, err := enrich(cctx, s.opts.Model, s.opts.ModelID, p.Raw, s.opts.MaxTokens)
	bg := context.WithoutCancel(ctx)
	if err != nil {
		if p.Attempts+1 >= s.opts.MaxAttempts {
			s.log.WarnContext(ctx, "feed item dropped", "id", p.Raw.ID, "attempts", p.Attempts+1, "err", err)
			_ = s.store.Drop(bg, p.Raw.ID)
			return false
		}
		next := s.opts.Now().Add(30 * time.Second << min(p.Attempts, 10))
		s.log.InfoContext(ctx, "feed item enrichment will be retried", "id", p.Raw.ID, "next", next, "err", err)
		_ = s.store.Retry(bg, p.Raw.ID, next)
		return false
	}
	it := Item{ID: p.Raw.ID, Timestamp: p.Raw.Published.UTC().Truncate(time.Second), Category: e.Category,
		Headline: e.Headline, Summary: e.Summary, Source: p.Raw.Source, Link: p.Raw.Link}
	if err := s.store.Publish(bg, it); err != nil {
		s.log.WarnContext(ctx, "feed item not stored", "id", it.ID, "err", err)
		return false
	}
	return true
}

func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "feed sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes items past the retention and forgets IDs long past it.
func (s *Service) Sweep(ctx context.Context) error {
	now := s.opts.Now()
	for {
		n, err := s.store.ExpireItems(ctx, now.Add(-s.opts.Retention), 1000)
		if err != nil || n < 1000 {
			if err != nil {
				return err
			}
			break
		}
	}
	forget := max(4*s.opts.Retention, 30*24*time.Hour)
	for {
		n, err := s.store.ForgetSeen(ctx, now.Add(-forget), 1000)
		if err != nil || n < 1000 {
			return err
		}
	}
}

// Subscribe charges the first hour and starts the account's hourly
// subscription.
func (s *Service) Subscribe(ctx context.Context, account string) (billing.Subscription, error) {
	p, err := s.billing.Ledger().Entries(ctx, account, billing.EntryFilter{}, page.Request{Limit: 1})
	if err != nil {
		return billing.Subscription{}, err
	}
	if len(p.Items) == 0 {
		return billing.Subscription{}, fault.New(fault.InsufficientFunds, MsgNoAccount)
	}
	sub, err := s.billing.Subscribe(ctx, billing.SubscribeRequest{
		Account: account, Kind: Kind, Resource: Resource, Type: billing.NewsFeed, HourlyCost: s.opts.HourlyCost,
		Description: "News feed subscription",
	})
	switch fault.CodeOf(err) {
	case fault.InsufficientFunds:
		return billing.Subscription{}, fault.Wrap(err, fault.InsufficientFunds, MsgInsufficient)
	case fault.Conflict:
		return billing.Subscription{}, fault.Wrap(err, fault.Conflict, MsgAlready)
	}
	return sub, err
}

// active returns the account's active feed subscription, if any.
func (s *Service) active(ctx context.Context, account string) (billing.Subscription, bool, error) {
	subs, err := s.billing.Subscriptions(ctx, account)
	if err != nil {
		return billing.Subscription{}, false, err
	}
	for _, sub := range subs {
		if sub.Kind == Kind && sub.Resource == Resource && sub.Status == billing.SubActive {
			return sub, true, nil
		}
	}
	return billing.Subscription{}, false, nil
}

// Unsubscribe cancels the account's subscription (no refund);
// fault.NotFound "not subscribed to news feed" if there is none.
func (s *Service) Unsubscribe(ctx context.Context, account string) error {
	sub, ok, err := s.active(ctx, account)
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.NotFound, MsgNotSubscribed)
	}
	if err := s.billing.Cancel(ctx, account, sub.ID); err != nil {
		if fault.CodeOf(err) == fault.NotFound {
			return fault.Wrap(err, fault.NotFound, MsgNotSubscribed)
		}
		return err
	}
	return nil
}

// Status is an account's subscription state.
type Status struct {
	Active       bool
	SubscribedAt time.Time // zero if never subscribed
	PrepaidUntil time.Time
	HourlyCost   billing.MicroCents
}

// Status returns the account's active subscription, else its latest one.
func (s *Service) Status(ctx context.Context, account string) (Status, error) {
	subs, err := s.billing.Subscriptions(ctx, account)
	if err != nil {
		return Status{}, err
	}
	st := Status{HourlyCost: s.opts.HourlyCost}
	found := false
	for _, sub := range subs { // newest first
		if sub.Kind != Kind || sub.Resource != Resource {
			continue
		}
		if sub.Status == billing.SubActive {
			return Status{Active: true, SubscribedAt: sub.CreatedAt, PrepaidUntil: sub.PrepaidUntil, HourlyCost: sub.HourlyCost}, nil
		}
		if !found {
			st = Status{SubscribedAt: sub.CreatedAt, PrepaidUntil: sub.PrepaidUntil, HourlyCost: sub.HourlyCost}
			found = true
		}
	}
	return st, nil
}

// requireActive returns fault.Forbidden "news feed subscription required"
// unless the account is subscribed.
func (s *Service) requireActive(ctx context.Context, account string) error {
	_, ok, err := s.active(ctx, account)
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Forbidden, MsgRequired)
	}
	return nil
}

// List returns, for a subscribed account, up to limit items (PageSize if
// 0, at most PageMax) of category ("" for all) strictly older than before
// (zero for the newest), newest first, never splitting the items of one
// second across pages (see the package doc).
func (s *Service) List(ctx context.Context, account, category string, before time.Time, limit int) ([]Item, error) {
	if err := s.requireActive(ctx, account); err != nil {
		return nil, err
	}
	return s.Items(ctx, category, before, limit)
}

// Items is List without the subscription check, for a program that reads
// the feed from Go.
func (s *Service) Items(ctx context.Context, category string, before time.Time, limit int) ([]Item, error) {
	if category != "" && !ValidCategory(category) {
		return nil, fault.New(fault.Invalid, MsgBadCategory)
	}
	switch {
	case limit <= 0:
		limit = PageSize
	case limit > PageMax:
		limit = PageMax
	}
	var after page.Key
	if !before.IsZero() {
		after = page.Key{Order: before.Truncate(time.Second).UnixMicro()}
	}
	p, err := s.store.ListItems(ctx, category, page.Request{After: after, Limit: limit})
	if err != nil {
		return nil, err
	}
	items := p.Items
	if !p.More || len(items) == 0 {
		return items, nil
	}
	// The next page starts before the last item's second: drop that
	// second's items here, unless they are the whole page, in which case
	// the whole second is returned.
	last := items[len(items)-1].Timestamp
	cut := len(items)
	for cut > 0 && items[cut-1].Timestamp.Equal(last) {
		cut--
	}
	if cut > 0 {
		return items[:cut], nil
	}
	g, err := s.store.ListItems(ctx, category, page.Request{After: page.Key{Order: last.Add(time.Second).UnixMicro()}, Limit: StorePageMax})
	if err != nil {
		return nil, err
	}
	group := g.Items[:0:0]
	for _, it := range g.Items {
		if it.Timestamp.Equal(last) {
			group = append(group, it)
		}
	}
	return group, nil
}

// Get returns an item for a subscribed account; fault.NotFound "not
// found" if there is none.
func (s *Service) Get(ctx context.Context, account, id string) (Item, error) {
	if err := s.requireActive(ctx, account); err != nil {
		return Item{}, err
	}
	it, err := s.store.GetItem(ctx, id)
	if fault.CodeOf(err) == fault.NotFound {
		return Item{}, fault.Wrap(err, fault.NotFound, MsgNotFound)
	}
	return it, err
}
