// Package client is the tunnel client: it connects a reserved domain's
// tunnel to the platform and forwards every stream the platform opens to a
// local port, reconnecting with capped exponential backoff and full
// jitter. [Manager] runs several, and [NewFrontend] is the local frontend
// of the perceptron command (its connect, disconnect and status routes,
// and every other /api/ request passed to the platform with the key).
//
// # Retries
//
// Network errors, 5xx answers and every other refusal (400 "assign a port
// before connecting the tunnel", 429...) are retried with backoff. A
// domain the platform says is gone is not: when the token endpoint
// answers 404 (the domain was released, lapsed or never existed), 403
// (another wallet has it) or 401 (the key was revoked), [Client.Run]
// stops with a [*GoneError], its status says Gone with the platform's
// message, and it logs that once. A tunnel token refused at the
// WebSocket (401 "invalid tunnel token", as for a domain released since
// the token was issued) is retried like any failure, with a fresh token,
// so the token endpoint then says whether the domain is gone.
//
// # The local frontend
//
// The frontend holds the user's key and listens on loopback, where other
// local users and every web page the user's browser opens can reach it (a
// cross-site POST with Content-Type text/plain needs no CORS preflight,
// and DNS rebinding lets a page read the answers). So it answers only
// requests that pass three checks, in this order, before anything reaches
// the platform:
//
//   - Host: the request's Host must be the address the frontend listens
//     on (host:port, letter case ignored; a missing port means 80), or,
//     when it listens on a loopback address, localhost, 127.0.0.1 or
//     [::1] with the same port, or one of [FrontendOptions.Hosts]. Any
//     other Host is refused with 421: a page whose name an attacker
//     rebound to 127.0.0.1 sends its own name.
//   - Cross-site requests: an Origin header that is not the frontend's
//     own origin (http:// and the request's Host; "null" included), or a
//     Sec-Fetch-Site header other than same-origin or none, is refused
//     with 403. This also refuses pages of other ports on 127.0.0.1,
//     which browsers count as same-site.
//   - The per-run secret (32 random bytes, base64url, unless
//     [FrontendOptions.Secret] gives one), compared in constant time: in
//     the Perceptron-Frontend-Token header (for programs, which read it
//     from the file the perceptron command writes), or in the cookie
//     perceptron_frontend_PORT (for a browser). A browser gets the cookie
//     by opening the frontend's URL with ?token=SECRET, as
//     [Frontend.URL] gives and the command prints: a GET outside /api/
//     (where ?token= is the platform's: the persona stream's key) with
//     the right token sets the cookie (HttpOnly, SameSite=Strict, Path=/, no
//     expiry: it lasts the browser session and is useless after the
//     run) and redirects (303) to the same URL without the token, so it
//     leaves the address bar and history. A missing or wrong secret is
//     refused with 403.
//
// Refusals are JSON in the platform's error shape, {"error":{"message":
// ...}}. Every answer carries Referrer-Policy: no-referrer and
// X-Frame-Options: DENY. The secret header and every cookie are removed
// from requests passed to the platform, whose API uses none. Cookies are
// not scoped by port: another server on 127.0.0.1 the browser visits
// receives the cookie, which is why the name carries the port and the
// secret changes at every run; programs should prefer the header.
package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/perceptron-cloud/perceptron/tunnel"
)

// Token is a tunnel token and what it is for, as POST
// /api/domains/{id}/tunnel-token answers.
type Token struct {
	Token     string `json:"tunnel_token"`
	Subdomain string `json:"subdomain"`
	ExpiresAt int64  `json:"expires_at"`
	LocalPort uint16 `json:"local_port"`
}

// TokenSource returns a fresh tunnel token; the client calls it before
// every connection attempt.
type TokenSource func(ctx context.Context) (Token, error)

// APIError is a refusal of the platform's API.
type APIError struct {
	Status  int
	Message string
}

// Error says what the platform answered.
func (e *APIError) Error() string {
	return fmt.Sprintf("platform answered %d: %s", e.Status, e.Message)
}

