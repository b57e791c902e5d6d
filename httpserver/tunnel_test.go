package httpserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

// tunnelEnv is a platform with its ingress, an origin server on loopback
// and a reserved domain pointed at it.
type tunnelEnv struct {
	*env
	ingress string // the ingress's URL
	origin  *httptest.Server
	agent   agent
	id      string // the domain's ID
	host    string // its full domain
	port    int
}

// newTunnelEnv reserves NAME for a new agent, assigns the origin's port
// (the test platform allows any port) and returns without a tunnel.
func newTunnelEnv(t *testing.T, name string, origin http.Handler, cfg perceptron.Config) *tunnelEnv {
	t.Helper()
	cfg.Domains.PortMin, cfg.Domains.PortMax = 1, 65535
	e := newEnv(t, cfg)
	ing := httptest.NewServer(httpserver.NewIngress(e.p, httpserver.IngressOptions{ResponseHeaderTimeout: 5 * time.Second}))
	t.Cleanup(ing.Close)
	o := httptest.NewServer(origin)
	t.Cleanup(o.Close)
	te := &tunnelEnv{env: e, ingress: ing.URL, origin: o, agent: e.newAgent(t, billing.FromCents(1000))}
	st, r := e.call("POST", "/api/domains/reserve", te.agent.key, map[string]string{"subdomain": name})
	require.Equal(t, 200, st, "%v", r)
	te.id, te.host = r["id"].(string), r["full_domain"].(string)
	_, p, _ := net.SplitHostPort(o.Listener.Addr().String())
	te.port, _ = strconv.Atoi(p)
	st, r = e.call("POST", "/api/domains/"+te.id+"/assign", te.agent.key, map[string]any{"port": te.port})
	require.Equal(t, 200, st, "%v", r)
	return te
}

