package client

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// ManagerOptions configures a [Manager].
type ManagerOptions struct {
	// HTTPClient calls the platform; nil means http.DefaultClient.
	HTTPClient *http.Client
	// ConnectTimeout bounds Connect's wait for the tunnel; zero means 15
	// seconds.
	ConnectTimeout time.Duration
	// MinBackoff and MaxBackoff are the clients' (see Options).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Manager runs the tunnels of one key: one [Client] per connected domain.
type Manager struct {
	api  string
	key  string
	opts ManagerOptions
	log  *slog.Logger

	mu      sync.Mutex
	tunnels map[string]*managed
	closed  bool
}

type managed struct {
	domainID, fullDomain string
	c                    *Client
	cancel               context.CancelFunc
	done                 chan struct{} // closed when c.Run returned
	err                  error         // what c.Run returned; read after done
}

// gone reports whether the tunnel stopped because the platform refused
// its domain.
func (t *managed) gone() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// TunnelStatus is one tunnel's state, as the frontend's status route
// shows it.
type TunnelStatus struct {
	DomainID   string `json:"domain_id"`
	Subdomain  string `json:"subdomain"`
	FullDomain string `json:"full_domain"`
	LocalPort  uint16 `json:"local_port"`
	// State is "connected", "connecting" (also between reconnections) or
	// "gone": the platform refused the domain for good (released,
	// lapsed, another wallet's, or the key revoked: LastError has its
	// message) and the tunnel is not retried; connecting again retries.
	State     string `json:"state"`
	Connected bool   `json:"connected"`
	// Since is when the current connection was made (Unix seconds), 0
	// when not connected.
	Since      int64  `json:"since"`
	Reconnects int64  `json:"reconnects"`
	BytesIn    int64  `json:"bytes_in"`
	BytesOut   int64  `json:"bytes_out"`
	Requests   int64  `json:"requests"`
	LastError  string `json:"last_error,omitempty"`
}

// NewManager returns a manager for the platform at api (its base URL
// without /api) and a client or master key.
func NewManager(api, key string, opts ManagerOptions) *Manager {
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 15 * time.Second
	}
	m := &Manager{api: strings.TrimRight(api, "/"), key: key, opts: opts, log: opts.Logger, tunnels: map[string]*managed{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// Connect starts the domain's tunnel, if it is not running (or is gone),
// and waits until it is connected. A refusal of the platform (no port
// assigned, not the key's domain...) is returned as an *APIError at once.
func (m *Manager) Connect(ctx context.Context, domainID string) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("client: manager closed")
	}
	t := m.tunnels[domainID]
	if t != nil && t.gone() {
		delete(m.tunnels, domainID)
		t = nil
	}
	m.mu.Unlock()
	if t == nil {
		tokens := APITokens(m.api, m.key, domainID, m.opts.HTTPClient)
		first, err := tokens(ctx) // the platform's refusals, at once
		if err != nil {
			return err
		}
		full, err := m.fullDomain(ctx, domainID)
		if err != nil {
			return err
		}
		used := false
		var once sync.Mutex
		src := func(ctx context.Context) (Token, error) {
			once.Lock()
			defer once.Unlock()
			if !used && time.Until(time.Unix(first.ExpiresAt, 0)) > 30*time.Second {
				used = true
				return first, nil
			}
			return tokens(ctx)
		}
		c, err := New(Options{URL: m.api, Tokens: src, HTTPClient: m.opts.HTTPClient, MinBackoff: m.opts.MinBackoff,
			MaxBackoff: m.opts.MaxBackoff, Logger: m.log.With("domain", domainID)})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		t = &managed{domainID: domainID, fullDomain: full, c: c, cancel: cancel, done: make(chan struct{})}
		m.mu.Lock()
		switch prev := m.tunnels[domainID]; {
		case m.closed:
			m.mu.Unlock()
			cancel()
			return errors.New("client: manager closed")
		case prev != nil && !prev.gone():
			m.mu.Unlock()
			cancel()
			t = prev
		default:
			m.tunnels[domainID] = t
			m.mu.Unlock()
			go func() { defer close(t.done); t.err = c.Run(rctx) }()
		}
	}
	wctx, cancel := context.WithTimeout(ctx, m.opts.ConnectTimeout)
	defer cancel()
	select {
	case <-t.c.Connected():
		return nil
	case <-t.done:
		var g *GoneError
		if errors.As(t.err, &g) {
			return g.Err
		}
		return fmt.Errorf("the tunnel stopped: %v", t.err)
	case <-wctx.Done():
		if msg := t.c.Status().LastError; msg != "" {
			return fmt.Errorf("the tunnel did not connect: %s", msg)
		}
		return fmt.Errorf("the tunnel did not connect: %w", wctx.Err())
	}
}

// fullDomain reads the domain's public name from the platform.
func (m *Manager) fullDomain(ctx context.Context, id string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.api+"/api/domains/"+url.PathEscape(id), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+m.key)
	res, err := m.opts.HTTPClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", &APIError{Status: res.StatusCode, Message: errorMessage(body)}
	}
	var d struct {
		FullDomain string `json:"full_domain"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return "", err
	}
	return d.FullDomain, nil
}

// Disconnect stops the domain's tunnel and waits for it to end.
func (m *Manager) Disconnect(domainID string) {
	m.mu.Lock()
	t := m.tunnels[domainID]
	delete(m.tunnels, domainID)
	m.mu.Unlock()
	if t != nil {
		t.cancel()
		<-t.done
	}
}

// Status returns every tunnel's state, by domain ID.
func (m *Manager) Status() []TunnelStatus {
	m.mu.Lock()
	all := make([]*managed, 0, len(m.tunnels))
	for _, t := range m.tunnels {
		all = append(all, t)
	}
	m.mu.Unlock()
	out := make([]TunnelStatus, 0, len(all))
	for _, t := range all {
		st := t.c.Status()
		ts := TunnelStatus{DomainID: t.domainID, Subdomain: st.Subdomain, FullDomain: t.fullDomain, LocalPort: st.LocalPort,
			State: "connecting", Connected: st.Connected, Reconnects: st.Reconnects, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			Requests: st.Requests, LastError: st.LastError}
		switch {
		case st.Gone:
			ts.State = "gone"
		case st.Connected:
			ts.State = "connected"
		}
		if st.Connected {
			ts.Since = st.Since.Unix()
		}
		out = append(out, ts)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DomainID < out[j].DomainID })
	return out
}

// Close stops every tunnel.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	ids := make([]string, 0, len(m.tunnels))
	for id := range m.tunnels {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.Disconnect(id)
	}
}

// FrontendTokenHeader is the request header that carries the frontend's
// secret for programs (a browser uses the cookie instead).
const FrontendTokenHeader = "Perceptron-Frontend-Token"

// FrontendOptions configures a [Frontend].
type FrontendOptions struct {
	// Addr is the address the frontend listens on, as host:port (a
	// net.Listener's Addr().String()); required: requests are checked
	// against it (see the package doc).
	Addr string
	// Secret is the per-run secret requests must carry; empty means 32
	// random bytes, base64url-encoded.
	Secret string
	// Hosts are further Host values to accept (host:port, e.g. the
	// machine's name when the frontend listens beyond loopback). One is
	// required when Addr's host is unspecified (0.0.0.0, ::), whose
	// literal no client sends.
	Hosts []string
	// Logger receives refusals; nil discards them.
	Logger *slog.Logger
}

// Frontend is the local frontend's handler over a [Manager]: POST
// /api/domains/{id}/connect and /disconnect, GET
// /api/domains/tunnels/status, GET / (a short page saying the browser is
// signed in), and every other /api/ request passed to the platform with
// the manager's key (unless it brings its own Authorization), each only
// for requests that pass the checks of the package doc.
type Frontend struct {
	m      *Manager
	secret []byte
	addr   string          // the host:port of URL
	hosts  map[string]bool // accepted Host values, canonical
	cookie string          // the cookie's name
	log    *slog.Logger
	mux    *http.ServeMux
}

// NewFrontend returns the frontend over m for a listener on opts.Addr.
func NewFrontend(m *Manager, opts FrontendOptions) (*Frontend, error) {
	host, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: frontend address %q: %w", opts.Addr, err)
	}
	f := &Frontend{m: m, addr: opts.Addr, hosts: map[string]bool{}, cookie: "perceptron_frontend_" + port, log: opts.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.IsLoopback(), strings.EqualFold(host, "localhost"):
		for _, h := range []string{"localhost", "127.0.0.1", "::1", host} {
			f.hosts[canonicalHost(net.JoinHostPort(h, port))] = true
		}
	case host == "" || ip != nil && ip.IsUnspecified():
		if len(opts.Hosts) == 0 {
			return nil, fmt.Errorf("client: the frontend listens on all interfaces (%s): name the Host values to accept in FrontendOptions.Hosts", opts.Addr)
		}
		f.addr = opts.Hosts[0]
	default:
		f.hosts[canonicalHost(opts.Addr)] = true
	}
	for _, h := range opts.Hosts {
		f.hosts[canonicalHost(h)] = true
	}
	if opts.Secret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // crypto/rand.Read never fails
		opts.Secret = base64.RawURLEncoding.EncodeToString(b)
	}
	f.secret = []byte(opts.Secret)
	f.mux = f.routes()
	return f, nil
}

// Secret returns the secret requests must carry.
func (f *Frontend) Secret() string { return string(f.secret) }

// URL returns the address a browser opens to sign in: the frontend's
// address (the first of FrontendOptions.Hosts when it listens on all
// interfaces) with ?token=SECRET.
func (f *Frontend) URL() string {
	return f.Origin() + "/?token=" + url.QueryEscape(string(f.secret))
}

// Origin returns the frontend's origin, http://HOST:PORT, as in URL.
func (f *Frontend) Origin() string { return "http://" + f.addr }

// canonicalHost is a Host value in the form the checks compare: lower
// case, with its port (80 when it has none).
func canonicalHost(h string) string {
	h = strings.ToLower(h)
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), "80"
	}
	return net.JoinHostPort(host, port)
}

// ServeHTTP checks the request (Host, cross-site, secret) and serves it.
func (f *Frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	host := canonicalHost(r.Host)
	if !f.hosts[host] {
		f.refuse(w, r, http.StatusMisdirectedRequest, "this frontend answers only requests for its own address")
		return
	}
	if o, ok := r.Header["Origin"]; ok && (len(o) != 1 || !strings.EqualFold(o[0], "http://"+r.Host)) {
		f.refuse(w, r, http.StatusForbidden, "cross-site requests are refused")
		return
	}
	if s := r.Header.Values("Sec-Fetch-Site"); len(s) > 1 || len(s) == 1 && s[0] != "same-origin" && s[0] != "none" {
		f.refuse(w, r, http.StatusForbidden, "cross-site requests are refused")
		return
	}
	// ?token= signs a browser in, outside /api/: the persona stream's
	// ?token= is the platform's (a key), passed on as before.
	if tok, ok := r.URL.Query()["token"]; ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) && !strings.HasPrefix(r.URL.Path, "/api/") {
		f.signIn(w, r, tok)
		return
	}
	if !f.authorized(r) {
		f.refuse(w, r, http.StatusForbidden, "this frontend needs its secret: open the URL it printed, or send the "+FrontendTokenHeader+" header")
		return
	}
	r.Header.Del(FrontendTokenHeader)
	r.Header.Del("Cookie")
	f.mux.ServeHTTP(w, r)
}

// authorized reports whether the request carries the secret, in the header
// or the cookie.
func (f *Frontend) authorized(r *http.Request) bool {
	if v := r.Header.Values(FrontendTokenHeader); len(v) > 0 {
		return len(v) == 1 && f.matches(v[0])
	}
	c, err := r.Cookie(f.cookie)
	return err == nil && f.matches(c.Value)
}

func (f *Frontend) matches(s string) bool {
	return subtle.ConstantTimeCompare([]byte(s), f.secret) == 1
}

// signIn exchanges ?token=SECRET for the cookie and redirects to the same
// URL without the token.
func (f *Frontend) signIn(w http.ResponseWriter, r *http.Request, tok []string) {
	if len(tok) != 1 || !f.matches(tok[0]) {
		f.refuse(w, r, http.StatusForbidden, "wrong frontend secret: open the URL the frontend printed at this run")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: f.cookie, Value: string(f.secret), Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	q := r.URL.Query()
	q.Del("token")
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	if u.Path == "" {
		u.Path = "/"
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (f *Frontend) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	f.log.Info("frontend request refused", "status", status, "method", r.Method, "path", r.URL.Path,
		"host", r.Host, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "remote", r.RemoteAddr)
	writeError(w, status, msg)
}

// routes is the frontend's handler for requests that passed the checks.
func (f *Frontend) routes() *http.ServeMux {
	m := f.m
	target, _ := url.Parse(m.api)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			if pr.In.Header.Get("Authorization") == "" {
				pr.Out.Header.Set("Authorization", "Bearer "+m.key)
			}
		},
		Transport: m.opts.HTTPClient.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadGateway, "the platform is unreachable: "+err.Error())
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/domains/{id}/connect", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Connect(r.Context(), r.PathValue("id")); err != nil {
			var ae *APIError
			if errors.As(err, &ae) {
				writeError(w, ae.Status, ae.Message)
				return
			}
			writeError(w, http.StatusBadGateway, err.Error())
			return
		}
		writeJSON(w, map[string]string{"status": "connected"})
	})
	mux.HandleFunc("POST /api/domains/{id}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		m.Disconnect(r.PathValue("id"))
		writeJSON(w, map[string]string{"status": "disconnected"})
	})
	mux.HandleFunc("GET /api/domains/tunnels/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"tunnels": m.Status()})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, signedInPage)
	})
	mux.Handle("/api/", proxy)
	return mux
}

// signedInPage is what GET / shows a signed-in browser.
const signedInPage = `<!doctype html>
<meta charset="utf-8">
<title>Perceptron frontend</title>
<h1>Perceptron frontend</h1>
<p>This browser is signed in to the frontend until it is restarted.
The platform's API is under <a href="/api/domains/tunnels/status">/api/</a>.</p>
`

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg}})
}