// GoneError is a refusal of the platform's token endpoint that ends a
// client's retries: 404 (no such active domain: released, lapsed, or
// never there), 403 (another wallet's) or 401 (the key is not valid
// any more).
type GoneError struct {
	Err *APIError
}

// Error says that the client stopped, and what the platform answered.
func (e *GoneError) Error() string {
	return "the platform refused the domain, not retrying: " + e.Err.Error()
}

// Unwrap returns the platform's refusal.
func (e *GoneError) Unwrap() error { return e.Err }

// goneStatus reports whether a status of the token endpoint means the
// domain is gone for this key.
func goneStatus(status int) bool {
	return status == http.StatusNotFound || status == http.StatusForbidden || status == http.StatusUnauthorized
}

// APITokens returns a TokenSource that asks the platform at base (its URL
// without /api, e.g. http://127.0.0.1:8080) for a token of the domain,
// with a client or master key. hc nil means http.DefaultClient.
func APITokens(base, key, domainID string, hc *http.Client) TokenSource {
	if hc == nil {
		hc = http.DefaultClient
	}
	base = strings.TrimRight(base, "/")
	return func(ctx context.Context) (Token, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/domains/"+domainID+"/tunnel-token", nil)
		if err != nil {
			return Token{}, err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := hc.Do(req)
		if err != nil {
			return Token{}, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		if err != nil {
			return Token{}, err
		}
		if res.StatusCode != http.StatusOK {
			return Token{}, &APIError{Status: res.StatusCode, Message: errorMessage(body)}
		}
		var t Token
		if err := json.Unmarshal(body, &t); err != nil {
			return Token{}, fmt.Errorf("decoding the tunnel token: %w", err)
		}
		return t, nil
	}
}

// errorMessage is the message of the platform's error shape,
// {"error":{"message":...}}, or the start of the body.
func errorMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return strings.TrimSpace(string(body[:min(len(body), 200)]))
}

// Options configures a [Client].
type Options struct {
	// URL is the platform's tunnel endpoint: ws:// or wss://, or the
	// platform's http(s) base URL, to which /api/domains/tunnel is
	// appended.
	URL string
	// Tokens fetches a token before each connection; required.
	Tokens TokenSource
	// LocalHost is the host local connections go to; empty means
	// 127.0.0.1. The port is the token's.
	LocalHost string
	// DialTimeout bounds a local connection; zero means 5 seconds.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts (full
	// jitter: a random wait up to min(MaxBackoff, MinBackoff·2^n)); zero
	// means 500 ms and 20 s. StableAfter is how long a connection must
	// last for the backoff to start again from MinBackoff; zero means 30 s.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	// HTTPClient dials the WebSocket; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Status is a client's state.
type Status struct {
	Subdomain  string
	LocalPort  uint16
	Connected  bool
	Since      time.Time // when the current connection was made
	Reconnects int64     // connections made after the first
	BytesIn    int64     // from the platform to the local service
	BytesOut   int64     // from the local service to the platform
	Requests   int64     // streams forwarded (public connections)
	LastError  string
	// Gone says the platform refused the domain for good (a *GoneError,
	// in LastError): the client stopped retrying.
	Gone bool
}

// Client keeps one domain's tunnel connected.
type Client struct {
	opts     Options
	log      *slog.Logger
	bufs     tunnel.FrameBuffers
	copyBufs bufPool

	bytesIn, bytesOut, requests, conns atomic.Int64

	mu        sync.Mutex
	st        Status
	connected chan struct{} // closed at each connection; replaced after
}

// New returns a client; Run connects it.
func New(opts Options) (*Client, error) {
	if opts.Tokens == nil {
		return nil, errors.New("client: Options.Tokens is required")
	}
	u := strings.TrimRight(opts.URL, "/")
	switch {
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://") + "/api/domains/tunnel"
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://") + "/api/domains/tunnel"
	case strings.HasPrefix(u, "ws://"), strings.HasPrefix(u, "wss://"):
	default:
		return nil, fmt.Errorf("client: URL %q is not http(s) or ws(s)", opts.URL)
	}
	opts.URL = u
	if opts.LocalHost == "" {
		opts.LocalHost = "127.0.0.1"
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 20 * time.Second
	}
	if opts.StableAfter <= 0 {
		opts.StableAfter = 30 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	c := &Client{opts: opts, log: opts.Logger, connected: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Status returns the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	st.BytesIn, st.BytesOut, st.Requests = c.bytesIn.Load(), c.bytesOut.Load(), c.requests.Load()
	if n := c.conns.Load(); n > 1 {
		st.Reconnects = n - 1
	}
	return st
}

// Connected returns a channel closed once the client is next connected.
func (c *Client) Connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.Connected {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.connected
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.st.LastError = err.Error()
	c.mu.Unlock()
}

// Run connects and reconnects until ctx ends, and returns ctx's error,
// or until the platform says the domain is gone (see [GoneError]), and
// returns that *GoneError.
func (c *Client) Run(ctx context.Context) error {
	attempt := 0
	for {
		start := time.Now()
		err := c.once(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if g := (*GoneError)(nil); errors.As(err, &g) {
			c.mu.Lock()
			c.st.LastError, c.st.Gone = g.Error(), true
			c.mu.Unlock()
			c.log.Error("tunnel stopped: the platform refused the domain", "err", g.Err)
			return g
		}
		if err != nil {
			c.setErr(err)
			c.log.Warn("tunnel connection failed", "err", err)
		}
		if time.Since(start) >= c.opts.StableAfter {
			attempt = 0
		}
		wait := c.opts.MinBackoff << min(attempt, 30)
		if wait > c.opts.MaxBackoff || wait <= 0 {
			wait = c.opts.MaxBackoff
		}
		wait = rand.N(wait) + time.Millisecond // full jitter
		attempt++
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// once makes one connection and serves it until it ends.
func (c *Client) once(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	tok, err := c.opts.Tokens(tctx)
	cancel()
	if ae := (*APIError)(nil); errors.As(err, &ae) && goneStatus(ae.Status) {
		return &GoneError{Err: ae}
	}
	if err != nil {
		return fmt.Errorf("getting a tunnel token: %w", err)
	}
	hc, raw := c.dialClient()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ws, res, err := websocket.Dial(dctx, c.opts.URL, &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + tok.Token}},
		Subprotocols: []string{tunnel.Subprotocol},
	})
	cancel()
	if err != nil {
		if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
			// websocket.Dial keeps the start of a refusal's body.
			msg := err.Error()
			if res.Body != nil {
				if b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10)); len(b) > 0 {
					msg = errorMessage(b)
				}
			}
			return &APIError{Status: res.StatusCode, Message: msg}
		}
		return fmt.Errorf("connecting the tunnel: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var conn net.Conn = websocket.NetConn(sctx, ws, websocket.MessageBinary)
	if b := *raw; b != nil {
		b.Hold()
		conn = flushingConn{conn, b}
	}
	conn = tunnel.NewCoalescer(conn, &c.bufs)
	mux, err := yamux.Server(conn, tunnel.YamuxConfig())
	if err != nil {
		_ = ws.CloseNow()
		return err
	}
	defer func() {
		_ = mux.Close()
		_ = ws.Close(websocket.StatusNormalClosure, "")
	}()
	// The first stream is the platform's control stream: its Hello says
	// the tunnel is registered and public requests may come.
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	control, err := acceptControl(hctx, mux)
	cancel()
	if err != nil {
		return fmt.Errorf("waiting for the platform's hello: %w", err)
	}
	defer control.Close()
	c.conns.Add(1)
	c.mu.Lock()
	c.st.Subdomain, c.st.LocalPort, c.st.Connected, c.st.Since, c.st.LastError = tok.Subdomain, tok.LocalPort, true, time.Now(), ""
	close(c.connected)
	c.mu.Unlock()
	c.log.Info("tunnel connected", "subdomain", tok.Subdomain, "port", tok.LocalPort)
	defer func() {
		c.mu.Lock()
		c.st.Connected = false
		c.connected = make(chan struct{})
		c.mu.Unlock()
	}()
	go func() {
		<-ctx.Done()
		_ = mux.Close()
	}()
	local := net.JoinHostPort(c.opts.LocalHost, fmt.Sprint(tok.LocalPort))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tunnel closed: %w", err)
		}
		c.requests.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.forward(st, local)
		}()
	}
}