// connect starts a tunnel client with the agent's key and waits until it
// is connected.
func (te *tunnelEnv) connect(t *testing.T) (*client.Client, context.CancelFunc) {
	t.Helper()
	c, err := client.New(client.Options{
		URL: te.url, Tokens: client.APITokens(te.url, te.agent.key, te.id, nil),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	select {
	case <-c.Connected():
	case <-time.After(10 * time.Second):
		t.Fatalf("the tunnel did not connect: %+v", c.Status())
	}
	return c, stop
}

// do sends a request to the ingress for the domain.
func (te *tunnelEnv) do(t *testing.T, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, te.ingress+path, body)
	require.NoError(t, err)
	req.Host = te.host
	return http.DefaultClient.Do(req)
}

func (te *tunnelEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := te.do(t, "GET", path, nil)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func TestTunnelEndToEnd(t *testing.T) {
	release := make(chan struct{})
	origin := http.NewServeMux()
	origin.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s via %s xff=%s xfh=%s xfp=%s", r.URL.Query().Get("n"), r.Host,
			r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"))
	})
	origin.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		// Echo as the body arrives: the response starts before the
		// request ends.
		_ = http.NewResponseController(w).EnableFullDuplex()
		_, _ = io.Copy(w, r.Body)
	})
	origin.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(100<<20))
		_, _ = io.Copy(w, io.LimitReader(newPattern(), 100<<20))
	})
	origin.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "slow done")
	})
	te := newTunnelEnv(t, "myapp", origin, perceptron.Config{})

	// Before a tunnel: 502, and 404 for a name nobody holds.
	st, body := te.get(t, "/hello")
	require.Equal(t, 502, st, body)
	require.Contains(t, body, "no tunnel is connected for myapp.pct.site")
	req, _ := http.NewRequest("GET", te.ingress+"/", nil)
	req.Host = "nobody.pct.site"
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 404, res.StatusCode)
	req.Host = "example.com"
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 404, res.StatusCode)

	c, _ := te.connect(t)
	_, g := te.call("GET", "/api/domains/"+te.id, te.agent.key, nil)
	require.Equal(t, true, g["tunnel_active"])
	_, sum := te.call("GET", "/api/metrics/summary", te.agent.master, nil)
	require.Equal(t, map[string]any{"domains": 1.0, "feeds": 0.0, "tunnels": 1.0}, sum["active_services"])
	domainCost := 0.0
	for _, c := range sum["cost_by_service"].([]any) {
		if c.(map[string]any)["service"] == "domain" {
			domainCost = c.(map[string]any)["cost_cents"].(float64)
		}
	}
	require.Equal(t, 10.0, domainCost)

	st, body = te.get(t, "/hello?n=1")
	require.Equal(t, 200, st, body)
	require.Equal(t, "hello 1 via myapp.pct.site xff=127.0.0.1 xfh=myapp.pct.site xfp=http", body)
	// Any letter case and port in Host.
	req, _ = http.NewRequest("GET", te.ingress+"/hello?n=2", nil)
	req.Host = "MyApp.PCT.site:8443"
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, string(b))

	t.Run("slow response does not delay others", func(t *testing.T) {
		done := make(chan string, 1)
		go func() {
			_, b := te.get(t, "/slow")
			done <- b
		}()
		for i := range 20 {
			st, body := te.get(t, "/hello?n="+strconv.Itoa(i))
			require.Equal(t, 200, st, body)
		}
		select {
		case <-done:
			t.Fatal("the slow response finished before it was released")
		default:
		}
		close(release)
		require.Equal(t, "slow done", <-done)
	})

	t.Run("500 concurrent requests", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 500)
		for i := range 500 {
			wg.Go(func() {
				res, err := te.do(t, "GET", "/hello?n="+strconv.Itoa(i), nil)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if want := "hello " + strconv.Itoa(i) + " "; res.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
					errs <- fmt.Errorf("request %d: %d %q", i, res.StatusCode, b)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("100 MB both ways, byte-exact", func(t *testing.T) {
		const size = 100 << 20
		src := make([]byte, size)
		_, _ = rand.Read(src)
		want := sha256.Sum256(src)
		res, err := te.do(t, "POST", "/echo", bytes.NewReader(src))
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, 200, res.StatusCode)
		h := sha256.New()
		n, err := io.Copy(h, res.Body)
		require.NoError(t, err)
		require.Equal(t, int64(size), n)
		require.Equal(t, want[:], h.Sum(nil))
		st := c.Status()
		require.GreaterOrEqual(t, st.BytesIn, int64(size))
		require.GreaterOrEqual(t, st.BytesOut, int64(size))
	})

	t.Run("GET 100 MB, byte-exact", func(t *testing.T) {
		res, err := te.do(t, "GET", "/big", nil)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, 200, res.StatusCode)
		require.Equal(t, int64(100<<20), res.ContentLength)
		got, want := sha256.New(), sha256.New()
		n, err := io.Copy(got, res.Body)
		require.NoError(t, err)
		require.Equal(t, int64(100<<20), n)
		_, _ = io.Copy(want, io.LimitReader(newPattern(), 100<<20))
		require.Equal(t, want.Sum(nil), got.Sum(nil))
	})

	// The client's status.
	st2 := c.Status()
	require.True(t, st2.Connected)
	require.Equal(t, "myapp", st2.Subdomain)
	require.Equal(t, uint16(te.port), st2.LocalPort)
	require.Positive(t, st2.Requests)

	// Release closes the tunnel, and the name answers 404.
	st, _ = te.call("POST", "/api/domains/release", te.agent.key, map[string]string{"domain_id": te.id})
	require.Equal(t, 200, st)
	require.Eventually(t, func() bool { return !c.Status().Connected }, 5*time.Second, 10*time.Millisecond)
	st, body = te.get(t, "/hello")
	require.Equal(t, 404, st, body)
}

// Server-sent events arrive one by one: the origin sends the next event
// only after the test has read the previous one through the tunnel.
func TestTunnelStreamsEvents(t *testing.T) {
	ack := make(chan struct{})
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-ack:
			case <-time.After(5 * time.Second):
				return
			}
		}
	})
	te := newTunnelEnv(t, "sse", origin, perceptron.Config{})
	te.connect(t)
	res, err := te.do(t, "GET", "/events", nil)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	br := bufio.NewReader(res.Body)
	for i := range 5 {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("data: event %d\n", i), line)
		_, _ = br.ReadString('\n')
		ack <- struct{}{}
	}
}

// A WebSocket upgrade passes through the tunnel: an echo server behind
// it answers every message.
func TestTunnelWebSocket(t *testing.T) {
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), b...)); err != nil {
				return
			}
		}
	})
	te := newTunnelEnv(t, "ws", origin, perceptron.Config{})
	te.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(te.ingress, "http://", "ws://", 1)+"/socket", &websocket.DialOptions{Host: te.host})
	require.NoError(t, err)
	defer ws.CloseNow()
	for i := range 10 {
		msg := "message " + strconv.Itoa(i)
		require.NoError(t, ws.Write(ctx, websocket.MessageText, []byte(msg)))
		_, b, err := ws.Read(ctx)
		require.NoError(t, err)
		require.Equal(t, "echo: "+msg, string(b))
	}
	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""))
}

