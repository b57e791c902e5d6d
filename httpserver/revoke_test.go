package httpserver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// revokeWithin is how soon after the revocation's (or release's) answer
// what it ends must be closed: a second, two under the race detector
// (on a loaded 2-core machine it slows the listener and the handlers
// several times).
var revokeWithin = map[bool]time.Duration{false: time.Second, true: 2 * time.Second}[raceDetector]

// keyID returns the ID of the agent's client key.
func (e *env) keyID(t *testing.T, a agent) string {
	t.Helper()
	st, list := e.call("GET", "/api/keys", a.master, nil)
	require.Equal(t, 200, st, "%v", list)
	keys := list["keys"].([]any)
	require.Len(t, keys, 1)
	return keys[0].(map[string]any)["id"].(string)
}

// chatCharges counts the wallet's ChatInference entries.
func (e *env) chatCharges(t *testing.T, account string) int {
	t.Helper()
	es, err := billing.AllEntries(context.Background(), e.p.Billing.Ledger(), account, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	require.NoError(t, err)
	return len(es)
}

// sendWS sends a message frame on a persona stream; it may fail once the
// server has closed the stream.
func sendWS(c *websocket.Conn, content string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, []byte(`{"type":"message","content":"`+content+`"}`))
}

// awaitWSClosed reads until the stream ends (at most 10 s) and returns
// when it ended and the error that ended it.
func awaitWSClosed(c *websocket.Conn) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return time.Now(), err
		}
	}
}

// revokeKey revokes the key through e and returns when the answer came.
func (e *env) revokeKey(t *testing.T, master, id string) time.Time {
	t.Helper()
	st, out := e.call("DELETE", "/api/keys/"+id, master, nil)
	require.Equal(t, 200, st, "%v", out)
	return time.Now()
}

// checkStreamRevoked asserts that the stream c of agent a on session
// (pid, sid) closes within revokeWithin of revokedAt with 1008, and that
// a message sent on it after the revocation is neither stored nor
// charged. msgs is the session's message count before.
func checkStreamRevoked(t *testing.T, e *env, c *websocket.Conn, a agent, pid, sid string, revokedAt time.Time, msgs, charges int) {
	t.Helper()
	_ = sendWS(c, "sent after the revocation") // may fail: the stream may be closed already
	at, err := awaitWSClosed(c)
	require.Equal(t, websocket.StatusPolicyViolation, websocket.CloseStatus(err), "the stream ends as revoked: %v", err)
	require.Less(t, at.Sub(revokedAt), revokeWithin, "closed %v after the revocation", at.Sub(revokedAt))
	require.ErrorContains(t, err, "API key revoked")
	// Give a wrongly accepted message time to be stored and replied to.
	time.Sleep(500 * time.Millisecond)
	got, _, err := e.p.Personas.Messages(context.Background(), a.account, pid, sid, "", 200)
	require.NoError(t, err)
	require.Len(t, got, msgs, "no message accepted after the revocation")
	require.Equal(t, charges, e.chatCharges(t, a.account), "nothing charged after the revocation")
}

func TestRevokedKeyClosesPersonaStream(t *testing.T) {
	e := personaEnv(t, "", perceptron.PersonasConfig{}, nil)
	a := e.newAgent(t, billing.FromCents(100))
	pid, sid := e.mkPersona(t, a)
	c := e.wsConn(t, a.key, pid, sid)
	require.NoError(t, sendWS(c, "hello"))
	_, _, reply := readUntilReply(t, c)
	require.Equal(t, "complete", reply["status"])
	require.Equal(t, 1, e.chatCharges(t, a.account))

	at := e.revokeKey(t, a.master, e.keyID(t, a))
	checkStreamRevoked(t, e, c, a, pid, sid, at, 2, 1)

	// And the key cannot open a new one.
	_, res, err := websocket.Dial(context.Background(), strings.Replace(e.url, "http://", "ws://", 1)+"/api/personas/"+pid+"/sessions/"+sid+"/stream?token="+a.key, nil)
	require.Error(t, err)
	require.Equal(t, 401, res.StatusCode)
}

// dialTunnel connects a raw tunnel WebSocket with token, returning the
// HTTP status of a refusal (0 if it connected, in which case it closes
// it).
func dialTunnel(t *testing.T, base, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, res, err := websocket.Dial(ctx, strings.Replace(base, "http://", "ws://", 1)+"/api/domains/tunnel", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}, Subprotocols: []string{tunnel.Subprotocol},
	})
	if err != nil {
		require.NotNil(t, res, "%v", err)
		return res.StatusCode
	}
	ws.CloseNow()
	return 0
}

// tunnelToken fetches a tunnel token for the domain with key.
func (e *env) tunnelToken(t *testing.T, key, id string) string {
	t.Helper()
	st, out := e.call("POST", "/api/domains/"+id+"/tunnel-token", key, nil)
	require.Equal(t, 200, st, "%v", out)
	return out["tunnel_token"].(string)
}

// awaitDisconnected polls until the domain has no tunnel on p (at most
// 10 s) and returns when that was seen.
func awaitDisconnected(t *testing.T, p *perceptron.Platform, id string) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Domains.Connected(context.Background(), id) {
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel of %s is still connected after 10 s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

func hello(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "previous owner's service") }

