package httpserver_test

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// chatCharges returns the account's ChatInference entries: the replies'
// and the history summaries'.
func (e *env) personaCharges(t *testing.T, account string) (replies, summaries []billing.Entry) {
	t.Helper()
	es, err := billing.AllEntries(context.Background(), e.p.Billing.Ledger(), account, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	for _, en := range es {
		if strings.HasSuffix(en.Description, "history summary") {
			summaries = append(summaries, en)
		} else {
			replies = append(replies, en)
		}
	}
	return replies, summaries
}

// hexText is n characters of hex text, the same for a seed.
func hexText(r *rand.Rand, n int) string {
	b := make([]byte, (n+1)/2)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return hex.EncodeToString(b)[:n]
}

// Sixty messages of 651 characters of hex text to one persona's session,
// with the dev model (whose context the o200k count of such a history
// passes after about 40 messages, while the old estimate of 3 bytes a
// token kept it whole), all get replies: the history is compacted by the
// count that refuses a prompt. Every reply and every summary is billed
// once, and a summary only with its reply.
func TestPersonaLongSessionKeepsReplying(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.FromCents(2000))
	pid, sid := e.mkPersona(t, a)
	r := rand.New(rand.NewPCG(20, 6))
	const n = 60
	for i := range n {
		st, b := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": hexText(r, 651)})
		require.Equal(t, 202, st, "%v", b)
		msgs := e.awaitReply(t, a, pid, sid, 2*(i+1))
		last := msgs[len(msgs)-1]
		require.Equal(t, "complete", last["status"], "reply %d: %v", i+1, last["content"])
	}
	replies, summaries := e.personaCharges(t, a.account)
	require.Len(t, replies, n, "one charge per reply")
	require.NotEmpty(t, summaries, "the history was summarized")
	require.LessOrEqual(t, len(summaries), n, "at most one summary per reply")
}

// flakyProvider serves the dev model's history summaries and fails every
// reply.
type flakyProvider struct {
	inference.ModelProvider
	summaries atomic.Int32
}

func (p *flakyProvider) Name() string { return "flaky" }

func (p *flakyProvider) ChatCompletionStream(ctx context.Context, req *inference.ChatRequest) (inference.Stream, error) {
	if len(req.Messages) > 0 && strings.HasPrefix(req.Messages[0].Content, "Summarize the conversation") {
		p.summaries.Add(1)
		return p.ModelProvider.ChatCompletionStream(ctx, req)
	}
	return nil, fault.New(fault.Upstream, "the model refused")
}

// A reply that fails after a summary of the history was written for it
// bills nothing: neither the reply nor the summary.
func TestPersonaFailedReplyBillsNoSummary(t *testing.T) {
	prov := &flakyProvider{ModelProvider: inference.NewDevProvider()}
	model := inference.DevModel()
	model.ID, model.Providers = "flaky/model", []string{"flaky"}
	e := personaEnv(t, "flaky/model", perceptron.PersonasConfig{ContextTokens: 400}, []inference.Model{model}, prov)
	a := e.newAgent(t, billing.FromCents(500))
	pid, sid := e.mkPersona(t, a)
	for i := range 6 {
		st, _ := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": strings.Repeat("turn "+string(rune('a'+i))+" ", 60)})
		require.Equal(t, 202, st)
		msgs := e.awaitReply(t, a, pid, sid, 2*(i+1))
		require.Equal(t, "failed", msgs[len(msgs)-1]["status"])
	}
	require.Positive(t, prov.summaries.Load(), "summaries were written")
	replies, summaries := e.personaCharges(t, a.account)
	require.Empty(t, replies)
	require.Empty(t, summaries, "no summary is billed for a reply that failed")
	b, err := e.p.Billing.Balance(context.Background(), a.account)
	require.NoError(t, err)
	require.Equal(t, billing.FromCents(500), b.Total)
}

// A persona whose workspace files alone are past the model's context
// still replies: the files are cut to half the history's budget (before,
// every reply failed: "prompt is too long").
func TestPersonaWorkspaceLargerThanContext(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.FromCents(500))
	pid, sid := e.mkPersona(t, a)
	r := rand.New(rand.NewPCG(20, 7))
	for _, name := range []string{"a.md", "b.md", "c.md"} {
		st, b := e.call("PUT", "/api/personas/"+pid+"/files/"+name, a.key, map[string]string{"content": hexText(r, 60000)})
		require.Equal(t, 200, st, "%v", b)
	}
	for i := range 2 {
		st, b := e.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", a.key, map[string]string{"content": "What do your notes say?"})
		require.Equal(t, 202, st, "%v", b)
		msgs := e.awaitReply(t, a, pid, sid, 2*(i+1))
		require.Equal(t, "complete", msgs[len(msgs)-1]["status"], "%v", msgs[len(msgs)-1]["content"])
	}
}
