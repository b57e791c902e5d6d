package httpserver

import (
	"net/http"
	"strconv"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/feeds"
)

// itemJSON is a news item as the API shows it.
type itemJSON struct {
	ID        string  `json:"id"`
	Timestamp int64   `json:"timestamp"`
	Category  string  `json:"category"`
	Headline  string  `json:"headline"`
	Summary   string  `json:"summary"`
	Source    string  `json:"source"`
	Link      *string `json:"link"`
}

func toItemJSON(it feeds.Item) itemJSON {
	out := itemJSON{ID: it.ID, Timestamp: it.Timestamp.Unix(), Category: it.Category, Headline: it.Headline, Summary: it.Summary, Source: it.Source}
	if it.Link != "" {
		l := it.Link
		out.Link = &l
	}
	return out
}

func (s *server) feedSubscribe(w http.ResponseWriter, r *http.Request) {
	sub, err := s.p.Feeds.Subscribe(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status": "subscribed", "prepaid_until": sub.PrepaidUntil.Unix(), "hourly_cost_cents": sub.HourlyCost.CeilCents(),
	})
}

func (s *server) feedUnsubscribe(w http.ResponseWriter, r *http.Request) {
	if err := s.p.Feeds.Unsubscribe(r.Context(), principal(r.Context()).Address); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "unsubscribed"})
}

func (s *server) feedItems(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			s.writeError(w, r, fault.New(fault.Invalid, "limit must be a non-negative integer"))
			return
		}
		limit = int(min(n, feeds.PageMax))
	}
	var before time.Time
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			s.writeError(w, r, fault.New(fault.Invalid, "before must be a Unix timestamp in seconds"))
			return
		}
		before = time.Unix(int64(n), 0)
	}
	items, err := s.p.Feeds.List(r.Context(), principal(r.Context()).Address, q.Get("category"), before, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]itemJSON, 0, len(items))
	for _, it := range items {
		out = append(out, toItemJSON(it))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (s *server) feedItem(w http.ResponseWriter, r *http.Request) {
	it, err := s.p.Feeds.Get(r.Context(), principal(r.Context()).Address, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toItemJSON(it))
}

func (s *server) feedCategories(w http.ResponseWriter, r *http.Request) {
	type cat struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	var out []cat
	for _, c := range feeds.Categories() {
		out = append(out, cat{c.ID, c.Name, c.Description})
	}
	writeJSON(w, http.StatusOK, map[string]any{"categories": out})
}

func (s *server) feedStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.p.Feeds.Status(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status, subscribed, prepaid := "Inactive", int64(0), int64(0)
	if st.Active {
		status = "Active"
	}
	if !st.SubscribedAt.IsZero() {
		subscribed, prepaid = st.SubscribedAt.Unix(), st.PrepaidUntil.Unix()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"feed_type": "news", "status": status, "subscribed_at": subscribed, "prepaid_until": prepaid,
		"hourly_cost": st.HourlyCost.CeilCents(),
	})
}