// Tokens that are expired, forged, for another domain's port, or whose
// domain was reassigned or released are refused with 401 before any
// upgrade.
func TestTunnelTokensRefused(t *testing.T) {
	te := newTunnelEnv(t, "tok", http.NotFoundHandler(), perceptron.Config{})
	token := func() string {
		_, r := te.call("POST", "/api/domains/"+te.id+"/tunnel-token", te.agent.key, nil)
		return r["tunnel_token"].(string)
	}
	dial := func(tok string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, res, err := websocket.Dial(ctx, strings.Replace(te.url, "http://", "ws://", 1)+"/api/domains/tunnel",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err == nil {
			ws.CloseNow()
			return 101
		}
		require.NotNil(t, res, "%v", err)
		return res.StatusCode
	}
	good := token()
	require.Equal(t, 101, dial(good))

	// Forged: the payload changed, or signed with another key.
	parts := strings.Split(good, ".")
	require.Len(t, parts, 3)
	require.Equal(t, 401, dial(parts[0]+"."+parts[1]+"x."+parts[2]))
	require.Equal(t, 401, dial(parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2]))))
	require.Equal(t, 401, dial("not-a-jwt"))
	require.Equal(t, 401, dial(""))
	// alg=none.
	require.Equal(t, 401, dial("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."+parts[1]+"."))

	// Expired: the platform's clock moves past the 5 minutes.
	old := token()
	te.clock.Advance(5*time.Minute + 10*time.Second)
	require.Equal(t, 401, dial(old))
	require.Equal(t, 101, dial(token()))

	// Reassigned: a token for the old port is refused.
	stale := token()
	st, _ := te.call("POST", "/api/domains/"+te.id+"/assign", te.agent.key, map[string]any{"port": te.port + 1})
	require.Equal(t, 200, st)
	require.Equal(t, 401, dial(stale))

	// Another wallet's domain: its own token works, not for ours.
	other := te.newAgent(t, billing.FromCents(100))
	st, r := te.call("POST", "/api/domains/reserve", other.key, map[string]string{"subdomain": "theirs"})
	require.Equal(t, 200, st)
	te.expectError(403, "you do not own this domain", "POST", "/api/domains/"+te.id+"/tunnel-token", other.key, nil)
	_ = r

	// Released: refused.
	fresh := token()
	st, _ = te.call("POST", "/api/domains/release", te.agent.key, map[string]string{"domain_id": te.id})
	require.Equal(t, 200, st)
	require.Equal(t, 401, dial(fresh))
}

// pattern is an endless, deterministic byte stream that is not all one
// byte (so a shifted or repeated block changes the hash).
type pattern struct{ i uint64 }

func newPattern() *pattern { return &pattern{} }

func (p *pattern) Read(b []byte) (int, error) {
	for k := range b {
		b[k] = byte(p.i*2654435761>>13) ^ byte(p.i>>8)
		p.i++
	}
	return len(b), nil
}

// A lapse for lack of funds closes the tunnel and frees the name; a
// local port that refuses answers 502 with a clear message.
func TestTunnelLapseAndRefusedPort(t *testing.T) {
	te := newTunnelEnv(t, "lapse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }),
		perceptron.Config{TickInterval: 20 * time.Millisecond})
	c, _ := te.connect(t)
	st, body := te.get(t, "/")
	require.Equal(t, 200, st, body)

	// The origin goes away: the client cannot reach its port.
	te.origin.Close()
	st, body = te.get(t, "/")
	require.Equal(t, 502, st, body)
	require.Contains(t, body, "refused the connection")

	// A token fetched before the lapse.
	_, tk := te.call("POST", "/api/domains/"+te.id+"/tunnel-token", te.agent.key, nil)
	oldToken := tk["tunnel_token"].(string)

	// Spend the balance, then let the hour run out.
	bal := te.balanceCents(te.agent.key)
	_, err := te.p.Billing.Ledger().Debit(context.Background(), billing.Posting{
		Account: te.agent.account, Type: billing.ChatInference, Amount: billing.FromCents(bal), Description: "spend", At: te.clock.Now(),
	})
	require.NoError(t, err)
	te.clock.Advance(time.Hour + time.Second)
	require.Eventually(t, func() bool { return !c.Status().Connected }, 10*time.Second, 10*time.Millisecond, "the lapse closes the tunnel")
	te.expectError(404, "domain not found", "GET", "/api/domains/"+te.id, te.agent.key, nil)
	st, body = te.get(t, "/")
	require.Equal(t, 404, st, body)
	_, err = te.p.Domains.Authorize(context.Background(), oldToken)
	require.ErrorContains(t, err, "invalid tunnel token", "a lapsed domain's token is refused")
	other := te.newAgent(t, billing.FromCents(100))
	st, _ = te.call("POST", "/api/domains/reserve", other.key, map[string]string{"subdomain": "lapse"})
	require.Equal(t, 200, st, "the name is free")
}

