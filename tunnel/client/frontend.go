package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	done                 chan struct{}
}

// TunnelStatus is one tunnel's state, as the frontend's status route
// shows it.
type TunnelStatus struct {
	DomainID   string `json:"domain_id"`
	Subdomain  string `json:"subdomain"`
	FullDomain string `json:"full_domain"`
	LocalPort  uint16 `json:"local_port"`
	Connected  bool   `json:"connected"`
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

// Connect starts the domain's tunnel, if it is not running, and waits
// until it is connected. A refusal of the platform (no port assigned, not
// the key's domain...) is returned as an *APIError at once.
func (m *Manager) Connect(ctx context.Context, domainID string) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("client: manager closed")
	}
	t := m.tunnels[domainID]
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
		if prev := m.tunnels[domainID]; prev != nil || m.closed {
			m.mu.Unlock()
			cancel()
			if prev == nil {
				return errors.New("client: manager closed")
			}
			t = prev
		} else {
			m.tunnels[domainID] = t
			m.mu.Unlock()
			go func() { defer close(t.done); _ = c.Run(rctx) }()
		}
	}
	wctx, cancel := context.WithTimeout(ctx, m.opts.ConnectTimeout)
	defer cancel()
	select {
	case <-t.c.Connected():
		return nil
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
			Connected: st.Connected, Reconnects: st.Reconnects, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			Requests: st.Requests, LastError: st.LastError}
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

// NewFrontend returns the local frontend's handler over m: POST
// /api/domains/{id}/connect and /disconnect, GET
// /api/domains/tunnels/status, and every other /api/ request passed to
// the platform with the manager's key (unless it brings its own
// Authorization).
func NewFrontend(m *Manager) http.Handler {
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
	mux.Handle("/api/", proxy)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg}})
}