// dialClient returns the HTTP client of one connection attempt: the
// configured one, whose transport's connections are wrapped in a
// bufferedConn when it is an *http.Transport; raw then points at the
// connection the dial made.
func (c *Client) dialClient() (*http.Client, **bufferedConn) {
	raw := new(*bufferedConn)
	base, ok := c.opts.HTTPClient.Transport.(*http.Transport)
	if c.opts.HTTPClient.Transport == nil {
		base, ok = http.DefaultTransport.(*http.Transport), true
	}
	if !ok {
		return c.opts.HTTPClient, raw
	}
	tr := base.Clone()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		b := newBufferedConn(conn)
		*raw = b
		return b, nil
	}
	tr.ForceAttemptHTTP2 = false
	hc := *c.opts.HTTPClient
	hc.Transport = tr
	return &hc, raw
}

// acceptControl accepts the control stream and reads the Hello.
func acceptControl(ctx context.Context, mux *yamux.Session) (*yamux.Stream, error) {
	type result struct {
		st  *yamux.Stream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		st, err := mux.AcceptStream()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		line, err := bufio.NewReader(io.LimitReader(st, 4<<10)).ReadBytes('\n')
		var h tunnel.Hello
		if err == nil {
			err = json.Unmarshal(line, &h)
		}
		if err != nil {
			_ = st.Close()
			ch <- result{nil, err}
			return
		}
		ch <- result{st, nil}
	}()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-ctx.Done():
		_ = mux.Close()
		return nil, ctx.Err()
	}
}

