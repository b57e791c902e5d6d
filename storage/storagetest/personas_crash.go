package storagetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/personas"
)

// Points of a persona reply at which testPersonasCrash kills the
// process writing it.
const (
	crashHoldUnrecorded = "the hold is placed, not yet recorded on the reply"
	crashHoldRecorded   = "the hold is recorded on the reply"
	crashSettled        = "the reply is billed, its message not yet written"
	crashSummaryBilled  = "the reply and its summary are billed, its message not yet written"
	crashFinished       = "the reply's message is written"
)

// errDied is what a killed process's store and ledger return.
var errDied = errors.New("the process died")

// crashSwitch kills a process: from then on its store and ledger do
// nothing, and its workers stop.
type crashSwitch struct {
	at     string
	dead   atomic.Bool
	cancel context.CancelFunc
	settle atomic.Int32
}

func (c *crashSwitch) kill() error {
	c.dead.Store(true)
	c.cancel()
	return errDied
}

// crashingPersonas is the killed process's personas.Store.
type crashingPersonas struct {
	personas.Store
	sw *crashSwitch
}

func (s crashingPersonas) SetReplyCharge(ctx context.Context, id, charge string) error {
	switch {
	case s.sw.dead.Load():
		return errDied
	case s.sw.at == crashHoldUnrecorded:
		return s.sw.kill()
	}
	if err := s.Store.SetReplyCharge(ctx, id, charge); err != nil {
		return err
	}
	if s.sw.at == crashHoldRecorded {
		return s.sw.kill()
	}
	return nil
}

func (s crashingPersonas) FinishReply(ctx context.Context, id, content, status string, at time.Time) (personas.Message, error) {
	if s.sw.dead.Load() {
		return personas.Message{}, errDied
	}
	m, err := s.Store.FinishReply(ctx, id, content, status, at)
	if err == nil && s.sw.at == crashFinished {
		return personas.Message{}, s.sw.kill()
	}
	return m, err
}

func (s crashingPersonas) NextReply(ctx context.Context, sessionID string) (personas.Message, error) {
	if s.sw.dead.Load() {
		return personas.Message{}, errDied
	}
	return s.Store.NextReply(ctx, sessionID)
}

func (s crashingPersonas) LeaseSessions(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]string, error) {
	if s.sw.dead.Load() {
		return nil, errDied
	}
	return s.Store.LeaseSessions(ctx, now, lease, limit)
}

func (s crashingPersonas) RenewLease(ctx context.Context, sessionID string, until time.Time) error {
	if s.sw.dead.Load() {
		return errDied
	}
	return s.Store.RenewLease(ctx, sessionID, until)
}

func (s crashingPersonas) ReleaseSession(ctx context.Context, sessionID string) error {
	if s.sw.dead.Load() {
		return errDied // a killed process keeps its lease until it passes
	}
	return s.Store.ReleaseSession(ctx, sessionID)
}

// crashingLedger is the killed process's ledger.
type crashingLedger struct {
	inference.Ledger
	sw *crashSwitch
}

func (l crashingLedger) PlaceHold(ctx context.Context, r billing.HoldRequest) (billing.Hold, error) {
	if l.sw.dead.Load() {
		return billing.Hold{}, errDied
	}
	return l.Ledger.PlaceHold(ctx, r)
}

func (l crashingLedger) SettleHold(ctx context.Context, s billing.Settlement) (billing.Entry, error) {
	if l.sw.dead.Load() {
		return billing.Entry{}, errDied
	}
	e, err := l.Ledger.SettleHold(ctx, s)
	if err == nil {
		n := l.sw.settle.Add(1)
		if l.sw.at == crashSettled && n == 1 || l.sw.at == crashSummaryBilled && n == 2 {
			return billing.Entry{}, l.sw.kill()
		}
	}
	return e, err
}

