package billing

import (
	"context"
	"math"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Summary is the snapshot behind GET /api/metrics/summary. Money is in
// whole cents, rounded once from exact micro-cent sums: the balance down,
// costs and the burn rate up (see the package doc, Units).
type Summary struct {
	BalanceCents       int64
	BurnRateCentsPerHr int64
	RunwayHours        float64
	Tokens24h          int64
	Requests24h        int64
	Cost24hCents       int64
	ActiveDomains      int64
	ActiveFeeds        int64
	ActiveTunnels      int64
	CostByService      []ServiceCost
}

// ServiceCost is one service's spend over the last 24 hours.
type ServiceCost struct {
	Service   string // "chat", "stt", "feed", "domain"
	CostCents int64
	Tokens    int64
}

// Bucket is one interval of GET /api/metrics/history.
type Bucket struct {
	Start           time.Time
	ChatTokens      int64
	ChatCostCents   int64
	SttCostCents    int64
	FeedCostCents   int64
	DomainCostCents int64
	Requests        int64
}

// serviceOf names the metric service of an entry type ("" for credits).
func serviceOf(t TxType) string {
	switch t {
	case ChatInference:
		return "chat"
	case SttInference:
		return "stt"
	case NewsFeed:
		return "feed"
	case Domain:
		return "domain"
	}
	return ""
}

// Summary computes the account's usage snapshot. The burn rate is the
// hourly cost of active subscriptions plus the average hourly spend on
// per-request services (chat, speech-to-text) over the last 24 hours;
// runway is the exact balance divided by the exact burn rate, rounded to
// hundredths, and 0.0 when nothing burns. Entries are read in pages.
func (s *Service) Summary(ctx context.Context, account string) (Summary, error) {
	now := s.now()
	bal, err := s.store.Balance(ctx, account)
	if err != nil {
		return Summary{}, err
	}
	subs, err := s.store.ListSubscriptions(ctx, account)
	if err != nil {
		return Summary{}, err
	}
	var sum Summary
	sum.BalanceCents = bal.Total.FloorCents()
	cost := map[string]MicroCents{}
	tokens := map[string]int64{}
	var total, perRequest MicroCents
	err = s.eachEntry(ctx, account, EntryFilter{Since: now.Add(-24 * time.Hour)}, func(e Entry) bool {
		svc := serviceOf(e.Type)
		if svc == "" || e.Amount > 0 {
			return true
		}
		c := -e.Amount
		cost[svc] += c
		total += c
		if e.Type == ChatInference || e.Type == SttInference {
			sum.Requests24h++
			perRequest += c
		}
		if e.Usage != nil && e.Type == ChatInference {
			t := e.Usage.InputTokens + e.Usage.OutputTokens
			tokens[svc] += t
			sum.Tokens24h += t
		}
		return true
	}, nil)
	if err != nil {
		return Summary{}, err
	}
	var subsHourly MicroCents
	for _, sub := range subs {
		if sub.Status != SubActive {
			continue
		}
		subsHourly += sub.HourlyCost
		switch sub.Type {
		case Domain:
			sum.ActiveDomains++
		case NewsFeed:
			sum.ActiveFeeds++
		}
	}
	// perRequest/24 in micro-cents loses under a micro-cent an hour;
	// runway divides the exact figures.
	sum.BurnRateCentsPerHr = (subsHourly + perRequest/24).CeilCents()
	if burn := float64(subsHourly) + float64(perRequest)/24; burn > 0 && bal.Total > 0 {
		sum.RunwayHours = math.Round(float64(bal.Total)/burn*100) / 100
	}
	sum.Cost24hCents = total.CeilCents()
	for _, svc := range []string{"chat", "stt", "feed", "domain"} {
		sum.CostByService = append(sum.CostByService, ServiceCost{Service: svc, CostCents: cost[svc].CeilCents(), Tokens: tokens[svc]})
	}
	return sum, nil
}

// Limits of [Service.UsageHistory].
const (
	MaxPeriodHours   = 720
	MaxBucketMinutes = 1440
)

// UsageHistory returns usage in buckets of bucketMinutes over the last
// periodHours. Bucket starts are multiples of the bucket width (Unix
// time), from the bucket holding now-period to the one holding now, oldest
// first; empty buckets are included.
func (s *Service) UsageHistory(ctx context.Context, account string, periodHours, bucketMinutes int64) ([]Bucket, error) {
	if periodHours < 1 || periodHours > MaxPeriodHours {
		return nil, fault.New(fault.Invalid, "period must be between 1 and 720 hours")
	}
	if bucketMinutes < 1 || bucketMinutes > MaxBucketMinutes {
		return nil, fault.New(fault.Invalid, "bucket_minutes must be between 1 and 1440")
	}
	now := s.now().UTC()
	width := int64(bucketMinutes) * 60
	from := now.Add(-time.Duration(periodHours) * time.Hour).Unix()
	first := from - mod(from, width)
	last := now.Unix() - mod(now.Unix(), width)
	n := (last-first)/width + 1
	buckets := make([]Bucket, n)
	type acc struct{ chat, stt, feed, domain MicroCents }
	sums := make([]acc, n)
	for i := range buckets {
		buckets[i].Start = time.Unix(first+int64(i)*width, 0).UTC()
	}
	err := s.eachEntry(ctx, account, EntryFilter{Since: time.Unix(first, 0)}, func(e Entry) bool {
		i := (e.CreatedAt.Unix() - first) / width
		if i < 0 || i >= n || e.Amount > 0 {
			return true
		}
		c := -e.Amount
		switch e.Type {
		case ChatInference:
			sums[i].chat += c
			buckets[i].Requests++
			if e.Usage != nil {
				buckets[i].ChatTokens += e.Usage.InputTokens + e.Usage.OutputTokens
			}
		case SttInference:
			sums[i].stt += c
			buckets[i].Requests++
		case NewsFeed:
			sums[i].feed += c
		case Domain:
			sums[i].domain += c
		}
		return true
	}, nil)
	if err != nil {
		return nil, err
	}
	for i := range buckets {
		buckets[i].ChatCostCents = sums[i].chat.CeilCents()
		buckets[i].SttCostCents = sums[i].stt.CeilCents()
		buckets[i].FeedCostCents = sums[i].feed.CeilCents()
		buckets[i].DomainCostCents = sums[i].domain.CeilCents()
	}
	return buckets, nil
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