// forward connects a stream to the local service.
func (c *Client) forward(st *yamux.Stream, local string) {
	defer st.Close()
	lc, err := net.DialTimeout("tcp", local, c.opts.DialTimeout)
	if err != nil {
		msg := "the local service at " + local + " refused the connection"
		if len(msg) > 255 {
			msg = msg[:255]
		}
		_, _ = st.Write(append([]byte{tunnel.StatusRefused, byte(len(msg))}, msg...))
		return
	}
	defer lc.Close()
	if _, err := st.Write([]byte{tunnel.StatusOK}); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(counter{lc, &c.bytesIn}, onlyReader{st})
		if tc, ok := lc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	c.copyOut(st, lc)
	_ = st.Close() // yamux's Close half-closes: the other way goes on
	<-done
}

// copyBufSize is the size of the buffers that copy a bulk answer from the
// local service to the stream: large reads make large frames, one
// WebSocket message of up to copyBufSize bytes each.
const copyBufSize = 256 << 10

// copyOut copies the local service's bytes to the stream, counting them.
// It reads into 32 KiB first and takes a copyBufSize buffer from the pool
// only once a read fills that (a bulk answer), so that many streams of
// small answers hold little memory.
func (c *Client) copyOut(st io.Writer, lc io.Reader) {
	var small [32 << 10]byte
	buf := small[:]
	var big *[]byte
	defer func() {
		if big != nil {
			c.copyBufs.put(big)
		}
	}()
	for {
		n, err := lc.Read(buf)
		if n > 0 {
			w, werr := st.Write(buf[:n])
			c.bytesOut.Add(int64(w))
			if werr != nil {
				return
			}
			if n == len(buf) && big == nil {
				big = c.copyBufs.get()
				buf = *big
			}
		}
		if err != nil {
			return
		}
	}
}

// bufPool is a pool of copy buffers.
type bufPool struct{ p sync.Pool }

func (b *bufPool) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, copyBufSize)
	return &buf
}

func (b *bufPool) put(v *[]byte) { b.p.Put(v) }

// onlyReader hides a reader's WriterTo, so that io.CopyBuffer uses the
// buffer it is given.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// counter counts what is written through it, as it is written.
type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
