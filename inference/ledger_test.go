package inference_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// memLedger is a minimal in-memory ledger with the billing.Ledger hold
// contracts, and an auditor: it records whether any account's available
// balance ever went below zero.
type memLedger struct {
	mu        sync.Mutex
	total     map[string]billing.MicroCents
	holds     map[string]billing.Hold
	entries   []billing.Entry
	overdrawn bool
	// failSettles makes the next SettleHold calls fail transiently.
	failSettles int
	// holdRequests are the hold requests granted, in order.
	holdRequests []billing.HoldRequest
}

func newLedger() *memLedger {
	return &memLedger{total: map[string]billing.MicroCents{}, holds: map[string]billing.Hold{}}
}

func (l *memLedger) credit(account string, amount billing.MicroCents) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total[account] += amount
	l.entries = append(l.entries, billing.Entry{ID: uuid.NewString(), Account: account, Type: billing.Purchase,
		Status: billing.Completed, Amount: amount, BalanceAfter: l.total[account]})
}

func (l *memLedger) heldLocked(account string) billing.MicroCents {
	var held billing.MicroCents
	for _, h := range l.holds {
		if h.Account == account {
			held += h.Amount
		}
	}
	return held
}

func (l *memLedger) audit(account string) {
	if l.total[account]-l.heldLocked(account) < 0 {
		l.overdrawn = true
	}
}

// Balance is billing.Ledger's; examples read it, the service does not.
func (l *memLedger) Balance(_ context.Context, account string) (billing.Balance, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return billing.Balance{Total: l.total[account], Held: l.heldLocked(account)}, nil
}

// PlaceHold holds r.Amount, or with r.MinAmount > 0 up to r.Amount (at
// least r.MinAmount), as billing.HoldRequest documents.
func (l *memLedger) PlaceHold(_ context.Context, r billing.HoldRequest) (billing.Hold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Amount <= 0 || r.MinAmount < 0 || r.MinAmount > r.Amount {
		return billing.Hold{}, fault.New(fault.Invalid, "invalid hold amounts")
	}
	need := r.Amount
	if r.MinAmount > 0 {
		need = r.MinAmount
	}
	avail := l.total[r.Account] - l.heldLocked(r.Account)
	if avail < need {
		return billing.Hold{}, fault.New(fault.InsufficientFunds, "insufficient funds")
	}
	l.holdRequests = append(l.holdRequests, r)
	h := billing.Hold{ID: uuid.NewString(), Account: r.Account, Amount: min(r.Amount, avail), CreatedAt: r.At, ExpiresAt: r.ExpiresAt}
	l.holds[h.ID] = h
	l.audit(r.Account)
	return h, nil
}

func (l *memLedger) SettleHold(_ context.Context, s billing.Settlement) (billing.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failSettles > 0 {
		l.failSettles--
		return billing.Entry{}, fault.New(fault.Unavailable, "database is locked")
	}
	h, ok := l.holds[s.HoldID]
	if !ok {
		return billing.Entry{}, fault.New(fault.NotFound, "hold not found")
	}
	amount := min(s.Amount, h.Amount)
	if amount < 0 {
		return billing.Entry{}, fault.New(fault.Invalid, "negative settlement")
	}
	delete(l.holds, s.HoldID)
	l.total[h.Account] -= amount
	e := billing.Entry{ID: uuid.NewString(), Account: h.Account, Type: s.Type, Status: billing.Completed,
		Amount: -amount, BalanceAfter: l.total[h.Account], Description: s.Description, Usage: s.Usage, CreatedAt: s.At}
	l.entries = append(l.entries, e)
	l.audit(h.Account)
	return e, nil
}

func (l *memLedger) ReleaseHold(_ context.Context, holdID string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.holds[holdID]; !ok {
		return fault.New(fault.NotFound, "hold not found")
	}
	delete(l.holds, holdID)
	return nil
}

// chatEntries returns the account's ChatInference entries.
func (l *memLedger) chatEntries(account string) []billing.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []billing.Entry
	for _, e := range l.entries {
		if e.Account == account && e.Type == billing.ChatInference {
			out = append(out, e)
		}
	}
	return out
}

func (l *memLedger) openHolds() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.holds)
}

func (l *memLedger) balance(account string) billing.MicroCents {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total[account]
}

// sumEntries adds up every entry of the account.
func (l *memLedger) sumEntries(account string) billing.MicroCents {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sum billing.MicroCents
	for _, e := range l.entries {
		if e.Account == account {
			sum += e.Amount
		}
	}
	return sum
}

// testTokenizer is shared so that the encoding loads once per test binary.
var testTokenizer = inference.NewTokenizer()

const acct = "0xabc0000000000000000000000000000000000001"

// Test models: prices in micro-cents per token equal cents per 1M.
func chatModel() inference.Model {
	return inference.Model{
		ID: "test/chat", Name: "Test Chat", Created: 1748000000, ContextLength: 8192, MaxOutputTokens: 1024,
		FrontierRank: 3, InputCentsPer1M: 1000, OutputCentsPer1M: 2000,
		Providers: []string{"fake"}, UpstreamModel: "fake-upstream",
	}
}

func toolsModel() inference.Model {
	m := chatModel()
	m.ID, m.Name, m.FunctionCalling = "test/tools", "Test Tools", true
	return m
}

type fixture struct {
	fake    *inferencetest.Upstream
	server  *httptest.Server
	ledger  *memLedger
	svc     *inference.Service
	charges chan inference.Charge
}

// newFixture wires a service over a fake upstream, with $1 in acct.
func newFixture(t testing.TB, cfg inferencetest.Config, models ...inference.Model) *fixture {
	t.Helper()
	f := &fixture{fake: inferencetest.New(cfg), ledger: newLedger(), charges: make(chan inference.Charge, 64)}
	f.server = httptest.NewServer(f.fake)
	t.Cleanup(f.server.Close)
	p, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: f.server.URL + "/v1", APIKey: "sk-test"})
	require.NoError(t, err)
	if len(models) == 0 {
		models = []inference.Model{chatModel(), toolsModel()}
	}
	cat, err := inference.NewCatalog(models...)
	require.NoError(t, err)
	router, err := inference.NewRouter([]inference.ModelProvider{p}, inference.RouterOptions{BackoffBase: time.Millisecond, MaxAttempts: 1})
	require.NoError(t, err)
	f.svc, err = inference.NewService(inference.Options{
		Catalog: cat, Router: router, Ledger: f.ledger, Tokens: testTokenizer,
		Points: func(_ context.Context, c inference.Charge) error { f.charges <- c; return nil },
	})
	require.NoError(t, err)
	f.ledger.credit(acct, billing.Dollar)
	return f
}

// lastUpstream returns the last request the fake received, decoded.
func (f *fixture) lastUpstream(t *testing.T) map[string]any {
	t.Helper()
	r, ok := f.fake.LastRequest()
	require.True(t, ok, "the upstream got no request")
	m := r.JSON()
	require.NotNil(t, m)
	return m
}

func userRequest(model, text string) *inference.ChatRequest {
	return &inference.ChatRequest{Model: model, Messages: []inference.Message{{Role: inference.RoleUser, Content: text}}}
}

// promptTokens is the service's exact prompt count for one user message.
func promptTokens(text string) int64 {
	return int64(3 + 3 + testTokenizer.CountTokens("user") + testTokenizer.CountTokens(text))
}