// The platform restarts (same database, same token key, same address):
// the client is back within seconds, with no help.
func TestTunnelClientReconnectsAfterRestart(t *testing.T) {
	store := memoryStore(t)
	key := bytes.Repeat([]byte("k"), 32)
	cfg := perceptron.Config{Store: store, Domains: perceptron.DomainsConfig{TokenKey: key, PortMin: 1, PortMax: 65535}}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	t.Cleanup(origin.Close)
	_, portText, _ := net.SplitHostPort(origin.Listener.Addr().String())
	port, _ := strconv.Atoi(portText)

	start := func(ln net.Listener) (*perceptron.Platform, *http.Server, *httptest.Server) {
		p, err := perceptron.New(context.Background(), cfg)
		require.NoError(t, err)
		srv := &http.Server{Handler: httpserver.New(p, httpserver.Options{})}
		go srv.Serve(ln)
		return p, srv, httptest.NewServer(httpserver.NewIngress(p, httpserver.IngressOptions{}))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	p, srv, ing := start(ln)
	e := &env{t: t, url: "http://" + addr, clock: &clock{t: time.Now()}, p: p}
	a := e.newAgent(t, billing.FromCents(100))
	_, r := e.call("POST", "/api/domains/reserve", a.key, map[string]string{"subdomain": "phoenix"})
	id := r["id"].(string)
	st, _ := e.call("POST", "/api/domains/"+id+"/assign", a.key, map[string]any{"port": port})
	require.Equal(t, 200, st)
	c, err := client.New(client.Options{URL: e.url, Tokens: client.APITokens(e.url, a.key, id, nil),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-c.Connected()
	getVia := func(ing *httptest.Server) int {
		req, _ := http.NewRequest("GET", ing.URL+"/", nil)
		req.Host = "phoenix.pct.site"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, 200, getVia(ing))

	// Stop everything: the server, its tunnels, the platform.
	srv.Close()
	ing.Close()
	require.NoError(t, p.Close())
	require.Eventually(t, func() bool { return !c.Status().Connected }, 5*time.Second, 10*time.Millisecond)

	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	p2, srv2, ing2 := start(ln)
	t.Cleanup(func() { srv2.Close(); ing2.Close(); p2.Close() })
	began := time.Now()
	select {
	case <-c.Connected():
	case <-time.After(10 * time.Second):
		t.Fatalf("not back: %+v", c.Status())
	}
	t.Logf("back after %v, %d reconnects", time.Since(began), c.Status().Reconnects)
	require.Equal(t, 200, getVia(ing2))
	require.Positive(t, c.Status().Reconnects)
}

// memoryStore is a memory store the test closes, so platforms can share it.
func memoryStore(t *testing.T) *memory.Store {
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	return s
}

// sibling reserves another domain on te's platform, for a new agent, with
// its own origin; it shares te's ingress.
func (te *tunnelEnv) sibling(t *testing.T, name string, origin http.Handler) *tunnelEnv {
	t.Helper()
	o := httptest.NewServer(origin)
	t.Cleanup(o.Close)
	s := &tunnelEnv{env: te.env, ingress: te.ingress, origin: o, agent: te.newAgent(t, billing.FromCents(1000))}
	st, r := te.call("POST", "/api/domains/reserve", s.agent.key, map[string]string{"subdomain": name})
	require.Equal(t, 200, st, "%v", r)
	s.id, s.host = r["id"].(string), r["full_domain"].(string)
	_, p, _ := net.SplitHostPort(o.Listener.Addr().String())
	s.port, _ = strconv.Atoi(p)
	st, r = te.call("POST", "/api/domains/"+s.id+"/assign", s.agent.key, map[string]any{"port": s.port})
	require.Equal(t, 200, st, "%v", r)
	return s
}

// The ingress is what the internet reaches: 1,000 hostile connections
// from one address to one subdomain (headers that never end, bodies that
// never come) hold at most that address's share of the listener, grow the
// heap by a bounded amount, and stall neither another subdomain nor the
// same one for other clients.
func TestIngressHostileConnections(t *testing.T) {
	slowBody := make(chan struct{})
	t.Cleanup(func() { close(slowBody) })
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, "ok "+r.Host)
	})
	victim := newTunnelEnv(t, "victim", origin, perceptron.Config{})
	bystander := victim.sibling(t, "bystander", origin)
	victim.connect(t)
	bystander.connect(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var open atomic.Int64
	srv := httpserver.NewServer(httpserver.NewIngress(victim.p, httpserver.IngressOptions{}), httpserver.ServerOptions{})
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	go srv.Serve(httpserver.LimitListener(ln, httpserver.ConnLimits{}))
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	before := heapInUse()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 1000 {
		c := dialFrom(t, "127.0.0.2", addr)
		if i%2 == 0 {
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: victim.pct.site\r\n") // headers never end
		} else {
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: victim.pct.site\r\nContent-Length: 100000000\r\n\r\nx") // the body never comes
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond)
	require.LessOrEqual(t, open.Load(), int64(httpserver.DefaultMaxConnsPerAddr))
	grown := int64(heapInUse()) - int64(before)
	t.Logf("1000 hostile connections: %d held, heap grown by %d KiB", open.Load(), grown>>10)
	require.Less(t, grown, int64(64<<20), "the heap grows by a bounded amount")

	get := func(from, host string) (int, string) {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = host
		res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for range 20 {
		st, body := get("127.0.0.3", "bystander.pct.site")
		require.Equal(t, 200, st, body)
		require.Equal(t, "ok bystander.pct.site", body)
		st, body = get("127.0.0.4", "victim.pct.site")
		require.Equal(t, 200, st, body)
	}
}

// dialTunnel opens a raw tunnel WebSocket with a fresh token.
func (te *tunnelEnv) dialTunnel(t *testing.T) *websocket.Conn {
	t.Helper()
	_, r := te.call("POST", "/api/domains/"+te.id+"/tunnel-token", te.agent.key, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(te.url, "http://", "ws://", 1)+"/api/domains/tunnel",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + r["tunnel_token"].(string)}}})
	require.NoError(t, err)
	return ws
}

