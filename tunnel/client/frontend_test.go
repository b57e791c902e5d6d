package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

// newFront starts a frontend over a manager of the fake platform, on
// loopback, and returns it with its URL (http://127.0.0.1:PORT).
func newFront(t *testing.T, p *fakePlatform) (*client.Frontend, string) {
	t.Helper()
	m := client.NewManager(p.URL, "user-key", client.ManagerOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	t.Cleanup(m.Close)
	srv := httptest.NewUnstartedServer(nil)
	f, err := client.NewFrontend(m, client.FrontendOptions{Addr: srv.Listener.Addr().String()})
	require.NoError(t, err)
	srv.Config.Handler = f
	srv.Start()
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// do sends a request and returns its status and body.
func do(t *testing.T, hc *http.Client, req *http.Request) (int, string) {
	t.Helper()
	res, err := hc.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// Requests without the frontend's secret, for another Host (DNS
// rebinding), or cross-site (by Origin or Sec-Fetch-Site) are refused
// before anything reaches the platform; the same request with the secret,
// the frontend's own Host and a same-origin Origin is passed with the key.
func TestFrontendRefusesForeignRequests(t *testing.T) {
	p := newFakePlatform(t)
	f, base := newFront(t, p)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	other := "127.0.0.1:1" + port[1:] // another port on loopback
	if other == "127.0.0.1:"+port {
		other = "127.0.0.1:2" + port[1:]
	}
	secret := f.Secret()
	require.GreaterOrEqual(t, len(secret), 43, "32 random bytes")

	type tc struct {
		name   string
		set    func(r *http.Request)
		status int
	}
	withSecret := func(more func(r *http.Request)) func(r *http.Request) {
		return func(r *http.Request) { r.Header.Set(client.FrontendTokenHeader, secret); more(r) }
	}
	cases := []tc{
		{"no secret", func(r *http.Request) {}, 403},
		{"wrong secret", func(r *http.Request) { r.Header.Set(client.FrontendTokenHeader, secret[:len(secret)-1]+"x") }, 403},
		{"secret twice", func(r *http.Request) {
			r.Header.Add(client.FrontendTokenHeader, "x")
			r.Header.Add(client.FrontendTokenHeader, secret)
		}, 403},
		{"wrong cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "perceptron_frontend_" + port, Value: "guess"}) }, 403},
		{"cookie of another port", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "perceptron_frontend_1", Value: secret}) }, 403},
		{"the key without the secret", func(r *http.Request) { r.Header.Set("Authorization", "Bearer user-key") }, 403},
		{"rebound name", withSecret(func(r *http.Request) { r.Host = "evil.example:" + port }), 421},
		{"rebound name, no port", withSecret(func(r *http.Request) { r.Host = "evil.example" }), 421},
		{"localhost of another port", withSecret(func(r *http.Request) { r.Host = other }), 421},
		{"cross-site origin", withSecret(func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }), 403},
		{"another loopback origin", withSecret(func(r *http.Request) { r.Header.Set("Origin", "http://"+other) }), 403},
		{"https origin", withSecret(func(r *http.Request) { r.Header.Set("Origin", "https://127.0.0.1:"+port) }), 403},
		{"null origin", withSecret(func(r *http.Request) { r.Header.Set("Origin", "null") }), 403},
		{"cross-site fetch", withSecret(func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }), 403},
		{"same-site fetch", withSecret(func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") }), 403},
	}
	for _, c := range cases {
		for _, route := range []struct{ method, path, ctype, body string }{
			{"POST", "/api/keys/new", "text/plain", `{"name":"stolen"}`},
			{"GET", "/api/credits/balance", "", ""},
			{"POST", "/api/domains/d1/connect", "text/plain", ""},
			{"GET", "/api/domains/tunnels/status", "", ""},
		} {
			req, err := http.NewRequest(route.method, base+route.path, strings.NewReader(route.body))
			require.NoError(t, err)
			if route.ctype != "" {
				req.Header.Set("Content-Type", route.ctype)
			}
			c.set(req)
			st, body := do(t, http.DefaultClient, req)
			require.Equal(t, c.status, st, "%s %s %s: %s", c.name, route.method, route.path, body)
			var e struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			require.NotEmpty(t, e.Error.Message, body)
		}
	}
	// A wrong token in the URL sets no cookie.
	req, _ := http.NewRequest("GET", base+"/?token=guess", nil)
	res, err := noRedirect.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 403, res.StatusCode)
	require.Empty(t, res.Cookies())
	require.Empty(t, p.received(), "the platform received a refused request")
	require.Zero(t, p.tokens.Load(), "the platform was asked for a tunnel token")

	// With the secret, the frontend's Host (any loopback form of its
	// port) and a same-origin Origin, the request passes, with the key
	// and without the secret or any cookie.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port} {
		req, _ := http.NewRequest("POST", base+"/api/keys/new", strings.NewReader(`{"name":"mine"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(client.FrontendTokenHeader, secret)
		req.Header.Set("Origin", "http://"+host)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.AddCookie(&http.Cookie{Name: "other", Value: "x"})
		st, body := do(t, http.DefaultClient, req)
		require.Equal(t, 200, st, "%s: %s", host, body)
	}
	got := p.received()
	require.Len(t, got, 4)
	for _, r := range got {
		require.Equal(t, "Bearer user-key", r.Header.Get("Authorization"))
		require.Empty(t, r.Header.Get(client.FrontendTokenHeader))
		require.Empty(t, r.Header.Get("Cookie"))
	}
	p.mu.Lock()
	require.Equal(t, `{"name":"mine"}`, p.bodies[len(p.bodies)-1])
	p.mu.Unlock()

	// Under /api/, ?token= is the platform's (the persona stream's key):
	// passed on with the secret, refused without it.
	n := len(p.received())
	stream := base + "/api/personas/p1/sessions/s1/stream?token=pct-other-key"
	st, body := do(t, http.DefaultClient, mustReq(t, "GET", stream))
	require.Equal(t, 403, st, body)
	req = mustReq(t, "GET", stream)
	req.Header.Set(client.FrontendTokenHeader, secret)
	st, body = do(t, http.DefaultClient, req)
	require.Equal(t, 200, st, body)
	got = p.received()
	require.Len(t, got, n+1)
	require.Equal(t, "token=pct-other-key", got[n].URL.RawQuery)

	// The frontend's own routes work with the secret.
	req, _ = http.NewRequest("POST", base+"/api/domains/d1/connect", nil)
	req.Header.Set(client.FrontendTokenHeader, secret)
	st, body = do(t, http.DefaultClient, req)
	require.Equal(t, 200, st, body)
	require.JSONEq(t, `{"status":"connected"}`, body)
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// A browser opens the URL the frontend prints: the token is exchanged for
// an HttpOnly, SameSite=Strict cookie and the browser is sent to the same
// page without it; then the cookie alone is enough.
func TestFrontendSignIn(t *testing.T) {
	p := newFakePlatform(t)
	f, base := newFront(t, p)
	require.True(t, strings.HasPrefix(f.URL(), base+"/?token="), f.URL())

	req, _ := http.NewRequest("GET", f.URL(), nil)
	req.Header.Set("Sec-Fetch-Site", "none") // typed or pasted
	res, err := noRedirect.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "/", res.Header.Get("Location"))
	setCookie := res.Header.Get("Set-Cookie")
	require.Contains(t, setCookie, "HttpOnly")
	require.Contains(t, setCookie, "SameSite=Strict")
	require.Contains(t, setCookie, "Path=/")
	require.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"))

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	st, body := do(t, hc, mustReq(t, "GET", f.URL()))
	require.Equal(t, 200, st, body)
	require.Contains(t, body, "signed in")
	st, body = do(t, hc, mustReq(t, "GET", base+"/api/credits/balance"))
	require.Equal(t, 200, st, body)
	require.Len(t, p.received(), 1)

	// The cookie of a frontend of another run is refused.
	p2 := newFakePlatform(t)
	_, base2 := newFront(t, p2)
	req = mustReq(t, "GET", base2+"/api/credits/balance")
	for _, c := range res.Cookies() {
		req.AddCookie(c)
	}
	st, _ = do(t, http.DefaultClient, req)
	require.Equal(t, 403, st)
	require.Empty(t, p2.received())
}

func mustReq(t *testing.T, method, u string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	require.NoError(t, err)
	return req
}

// A frontend on all interfaces needs the Host values it accepts named;
// on another address it accepts only that address.
func TestFrontendHosts(t *testing.T) {
	m := client.NewManager("http://127.0.0.1:1", "k", client.ManagerOptions{})
	_, err := client.NewFrontend(m, client.FrontendOptions{Addr: "0.0.0.0:9300"})
	require.Error(t, err)
	_, err = client.NewFrontend(m, client.FrontendOptions{Addr: "[::]:9300"})
	require.Error(t, err)
	check := func(f *client.Frontend, host string) int {
		req := httptest.NewRequest("GET", "/api/domains/tunnels/status", nil)
		req.Host = host
		req.Header.Set(client.FrontendTokenHeader, f.Secret())
		w := httptest.NewRecorder()
		f.ServeHTTP(w, req)
		return w.Code
	}
	f, err := client.NewFrontend(m, client.FrontendOptions{Addr: "0.0.0.0:9300", Hosts: []string{"box.lan:9300"}})
	require.NoError(t, err)
	require.Equal(t, "http://box.lan:9300/?token="+f.Secret(), f.URL())
	require.Equal(t, 200, check(f, "box.lan:9300"))
	require.Equal(t, 200, check(f, "BOX.lan:9300"))
	require.Equal(t, 421, check(f, "0.0.0.0:9300"))
	require.Equal(t, 421, check(f, "box.lan:9301"))
	f, err = client.NewFrontend(m, client.FrontendOptions{Addr: "192.0.2.7:9300", Secret: "s"})
	require.NoError(t, err)
	require.Equal(t, "s", f.Secret())
	require.Equal(t, 200, check(f, "192.0.2.7:9300"))
	require.Equal(t, 421, check(f, "127.0.0.1:9300"), "loopback forms only when listening on loopback")
	require.Equal(t, 421, check(f, "localhost:9300"))
	f, err = client.NewFrontend(m, client.FrontendOptions{Addr: "127.0.0.1:80"})
	require.NoError(t, err)
	require.Equal(t, 200, check(f, "localhost"))
	require.Equal(t, 200, check(f, "127.0.0.1:80"))
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A domain released while its tunnel runs is not retried: once the
// platform answers 404 "domain not found", the manager makes no more
// attempts, its status says gone with the platform's message, and the log
// says so once. Connecting again asks the platform again.
func TestManagerStopsRetryingReleasedDomain(t *testing.T) {
	p := newFakePlatform(t)
	var logs syncBuffer
	m := client.NewManager(p.URL, "user-key", client.ManagerOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(m.Close)
	require.NoError(t, m.Connect(context.Background(), "d1"))
	require.Equal(t, "connected", m.Status()[0].State)

	p.release()
	require.Eventually(t, func() bool { return m.Status()[0].State == "gone" }, 10*time.Second, 10*time.Millisecond, "%+v", m.Status())
	before := p.tokens.Load() + p.connects.Load()
	time.Sleep(3 * time.Second)
	require.Equal(t, before, p.tokens.Load()+p.connects.Load(), "attempts after the platform said the domain is gone")
	st := m.Status()
	require.Len(t, st, 1)
	require.False(t, st[0].Connected)
	require.Equal(t, "gone", st[0].State)
	require.Contains(t, st[0].LastError, "platform answered 404: domain not found")
	require.Equal(t, 1, strings.Count(logs.String(), "tunnel stopped"), logs.String())

	err := m.Connect(context.Background(), "d1")
	var ae *client.APIError
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, 404, ae.Status)
	require.Equal(t, "domain not found", ae.Message)
	m.Disconnect("d1")
	require.Empty(t, m.Status())
}

// A client whose token the tunnel endpoint refuses (401, as for a domain
// released since the token was issued) asks for a fresh token, and stops
// when the platform says the domain is gone; 403 from the token endpoint
// stops it too.
func TestClientStopsOnGone(t *testing.T) {
	p := newFakePlatform(t)
	p.release()
	first := true
	api := client.APITokens(p.URL, "user-key", "d1", nil)
	c, err := client.New(client.Options{URL: p.URL, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Tokens: func(ctx context.Context) (client.Token, error) {
			if first {
				first = false
				return client.Token{Token: "tok-d1", Subdomain: "app", LocalPort: 1, ExpiresAt: time.Now().Add(time.Minute).Unix()}, nil
			}
			return api(ctx)
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.Run(ctx)
	var g *client.GoneError
	require.True(t, errors.As(err, &g), "%v", err)
	require.Equal(t, 404, g.Err.Status)
	require.EqualValues(t, 1, p.connects.Load(), "the refused token was tried once")
	require.True(t, c.Status().Gone)

	p2 := newFakePlatform(t)
	p2.tokenStatus.Store(403)
	c, err = client.New(client.Options{URL: p2.URL, Tokens: client.APITokens(p2.URL, "k", "d1", nil)})
	require.NoError(t, err)
	err = c.Run(ctx)
	require.True(t, errors.As(err, &g), "%v", err)
	require.Equal(t, 403, g.Err.Status)
}

// Transient refusals (5xx, 429) and network errors are still retried
// with backoff.
func TestClientRetriesTransientErrors(t *testing.T) {
	for _, status := range []int64{500, 503, 429, 400} {
		p := newFakePlatform(t)
		p.tokenStatus.Store(status)
		c, err := client.New(client.Options{URL: p.URL, Tokens: client.APITokens(p.URL, "k", "d1", nil),
			MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		require.Eventually(t, func() bool { return p.tokens.Load() >= 5 }, 10*time.Second, 5*time.Millisecond, "status %d", status)
		require.False(t, c.Status().Gone)
		p.tokenStatus.Store(0) // the platform recovers
		select {
		case <-c.Connected():
		case <-time.After(10 * time.Second):
			t.Fatalf("status %d: not connected after recovery: %+v", status, c.Status())
		}
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	}
	// A platform that cannot be reached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := "http://" + ln.Addr().String()
	ln.Close()
	c, err := client.New(client.Options{URL: u, Tokens: client.APITokens(u, "k", "d1", nil),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.Run(ctx), context.DeadlineExceeded)
	require.False(t, c.Status().Gone)
	require.NotEmpty(t, c.Status().LastError)
}
