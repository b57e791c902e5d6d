package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/perceptron-cloud/perceptron/tunnel"
)

// fakePlatform is a platform that records every request it receives and
// serves one domain, "d1" (app.example, local port 1), over a real tunnel:
// a WebSocket carrying a yamux session whose first stream brings the
// Hello. After release it answers as the platform does for a released
// domain: 404 "domain not found" for the domain's routes and 401 "invalid
// tunnel token" on the tunnel endpoint.
type fakePlatform struct {
	*httptest.Server
	tokens   atomic.Int64 // tunnel-token requests
	connects atomic.Int64 // tunnel WebSocket requests
	// tokenStatus, when not 0, is the status every tunnel-token request
	// gets (with the message "platform trouble").
	tokenStatus atomic.Int64

	mu       sync.Mutex
	requests []*http.Request // clones, bodies read into bodies
	bodies   []string
	released bool
	gone     chan struct{} // closed at release: live tunnels close
	stop     chan struct{} // closed at cleanup
}

func newFakePlatform(t *testing.T) *fakePlatform {
	t.Helper()
	p := &fakePlatform{gone: make(chan struct{}), stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/domains/{id}/tunnel-token", func(w http.ResponseWriter, r *http.Request) {
		p.tokens.Add(1)
		if st := p.tokenStatus.Load(); st != 0 {
			apiError(w, int(st), "platform trouble")
			return
		}
		if p.isReleased() || r.PathValue("id") != "d1" {
			apiError(w, 404, "domain not found")
			return
		}
		writeJSONTest(w, map[string]any{"tunnel_token": "tok-d1", "subdomain": "app",
			"expires_at": time.Now().Add(5 * time.Minute).Unix(), "local_port": 1})
	})
	mux.HandleFunc("GET /api/domains/{id}", func(w http.ResponseWriter, r *http.Request) {
		if p.isReleased() || r.PathValue("id") != "d1" {
			apiError(w, 404, "domain not found")
			return
		}
		writeJSONTest(w, map[string]any{"id": "d1", "full_domain": "app.example"})
	})
	mux.HandleFunc("GET /api/domains/tunnel", func(w http.ResponseWriter, r *http.Request) {
		p.connects.Add(1)
		if p.isReleased() || r.Header.Get("Authorization") != "Bearer tok-d1" {
			apiError(w, 401, "invalid tunnel token")
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{tunnel.Subprotocol}})
		if err != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sess, err := yamux.Client(websocket.NetConn(ctx, ws, websocket.MessageBinary), tunnel.YamuxConfig())
		if err != nil {
			_ = ws.CloseNow()
			return
		}
		defer sess.Close()
		st, err := sess.OpenStream()
		if err != nil {
			return
		}
		b, _ := json.Marshal(tunnel.Hello{DomainID: "d1", Subdomain: "app", LocalPort: 1})
		if _, err := st.Write(append(b, '\n')); err != nil {
			return
		}
		select {
		case <-p.gone:
		case <-p.stop:
		case <-sess.CloseChan():
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONTest(w, map[string]any{"balance": 100, "currency": "USD_CENTS"})
	})
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.requests = append(p.requests, r.Clone(context.Background()))
		p.bodies = append(p.bodies, string(body))
		p.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	t.Cleanup(func() { close(p.stop) }) // runs first: frees the tunnel handlers
	return p
}

func (p *fakePlatform) isReleased() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.released
}

// release releases d1: its live tunnel closes and the platform refuses it
// from now on.
func (p *fakePlatform) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.released {
		p.released = true
		close(p.gone)
	}
}

// received returns the requests received so far, except the tunnel's own
// (token, domain, WebSocket), which the manager makes.
func (p *fakePlatform) received() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*http.Request
	for _, r := range p.requests {
		if r.URL.Path == "/api/domains/d1/tunnel-token" || r.URL.Path == "/api/domains/d1" || r.URL.Path == "/api/domains/tunnel" {
			continue
		}
		out = append(out, r)
	}
	return out
}

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg}})
}

func writeJSONTest(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