// A new connection for a domain replaces the old one, which is closed;
// the domain stays connected.
func TestTunnelNewConnectionReplacesOld(t *testing.T) {
	te := newTunnelEnv(t, "twice", http.NotFoundHandler(), perceptron.Config{})
	first := te.dialTunnel(t)
	defer first.CloseNow()
	require.Eventually(t, func() bool { return te.p.Domains.Connected(context.Background(), te.id) }, 5*time.Second, 5*time.Millisecond)
	second := te.dialTunnel(t)
	defer second.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		// The first one's reads end: its yamux frames, then its close.
		if _, _, err := first.Read(ctx); err != nil {
			require.NotErrorIs(t, err, context.DeadlineExceeded, "the old connection was not closed")
			break
		}
	}
	require.True(t, te.p.Domains.Connected(context.Background(), te.id))
	_, g := te.call("GET", "/api/domains/"+te.id, te.agent.key, nil)
	require.Equal(t, true, g["tunnel_active"])
	second.CloseNow()
	require.Eventually(t, func() bool { return !te.p.Domains.Connected(context.Background(), te.id) }, 5*time.Second, 5*time.Millisecond)
}

// A local service that does not answer in time gets 504; the tunnel
// serves the next request.
func TestTunnelTimeout504(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stuck" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "fine")
	})
	te := newTunnelEnv(t, "stuck", origin, perceptron.Config{})
	ing := httptest.NewServer(httpserver.NewIngress(te.p, httpserver.IngressOptions{ResponseHeaderTimeout: 200 * time.Millisecond}))
	t.Cleanup(ing.Close)
	te.ingress = ing.URL
	te.connect(t)
	st, body := te.get(t, "/stuck")
	require.Equal(t, 504, st, body)
	require.Contains(t, body, "did not answer in time")
	st, body = te.get(t, "/ok")
	require.Equal(t, 200, st, body)
	require.Equal(t, "fine", body)
}

