package httpserver_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/storage/postgres"
)

// twoProcesses starts two platforms, each with its own connection pool,
// on one PostgreSQL schema: what two server processes sharing a database
// look like from the outside.
func twoProcesses(t *testing.T) (a, b *env) { return twoProcessesWith(t, perceptron.Config{}) }

// twoProcessesWith is twoProcesses with cfg (its Store and Now are set).
func twoProcessesWith(t *testing.T, cfg perceptron.Config) (a, b *env) {
	url := os.Getenv("PERCEPTRON_TEST_POSTGRES")
	if url == "" {
		t.Skip("PERCEPTRON_TEST_POSTGRES is not set; CI sets it to a throwaway server")
	}
	schema := fmt.Sprintf("mp_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), url)
		if err == nil {
			conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(context.Background())
		}
	})
	c := &clock{t: time.Unix(1_748_000_000, 0)}
	open := func() *env {
		st, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema, MaxConns: 16})
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		cfg := cfg
		cfg.Store, cfg.Now = st, c.Now
		p, err := perceptron.New(context.Background(), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		srv := httptest.NewServer(httpserver.New(p, httpserver.Options{}))
		t.Cleanup(srv.Close)
		return &env{t: t, url: srv.URL, clock: c, p: p}
	}
	return open(), open()
}

func TestTwoProcessesOnePostgres(t *testing.T) {
	a, b := twoProcesses(t)
	w := newWallet(t)

	// One nonce, verified 16 times at once through both processes: one wins.
	_, ch := a.call("GET", "/api/auth/challenge", "", nil)
	nonce := ch["nonce"].(string)
	body := map[string]string{"address": w.addr, "signature": w.sign(t, nonce), "nonce": nonce}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var master string
	for i := 0; i < 16; i++ {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, out := e.call("POST", "/api/auth/verify", "", body)
			mu.Lock()
			defer mu.Unlock()
			statuses[st]++
			if st == 200 {
				master = out["master_key"].(string)
			} else {
				require.Equal(t, "invalid or expired nonce", out["error"].(map[string]any)["message"])
			}
		}()
	}
	wg.Wait()
	require.Equal(t, map[int]int{200: 1, 401: 15}, statuses)

	// The master key issued by one process works on the other.
	st, _ := b.call("GET", "/api/keys", master, nil)
	require.Equal(t, 200, st)

	// The key limit holds across processes: 10 concurrent generates, 2 keys.
	statuses = map[int]int{}
	for i := 0; i < 10; i++ {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _ := e.call("POST", "/api/keys/generate", master, map[string]string{"label": "k"})
			mu.Lock()
			statuses[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Equal(t, map[int]int{200: 2, 403: 8}, statuses)

	// A key revoked on one process is refused by the other on the next request.
	_, list := a.call("GET", "/api/keys", master, nil)
	id := list["keys"].([]any)[0].(map[string]any)["id"].(string)
	_, gen := a.call("GET", "/api/keys", master, nil)
	require.Len(t, gen["keys"], 2)
	st, _ = b.call("DELETE", "/api/keys/"+id, master, nil)
	require.Equal(t, 200, st)
	_, list = a.call("GET", "/api/keys", master, nil)
	require.Len(t, list["keys"], 1)
}

func TestTwoProcessesBillEachPeriodOnce(t *testing.T) {
	a, b := twoProcesses(t)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000bb"
	_, err := a.p.Billing.Ledger().Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 10 * billing.Dollar, Description: "grant", At: a.clock.Now()})
	require.NoError(t, err)
	for i := 0; i < 4; i++ {
		_, err := a.p.Billing.Subscribe(ctx, billing.SubscribeRequest{
			Account: acct, Kind: "feed", Resource: fmt.Sprint("r", i), Type: billing.NewsFeed, HourlyCost: 10 * billing.Cent,
		})
		require.NoError(t, err)
	}
	a.clock.Advance(3*time.Hour + time.Minute) // three more hours due for each
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		p := a.p
		if i%2 == 1 {
			p = b.p
		}
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = p.Billing.Tick(ctx) }()
	}
	wg.Wait()
	bal, err := b.p.Billing.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, 10*billing.Dollar-4*4*10*billing.Cent, bal.Total) // 4 subscriptions x 4 hours, each once
	entries, err := billing.AllEntries(ctx, b.p.Billing.Ledger(), acct, billing.EntryFilter{Types: []billing.TxType{billing.NewsFeed}})
	require.NoError(t, err)
	require.Len(t, entries, 16)
}

// Two processes on one PostgreSQL: a message sent through one is replied
// to once, and clients of the session on both receive every event.
func TestTwoProcessesPersonaStream(t *testing.T) {
	a, b := twoProcessesWith(t, perceptron.Config{Dev: true})
	ag := a.newAgent(t, billing.FromCents(100))
	pid, sid := a.mkPersona(t, ag)
	onA := a.wsConn(t, ag.key, pid, sid)
	onB := b.wsConn(t, ag.key, pid, sid)
	for i := range 3 {
		st, _ := a.call("POST", "/api/personas/"+pid+"/sessions/"+sid+"/messages/new", ag.key, map[string]string{"content": fmt.Sprint("hello ", i)})
		require.Equal(t, 202, st)
		for _, c := range []*websocket.Conn{onA, onB} {
			user, deltas, reply := readUntilReply(t, c)
			require.Equal(t, fmt.Sprint("hello ", i), user["content"])
			require.Equal(t, "complete", reply["status"])
			require.Equal(t, reply["content"], deltas)
		}
	}
	msgs := b.awaitReply(t, ag, pid, sid, 6)
	for i, m := range msgs {
		require.Equal(t, []string{"user", "assistant"}[i%2], m["role"])
	}
	entries, err := billing.AllEntries(context.Background(), a.p.Billing.Ledger(), ag.account, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	require.Len(t, entries, 3, "one reply per message, whichever process wrote it")
}
