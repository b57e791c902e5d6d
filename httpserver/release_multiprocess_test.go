package httpserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

// twoTunnelProcesses is twoProcessesWith for tunnels: any local port,
// one token key for both.
func twoTunnelProcesses(t *testing.T, dev bool) (a, b *env) {
	cfg := perceptron.Config{Dev: dev}
	cfg.Domains.PortMin, cfg.Domains.PortMax = 1, 65535
	cfg.Domains.TokenKey = []byte("0123456789abcdef0123456789abcdef")
	return twoProcessesWith(t, cfg)
}

// serveOrigin starts a local service answering body, and returns its port.
func serveOrigin(t *testing.T, body string) int {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(o.Close)
	_, p, _ := net.SplitHostPort(o.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	return port
}

// reserveOn reserves name on e for a and points it at port.
func (e *env) reserveOn(t *testing.T, a agent, name string, port int) string {
	t.Helper()
	st, r := e.call("POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": name})
	require.Equal(t, 200, st, "%v", r)
	id := r["id"].(string)
	st, r = e.call("POST", "/api/domains/"+id+"/assign", a.key, map[string]any{"port": port})
	require.Equal(t, 200, st, "%v", r)
	return id
}

// connectOn connects a tunnel client for the domain to e with key.
func (e *env) connectOn(t *testing.T, key, id string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{
		URL: e.url, Tokens: client.APITokens(e.url, key, id, nil),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.Connected():
	case <-time.After(10 * time.Second):
		t.Fatalf("the tunnel did not connect: %+v", c.Status())
	}
	return c
}