func (l crashingLedger) ReleaseHold(ctx context.Context, holdID string) error {
	if l.sw.dead.Load() {
		return errDied
	}
	return l.Ledger.ReleaseHold(ctx, holdID)
}

// personaWorker is a personas.Service over a store and a ledger, writing
// replies with the dev model (through prov if not nil: a provider named
// as the dev model's), its sessions leased for lease.
func personaWorker(t *testing.T, ps personas.Store, l inference.Ledger, contextTokens int, lease time.Duration, prov ...inference.ModelProvider) *personas.Service {
	t.Helper()
	cat, err := inference.NewCatalog(inference.DevModel())
	require.NoError(t, err)
	if len(prov) == 0 {
		prov = []inference.ModelProvider{inference.NewDevProvider()}
	}
	inf, err := inference.NewService(inference.Options{Catalog: cat, Providers: prov, Ledger: l})
	require.NoError(t, err)
	return personas.NewService(ps, personas.Options{Inference: inf, Model: inference.DevModelID, ContextTokens: contextTokens, Lease: lease, Workers: 1})
}

// A process killed at any point of a persona reply (kill -9: its store,
// its ledger and its workers stop at once, and its lease on the session
// stays until it passes) leaves, once another process has taken the
// session over, the reply complete and charged exactly once, and its
// history summary charged exactly once; the two processes are two
// handles on the database.
func testPersonasCrash(t *testing.T, f Factory) {
	for _, at := range []string{crashHoldUnrecorded, crashHoldRecorded, crashSettled, crashSummaryBilled, crashFinished} {
		t.Run(strings.ReplaceAll(at, " ", "_"), func(t *testing.T) {
			open := f(t)
			h1, h2 := open(t), open(t)
			ctx := t.Context()
			acct := billAddr(77)
			_, err := as[billing.Ledger](t, h1).Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, At: time.Now()})
			require.NoError(t, err)

			// A session whose history does not fit the budget: each reply
			// is written with a summary of the older turns.
			ps1 := as[personas.Store](t, h1)
			now := time.Now().UTC().Truncate(time.Microsecond)
			require.NoError(t, ps1.CreatePersona(ctx, personas.Persona{ID: "p", Account: acct, PersonalityID: "jensen", Name: "My Jensen", CreatedAt: now}, 0))
			require.NoError(t, ps1.CreateSession(ctx, personas.Session{ID: "s", PersonaID: "p", Name: "n", CreatedAt: now}, 0))
			summary := at != crashHoldUnrecorded && at != crashHoldRecorded
			turns := 1
			if summary {
				turns = 8
			}
			for i := range turns - 1 {
				_, r, err := ps1.Send(ctx,
					personas.Message{ID: fmt.Sprint("u", i), SessionID: "s", Role: "user", Content: strings.Repeat(fmt.Sprint("word", i, " "), 60), Status: personas.StatusComplete, CreatedAt: now},
					personas.Message{ID: fmt.Sprint("r", i), SessionID: "s", Role: "assistant", Status: personas.StatusPending, CreatedAt: now}, 0)
				require.NoError(t, err)
				_, err = ps1.FinishReply(ctx, r.ID, strings.Repeat("answer ", 50), personas.StatusComplete, now)
				require.NoError(t, err)
			}

			lease := 300 * time.Millisecond
			sw := &crashSwitch{at: at}
			run1, cancel1 := context.WithCancel(ctx)
			sw.cancel = cancel1
			w1 := personaWorker(t, crashingPersonas{ps1, sw}, crashingLedger{as[billing.Ledger](t, h1), sw}, 700, lease)
			_, reply, err := w1.Send(ctx, acct, "p", "s", "Tell me about GPUs, please.")
			require.NoError(t, err)
			stopped := make(chan struct{})
			go func() { defer close(stopped); w1.Run(run1) }()
			require.Eventually(t, sw.dead.Load, 20*time.Second, 5*time.Millisecond, "the process never reached %q", at)
			<-stopped

			// Another process takes the session over once the lease passes.
			w2 := personaWorker(t, as[personas.Store](t, h2), as[billing.Ledger](t, h2), 700, lease)
			run2, cancel2 := context.WithCancel(ctx)
			defer cancel2()
			go w2.Run(run2)
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			done, err := w2.Await(wctx, "s", reply.ID)
			require.NoError(t, err)
			require.Equal(t, personas.StatusComplete, done.Status, "%s", done.Content)
			require.NotEmpty(t, done.Content)

			entries, err := billing.AllEntries(ctx, as[billing.Ledger](t, h2), acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
			require.NoError(t, err)
			var replies, summaries int
			var spent billing.MicroCents
			for _, e := range entries {
				spent -= e.Amount
				if strings.HasSuffix(e.Description, "history summary") {
					summaries++
				} else {
					replies++
				}
			}
			require.Equal(t, 1, replies, "one charge for the one reply: %+v", entries)
			if summary {
				require.Equal(t, 1, summaries, "one charge for its summary: %+v", entries)
			} else {
				require.Zero(t, summaries)
			}
			b, err := as[billing.Ledger](t, h2).Balance(ctx, acct)
			require.NoError(t, err)
			require.Equal(t, billing.Dollar-spent, b.Total)
			_, err = as[personas.Store](t, h2).NextReply(ctx, "s")
			require.True(t, errors.Is(err, fault.NotFound), "nothing left pending: %v", err)
		})
	}
}