// The frontend relays the platform's refusals with their status and
// message, and passes other /api/ requests with its key.
func TestFrontendRelaysRefusals(t *testing.T) {
	te := newTunnelEnv(t, "front", http.NotFoundHandler(), perceptron.Config{})
	m := client.NewManager(te.url, te.agent.key, client.ManagerOptions{})
	t.Cleanup(m.Close)
	front := httptest.NewUnstartedServer(nil)
	f, err := client.NewFrontend(m, client.FrontendOptions{Addr: front.Listener.Addr().String()})
	require.NoError(t, err)
	front.Config.Handler = f
	front.Start()
	t.Cleanup(front.Close)
	send := func(method, path string) (*http.Response, error) {
		req, err := http.NewRequest(method, front.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set(client.FrontendTokenHeader, f.Secret()) // the frontend's secret
		return http.DefaultClient.Do(req)
	}
	post := func(path string) (int, map[string]any) {
		res, err := send("POST", path)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&out))
		return res.StatusCode, out
	}
	st, out := post("/api/domains/no-such-id/connect")
	require.Equal(t, 404, st)
	require.Equal(t, "domain not found", out["error"].(map[string]any)["message"])
	st, _ = te.call("POST", "/api/domains/"+te.id+"/unassign", te.agent.key, nil)
	require.Equal(t, 200, st)
	st, out = post("/api/domains/" + te.id + "/connect")
	require.Equal(t, 400, st)
	require.Equal(t, "assign a port before connecting the tunnel", out["error"].(map[string]any)["message"])
	st, _ = te.call("POST", "/api/domains/"+te.id+"/assign", te.agent.key, map[string]any{"port": te.port})
	require.Equal(t, 200, st)
	st, out = post("/api/domains/" + te.id + "/connect")
	require.Equal(t, 200, st, "%v", out)
	require.Equal(t, map[string]any{"status": "connected"}, out)
	st, out = post("/api/domains/" + te.id + "/connect")
	require.Equal(t, 200, st, "connecting twice is fine: %v", out)
	res, err := send("GET", "/api/domains/tunnels/status")
	require.NoError(t, err)
	var status struct {
		Tunnels []client.TunnelStatus `json:"tunnels"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&status))
	res.Body.Close()
	require.Len(t, status.Tunnels, 1)
	require.Equal(t, "front.pct.site", status.Tunnels[0].FullDomain)
	require.True(t, status.Tunnels[0].Connected)
	res, err = send("GET", "/api/credits/balance")
	require.NoError(t, err)
	var bal map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&bal))
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode, "%v", bal)
	require.Equal(t, "USD_CENTS", bal["currency"])
	st, out = post("/api/domains/" + te.id + "/disconnect")
	require.Equal(t, 200, st)
	require.Equal(t, map[string]any{"status": "disconnected"}, out)
	require.Eventually(t, func() bool { return !te.p.Domains.Connected(context.Background(), te.id) }, 5*time.Second, 5*time.Millisecond)
}

// The ingress limits each client address's request rate, with
// Retry-After; another address is served.
func TestIngressRateLimit(t *testing.T) {
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	te := newTunnelEnv(t, "busy", origin, perceptron.Config{})
	ing := httptest.NewServer(httpserver.NewIngress(te.p, httpserver.IngressOptions{
		RateLimit: httpserver.NewRateLimiter(httpserver.Rate{PerSecond: 1, Burst: 5})}))
	t.Cleanup(ing.Close)
	te.ingress = ing.URL
	te.connect(t)
	limited := 0
	for range 20 {
		res, err := te.do(t, "GET", "/", nil)
		require.NoError(t, err)
		res.Body.Close()
		if res.StatusCode == http.StatusTooManyRequests {
			limited++
			require.NotEmpty(t, res.Header.Get("Retry-After"))
		} else {
			require.Equal(t, 200, res.StatusCode)
		}
	}
	require.GreaterOrEqual(t, limited, 10)
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).DialContext}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", ing.URL+"/", nil)
	req.Host = te.host
	res, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
}
