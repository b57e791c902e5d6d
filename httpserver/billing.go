package httpserver

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
	"strings"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
)

func (s *server) creditBalance(w http.ResponseWriter, r *http.Request) {
	b, err := s.p.Billing.Balance(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"balance": b.Total.FloorCents(), "currency": "USD_CENTS"})
}

type historyEntry struct {
	ID           string  `json:"id"`
	UserAddress  string  `json:"user_address"`
	TxType       string  `json:"tx_type"`
	Amount       int64   `json:"amount"`
	BalanceAfter int64   `json:"balance_after"`
	Description  string  `json:"description"`
	Timestamp    int64   `json:"timestamp"`
	TxHash       *string `json:"tx_hash,omitempty"`
	Status       string  `json:"status"`
	// Exact figures in micro-cents (millionths of a cent).
	AmountMicroCents       int64 `json:"amount_micro_cents"`
	BalanceAfterMicroCents int64 `json:"balance_after_micro_cents"`
}

// creditHistory streams the whole history, newest first, one page of the
// ledger at a time (billing.Service.History), so a long history costs the
// server one page of memory.
func (s *server) creditHistory(w http.ResponseWriter, r *http.Request) {
	streamTransactions(s, w, r, s.p.Billing.History(r.Context(), principal(r.Context()).Address), historyJSON)
}

// streamTransactions writes {"transactions":[...]} from a paged list, one
// item at a time. An error before the first item is answered as usual;
// one after it aborts the response, so that a client never takes a
// cut-off list for the whole one.
func streamTransactions[T, J any](s *server, w http.ResponseWriter, r *http.Request, items iter.Seq2[T, error], toJSON func(T) J) {
	next, stop := iter.Pull2(items)
	defer stop()
	e, err, ok := next()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	bw.WriteString(`{"transactions":[`)
	for first := true; ok; e, err, ok = next() {
		if err != nil {
			s.log.ErrorContext(r.Context(), "reading a list failed mid-response", "path", r.URL.Path, "err", err)
			panic(http.ErrAbortHandler)
		}
		if !first {
			bw.WriteByte(',')
		}
		first = false
		if err := enc.Encode(toJSON(e)); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	bw.WriteString("]}\n")
	bw.Flush()
}

func historyJSON(e billing.HistoryEntry) historyEntry {
	h := historyEntry{
		ID: e.ID, UserAddress: e.Account, TxType: string(e.Type), Amount: e.ShownAmount,
		BalanceAfter: e.ShownBalanceAfter, Description: e.Description, Timestamp: e.CreatedAt.Unix(),
		Status: string(e.Status), AmountMicroCents: int64(e.Amount), BalanceAfterMicroCents: int64(e.BalanceAfter),
	}
	if e.TxHash != "" {
		hash := e.TxHash
		h.TxHash = &hash
	}
	return h
}

func (s *server) receivingAddress(w http.ResponseWriter, r *http.Request) {
	addr := s.p.Billing.ReceivingAddress()
	if addr == "" {
		s.writeError(w, r, fault.New(fault.Unavailable, "purchases are not configured on this server"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"address": addr})
}

type purchaseRequest struct {
	TxHash  string          `json:"tx_hash"`
	Token   string          `json:"token"`
	Amount  json.RawMessage `json:"amount"`
	ChainID uint64          `json:"chain_id"`
}

func (s *server) purchase(w http.ResponseWriter, r *http.Request) {
	var req purchaseRequest
	if err := decodeJSON(w, r, smallBody, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The amount is a decimal string; a JSON number is refused rather than
	// guessed at, like any other malformed amount.
	var amount string
	if err := json.Unmarshal(req.Amount, &amount); err != nil {
		s.writeError(w, r, fault.New(fault.Invalid, billing.MsgInvalidAmount))
		return
	}
	res, err := s.p.Billing.Purchase(r.Context(), principal(r.Context()).Address, billing.PurchaseRequest{
		TxHash: req.TxHash, Token: req.Token, Amount: amount, ChainID: req.ChainID,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status":          "ok",
		"amount_credited": res.Credited.FloorCents(),
		"new_balance":     res.NewBalance.FloorCents(),
	})
}

func (s *server) pointsBalance(w http.ResponseWriter, r *http.Request) {
	n, err := s.p.Billing.Points(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"points": n})
}

type pointsEntry struct {
	ID            string         `json:"id"`
	UserAddress   string         `json:"user_address"`
	TriggerType   string         `json:"trigger_type"`
	PointsAwarded int64          `json:"points_awarded"`
	Description   string         `json:"description"`
	Timestamp     int64          `json:"timestamp"`
	Metadata      map[string]any `json:"metadata"`
}

// pointsHistory streams the awards, newest first, a page at a time.
func (s *server) pointsHistory(w http.ResponseWriter, r *http.Request) {
	streamTransactions(s, w, r, s.p.Billing.PointsHistory(r.Context(), principal(r.Context()).Address),
		func(e billing.PointsEntry) pointsEntry {
			return pointsEntry{
				ID: e.ID, UserAddress: e.Account, TriggerType: e.Trigger, PointsAwarded: e.Points,
				Description: e.Description, Timestamp: e.CreatedAt.Unix(), Metadata: e.Metadata,
			}
		})
}

type summaryJSON struct {
	CreditsBalanceCents  int64            `json:"credits_balance_cents"`
	BurnRateCentsPerHour int64            `json:"burn_rate_cents_per_hour"`
	RunwayHours          float64          `json:"runway_hours"`
	TotalTokens24h       int64            `json:"total_tokens_24h"`
	TotalRequests24h     int64            `json:"total_requests_24h"`
	TotalCost24hCents    int64            `json:"total_cost_24h_cents"`
	ActiveServices       map[string]int64 `json:"active_services"`
	CostByService        []serviceCost    `json:"cost_by_service"`
}

type serviceCost struct {
	Service   string `json:"service"`
	CostCents int64  `json:"cost_cents"`
	Tokens    int64  `json:"tokens"`
}

func (s *server) metricsSummary(w http.ResponseWriter, r *http.Request) {
	sum, err := s.p.Billing.Summary(r.Context(), principal(r.Context()).Address)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.p.Domains != nil {
		if sum.ActiveTunnels, err = s.p.Domains.ConnectedCount(r.Context(), principal(r.Context()).Address); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	out := summaryJSON{
		CreditsBalanceCents:  sum.BalanceCents,
		BurnRateCentsPerHour: sum.BurnRateCentsPerHr,
		RunwayHours:          sum.RunwayHours,
		TotalTokens24h:       sum.Tokens24h,
		TotalRequests24h:     sum.Requests24h,
		TotalCost24hCents:    sum.Cost24hCents,
		ActiveServices:       map[string]int64{"domains": sum.ActiveDomains, "feeds": sum.ActiveFeeds, "tunnels": sum.ActiveTunnels},
		CostByService:        []serviceCost{},
	}
	for _, c := range sum.CostByService {
		out.CostByService = append(out.CostByService, serviceCost{Service: c.Service, CostCents: c.CostCents, Tokens: c.Tokens})
	}
	writeCachedJSON(w, r, out)
}

type bucketJSON struct {
	Timestamp       int64 `json:"timestamp"`
	ChatTokens      int64 `json:"chat_tokens"`
	ChatCostCents   int64 `json:"chat_cost_cents"`
	SttCostCents    int64 `json:"stt_cost_cents"`
	FeedCostCents   int64 `json:"feed_cost_cents"`
	DomainCostCents int64 `json:"domain_cost_cents"`
	Requests        int64 `json:"requests"`
}

func (s *server) metricsHistory(w http.ResponseWriter, r *http.Request) {
	period, err := uintParam(r, "period", 24, "period must be between 1 and 720 hours")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bucket, err := uintParam(r, "bucket_minutes", 60, "bucket_minutes must be between 1 and 1440")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	buckets, err := s.p.Billing.UsageHistory(r.Context(), principal(r.Context()).Address, period, bucket)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Up to 43,200 buckets: encoded twice, once for the ETag and once to
	// the client, rather than held as one ~6 MB buffer per request.
	writeCachedStream(w, r, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 32<<10)
		enc := json.NewEncoder(bw)
		fmt.Fprintf(bw, `{"period_hours":%d,"buckets":[`, period)
		for i, b := range buckets {
			if i > 0 {
				bw.WriteByte(',')
			}
			if err := enc.Encode(bucketJSON{
				Timestamp: b.Start.Unix(), ChatTokens: b.ChatTokens, ChatCostCents: b.ChatCostCents,
				SttCostCents: b.SttCostCents, FeedCostCents: b.FeedCostCents, DomainCostCents: b.DomainCostCents,
				Requests: b.Requests,
			}); err != nil {
				return err
			}
		}
		bw.WriteString("]}\n")
		return bw.Flush()
	})
}

// uintParam reads an optional positive integer query parameter.
func uintParam(r *http.Request, name string, def int64, msg string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fault.New(fault.Invalid, msg)
	}
	return n, nil
}