// slowProvider is the dev model, answering after a delay.
type slowProvider struct {
	inference.ModelProvider
	delay time.Duration
	calls *atomic.Int32
}

func (p slowProvider) ChatCompletionStream(ctx context.Context, req *inference.ChatRequest) (inference.Stream, error) {
	p.calls.Add(1)
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.ModelProvider.ChatCompletionStream(ctx, req)
}

// A reply that takes longer than the lease is not taken over by another
// live process: its worker renews the lease while it writes. The model
// is asked once, and the reply charged once.
func testPersonasSlowReply(t *testing.T, f Factory) {
	open := f(t)
	h1, h2 := open(t), open(t)
	ctx := t.Context()
	acct := billAddr(78)
	_, err := as[billing.Ledger](t, h1).Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, At: time.Now()})
	require.NoError(t, err)
	ps1 := as[personas.Store](t, h1)
	now := time.Now().UTC().Truncate(time.Microsecond)
	require.NoError(t, ps1.CreatePersona(ctx, personas.Persona{ID: "p", Account: acct, PersonalityID: "jensen", Name: "My Jensen", CreatedAt: now}, 0))
	require.NoError(t, ps1.CreateSession(ctx, personas.Session{ID: "s", PersonaID: "p", Name: "n", CreatedAt: now}, 0))

	var calls atomic.Int32
	lease := 300 * time.Millisecond
	slow := slowProvider{ModelProvider: inference.NewDevProvider(), delay: 5 * lease, calls: &calls}
	w1 := personaWorker(t, ps1, as[billing.Ledger](t, h1), 0, lease, slow)
	w2 := personaWorker(t, as[personas.Store](t, h2), as[billing.Ledger](t, h2), 0, lease, slow)
	_, reply, err := w1.Send(ctx, acct, "p", "s", "Tell me about GPUs, slowly.")
	require.NoError(t, err)
	run, cancel := context.WithCancel(ctx)
	defer cancel()
	go w1.Run(run)
	time.Sleep(lease / 2) // w1 leases the session first
	go w2.Run(run)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	done, err := w2.Await(wctx, "s", reply.ID)
	require.NoError(t, err)
	require.Equal(t, personas.StatusComplete, done.Status, "%s", done.Content)
	require.Equal(t, int32(1), calls.Load(), "the model is asked once")
	entries, err := billing.AllEntries(ctx, as[billing.Ledger](t, h2), acct, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	require.Len(t, entries, 1)
}