// ingressGet sends GET / for host to the ingress at url.
func ingressGet(url, host string) (int, string, error) {
	req, err := http.NewRequest("GET", url+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// Released through process B while its tunnel is connected to process A:
// A closes the tunnel within a second, and no request sent to A after the
// release reaches the previous owner's service, even once another wallet
// holds the name.
func TestTwoProcessesReleaseClosesTunnel(t *testing.T) {
	a, b := twoTunnelProcesses(t, false)
	ing := httptest.NewServer(httpserver.NewIngress(a.p, httpserver.IngressOptions{ResponseHeaderTimeout: 5 * time.Second, RateLimit: httpserver.NoRateLimit{}}))
	t.Cleanup(ing.Close)
	const host = "shared.pct.site"
	const oldBody, newBody = "previous owner's service", "new owner's service"

	prev := a.newAgent(t, billing.FromCents(1000))
	id := a.reserveOn(t, prev, "shared", serveOrigin(t, oldBody))
	a.connectOn(t, prev.key, id)
	st, body, err := ingressGet(ing.URL, host)
	require.NoError(t, err)
	require.Equal(t, 200, st, body)
	require.Equal(t, oldBody, body)

	// Requests to A all along, on kept-alive connections (the ingress
	// keeps streams to the tunnel for reuse).
	type result struct {
		sent      time.Time
		status    int
		body, err string
	}
	var (
		mu      sync.Mutex
		results []result
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				st, body, err := ingressGet(ing.URL, host)
				r := result{sent: sent, status: st, body: body}
				if err != nil {
					r.err = err.Error()
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	time.Sleep(100 * time.Millisecond)

	st, out := b.call("POST", "/api/domains/release", prev.key, map[string]string{"domain_id": id})
	require.Equal(t, 200, st, "%v", out)
	released := time.Now()
	next := b.newAgent(t, billing.FromCents(1000))
	st, r := b.call("POST", "/api/domains/reserve", next.key, map[string]string{"subdomain": "shared"})
	require.Equal(t, 200, st, "another wallet reserves the name at once: %v", r)
	reserved := time.Now()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	var before, after, afterReserve int
	for _, r := range results {
		if r.sent.Before(released) {
			before++
			continue
		}
		after++
		require.NotEqual(t, oldBody, r.body, "a request sent %v after the release reached the previous owner", r.sent.Sub(released))
		require.Empty(t, r.err)
		if r.sent.After(reserved) {
			afterReserve++
			require.Equal(t, 502, r.status, r.body)
			require.Contains(t, r.body, "no tunnel is connected for shared.pct.site")
		} else {
			require.Contains(t, []int{404, 502}, r.status, r.body)
		}
	}
	t.Logf("requests: %d before the release, %d after (%d after the new reservation)", before, after, afterReserve)
	require.Positive(t, before)
	require.Positive(t, afterReserve)
	gone := awaitDisconnected(t, a.p, id)
	require.Less(t, gone.Sub(released), revokeWithin, "A closed the released domain's tunnel %v after the release", gone.Sub(released))

	// The new owner's tunnel serves the name.
	nid := r["id"].(string)
	st, _ = b.call("POST", "/api/domains/"+nid+"/assign", next.key, map[string]any{"port": serveOrigin(t, newBody)})
	require.Equal(t, 200, st)
	a.connectOn(t, next.key, nid)
	st, body, err = ingressGet(ing.URL, host)
	require.NoError(t, err)
	require.Equal(t, 200, st, body)
	require.Equal(t, newBody, body)
}

// A key revoked through process B closes its persona stream and its
// tunnel held by process A within a second.
func TestTwoProcessesRevokeClosesStreamAndTunnel(t *testing.T) {
	a, b := twoTunnelProcesses(t, true)
	ag := a.newAgent(t, billing.FromCents(1000))
	pid, sid := a.mkPersona(t, ag)
	c := a.wsConn(t, ag.key, pid, sid)
	require.NoError(t, sendWS(c, "hello"))
	_, _, reply := readUntilReply(t, c)
	require.Equal(t, "complete", reply["status"])
	id := a.reserveOn(t, ag, "revoked", serveOrigin(t, "service"))
	cl := a.connectOn(t, ag.key, id)

	at := b.revokeKey(t, ag.master, b.keyID(t, ag))
	gone := awaitDisconnected(t, a.p, id)
	require.Less(t, gone.Sub(at), revokeWithin, "A closed the tunnel %v after the revocation on B", gone.Sub(at))
	checkStreamRevoked(t, a, c, ag, pid, sid, at, 2, 1)
	require.Eventually(t, func() bool { return !cl.Status().Connected }, 5*time.Second, 5*time.Millisecond)
}

// Reassigned, then lapsed, through process B while the tunnel is
// connected to process A, without a request to A in between (the event
// alone closes it): A closes the stale tunnel within a second each time.
func TestTwoProcessesReassignAndLapseCloseTunnel(t *testing.T) {
	a, b := twoTunnelProcesses(t, false)
	ag := a.newAgent(t, billing.FromCents(50)) // five hours of a 10-cent domain
	id := a.reserveOn(t, ag, "lapsing", serveOrigin(t, "service"))
	cl := a.connectOn(t, ag.key, id)

	// A reassignment: the tunnel (for the old port) closes on A; the
	// client reconnects with a token for the new port.
	hub := a.p.Domains.Broker().(interface {
		Since(string) (time.Time, bool)
	})
	first, _ := hub.Since(id)
	st, out := b.call("POST", "/api/domains/"+id+"/assign", ag.key, map[string]any{"port": serveOrigin(t, "other")})
	require.Equal(t, 200, st, "%v", out)
	at := time.Now()
	require.Eventually(t, func() bool { since, ok := hub.Since(id); return !ok || since != first }, 10*time.Second, time.Millisecond)
	require.Less(t, time.Since(at), revokeWithin, "the old port's tunnel closed on A")
	require.Eventually(t, func() bool { return a.p.Domains.Connected(context.Background(), id) && cl.Status().Connected }, 10*time.Second, 5*time.Millisecond, "reconnected for the new port")

	// A lapse, charged by B: the subscription runs out of funds.
	b.clock.Advance(6 * time.Hour)
	_, err := b.p.Billing.Tick(context.Background())
	require.NoError(t, err)
	at = time.Now()
	st, _ = b.call("GET", "/api/domains/"+id, ag.key, nil)
	require.Equal(t, 404, st, "the domain lapsed")
	gone := awaitDisconnected(t, a.p, id)
	require.Less(t, gone.Sub(at), revokeWithin, "A closed the lapsed domain's tunnel %v after the lapse", gone.Sub(at))
}