// writeCachedStream is writeCachedJSON for a body too large to hold:
// encode writes it, deterministically, first into the hash behind the
// ETag and then, unless the client has it, to the response.
func writeCachedStream(w http.ResponseWriter, r *http.Request, encode func(io.Writer) error) {
	hash := sha256.New()
	if err := encode(hash); err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: errorDetail{Message: "internal server error", Type: "internal_error"}})
		return
	}
	if notModified(w, r, hash.Sum(nil)) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if err := encode(w); err != nil {
		panic(http.ErrAbortHandler)
	}
}

// notModified sets the ETag of a body whose SHA-256 is sum, and answers
// 304 Not Modified if the request's If-None-Match has it.
func notModified(w http.ResponseWriter, r *http.Request, sum []byte) bool {
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, no-cache")
	for _, tag := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if t := strings.TrimSpace(tag); t == etag || t == "W/"+etag || t == "*" {
			w.WriteHeader(http.StatusNotModified)
			return true
		}
	}
	return false
}

// writeCachedJSON writes v with a strong ETag of its bytes, answering a
// matching If-None-Match with 304 Not Modified.
func writeCachedJSON(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: errorDetail{Message: "internal server error", Type: "internal_error"}})
		return
	}
	sum := sha256.Sum256(b)
	if notModified(w, r, sum[:]) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}