func TestRevokedKeyDisconnectsTunnel(t *testing.T) {
	te := newTunnelEnv(t, "revokeme", http.HandlerFunc(hello), perceptron.Config{})
	cl, _ := te.connect(t)
	st, body := te.get(t, "/")
	require.Equal(t, 200, st, body)
	before := te.tunnelToken(t, te.agent.key, te.id) // fetched before the revocation

	at := te.revokeKey(t, te.agent.master, te.keyID(t, te.agent))
	gone := awaitDisconnected(t, te.p, te.id)
	require.Less(t, gone.Sub(at), revokeWithin, "disconnected %v after the revocation", gone.Sub(at))
	require.Eventually(t, func() bool { return !cl.Status().Connected }, 5*time.Second, 5*time.Millisecond, "the client sees it")
	st, body = te.get(t, "/")
	require.Equal(t, 502, st, body)
	require.Contains(t, body, "no tunnel is connected")

	// A token fetched before the revocation no longer connects, and the
	// client cannot fetch a new one.
	require.Equal(t, 401, dialTunnel(t, te.url, before))
	time.Sleep(300 * time.Millisecond)
	require.False(t, te.p.Domains.Connected(context.Background(), te.id))
	require.Contains(t, cl.Status().LastError, "invalid")

	// The master key's own tunnels are unaffected by a client key's
	// revocation.
	mt := te.tunnelToken(t, te.agent.master, te.id)
	require.Equal(t, 0, dialTunnel(t, te.url, mt))
}

// A login replaces the master key, and regenerate-master-key too: the
// tunnels connected with tokens of the old master key close.
func TestReplacedMasterKeyDisconnectsTunnel(t *testing.T) {
	cfg := perceptron.Config{}
	cfg.Domains.PortMin, cfg.Domains.PortMax = 1, 65535
	e := newEnv(t, cfg)
	w := newWallet(t)
	master := e.login(w)
	st, k := e.call("POST", "/api/keys/generate", master, map[string]string{"label": "agent"})
	require.Equal(t, 200, st, "%v", k)
	account := strings.ToLower(w.addr)
	_, err := e.p.Billing.Ledger().Credit(context.Background(), billing.Posting{
		Account: account, Type: billing.Purchase, Amount: billing.FromCents(1000), Description: "test", At: e.clock.Now(),
	})
	require.NoError(t, err)
	st, d := e.call("POST", "/api/domains/reserve", master, map[string]string{"subdomain": "masterkey"})
	require.Equal(t, 200, st, "%v", d)
	id := d["id"].(string)
	st, _ = e.call("POST", "/api/domains/"+id+"/assign", master, map[string]any{"port": 4000})
	require.Equal(t, 200, st)

	// Connected with the master key's token: held open by a raw peer.
	hub := e.p.Domains.Broker().(*tunnel.Hub)
	connect := func(token string) *websocket.Conn {
		t0 := time.Now()
		ws, _, err := websocket.Dial(context.Background(), strings.Replace(e.url, "http://", "ws://", 1)+"/api/domains/tunnel", &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}, Subprotocols: []string{tunnel.Subprotocol},
		})
		require.NoError(t, err)
		t.Cleanup(func() { ws.CloseNow() })
		go func() { // read, so that the close arrives
			for {
				if _, _, err := ws.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		require.Eventually(t, func() bool { since, ok := hub.Since(id); return ok && !since.Before(t0) }, 5*time.Second, 5*time.Millisecond)
		return ws
	}
	connect(e.tunnelToken(t, master, id))
	second := e.login(w) // a login elsewhere
	at := time.Now()
	gone := awaitDisconnected(t, e.p, id)
	require.Less(t, gone.Sub(at), revokeWithin)

	// A client key's tunnel survives a master key's replacement.
	connect(e.tunnelToken(t, k["key"].(string), id))
	st, out := e.call("POST", "/api/auth/regenerate-master-key", second, nil)
	require.Equal(t, 200, st, "%v", out)
	time.Sleep(200 * time.Millisecond)
	require.True(t, e.p.Domains.Connected(context.Background(), id))

	// The new master key's tunnel closes on regenerate-master-key.
	connect(e.tunnelToken(t, out["master_key"].(string), id))
	st, _ = e.call("POST", "/api/auth/regenerate-master-key", out["master_key"].(string), nil)
	require.Equal(t, 200, st)
	at = time.Now()
	gone = awaitDisconnected(t, e.p, id)
	require.Less(t, gone.Sub(at), revokeWithin)
}

// The ingress checks, per request, that the tunnel it holds is still the
// active holder of the name: a domain released behind this process's
// back (in the store, with no event: what another process's release
// looks like before its notification arrives) is not served, even on a
// stream the ingress keeps for reuse, and its tunnel is closed.
func TestIngressRefusesReleasedDomainBeforeTheEvent(t *testing.T) {
	te := newTunnelEnv(t, "behindback", http.HandlerFunc(hello), perceptron.Config{})
	te.connect(t)
	st, body := te.get(t, "/")
	require.Equal(t, 200, st, body)
	store := te.p.Store().(tunnel.Store)
	_, err := store.ReleaseDomain(context.Background(), te.agent.account, te.id, te.clock.Now())
	require.NoError(t, err)
	st, body = te.get(t, "/")
	require.Equal(t, 404, st, body)
	require.NotContains(t, body, "previous owner's service")
	require.False(t, te.p.Domains.Connected(context.Background(), te.id), "the stale tunnel is closed")
}

// A revocation this process never heard of (stored behind its back, no
// event: a notification lost while the listener reconnected, or a
// publisher that crashed after the commit) still closes the key's tunnel
// on the next tick.
func TestTickClosesTunnelOfKeyRevokedWithoutEvent(t *testing.T) {
	te := newTunnelEnv(t, "missedevent", http.HandlerFunc(hello), perceptron.Config{TickInterval: 50 * time.Millisecond})
	te.connect(t)
	require.NoError(t, te.p.Store().(auth.Store).RevokeClientKey(context.Background(), te.agent.account, te.keyID(t, te.agent), te.clock.Now()))
	at := time.Now()
	gone := awaitDisconnected(t, te.p, te.id)
	require.Less(t, gone.Sub(at), 2*time.Second, "closed on a tick of 50 ms")
}
