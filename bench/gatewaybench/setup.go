package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
	"github.com/perceptron-cloud/perceptron/storage/postgres"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// The benchmark's catalog model, its upstream name and the wallet it
// bills.
const (
	modelID       = "bench/fake"
	upstreamModel = "fake-model"
	wallet        = "0x00000000000000000000000000000000000be4c7"
	// funds is far more than any run spends (a request costs well under a
	// cent and holds $0.05).
	funds = 1_000_000 * billing.Dollar
)

// loopback is an HTTP server on 127.0.0.1 with a random port.
type loopback struct {
	srv *http.Server
	url string // http://127.0.0.1:PORT
}

// serve starts h on loopback. Requests run under the pprof label
// target=label, so that a CPU profile separates the servers.
func serve(label string, h http.Handler) (*loopback, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	labels := pprof.Labels("target", label)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pprof.Do(r.Context(), labels, func(ctx context.Context) { h.ServeHTTP(w, r) })
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return &loopback{srv: srv, url: "http://" + ln.Addr().String()}, nil
}

// close stops the server, dropping its connections: the load is over.
func (l *loopback) close() error { return l.srv.Close() }

// baseURL is the server's http://127.0.0.1:PORT.
func (l *loopback) baseURL() string { return l.url }

// controlPrefix is the path prefix of the control API that a server run as
// a child process (-layout split) serves besides the real API. No real
// route (/v1/..., /api/...) starts with it.
const controlPrefix = "/_bench/"

// withControl routes the requests under controlPrefix to control and all
// others to h. control always serves POST /_bench/gc (a garbage collection
// of the process, as the in-process layout runs before each measured
// slice); callers add their own routes to it.
func withControl(h http.Handler, control *http.ServeMux) http.Handler {
	control.HandleFunc("POST "+controlPrefix+"gc", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		w.WriteHeader(http.StatusNoContent)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, controlPrefix) {
			control.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// upstream is the fake OpenAI upstream served over loopback.
type upstream struct {
	*loopback
	fake *inferencetest.Upstream
}

// startUpstream serves a fake upstream with c. With control, it also
// serves the control API, where POST /_bench/config with a JSON
// inferencetest.Config replaces the configuration (see setConfig).
func startUpstream(c inferencetest.Config, control bool) (*upstream, error) {
	u := &upstream{fake: inferencetest.New(c)}
	h := http.Handler(u.fake)
	if control {
		mux := http.NewServeMux()
		mux.HandleFunc("POST "+controlPrefix+"config", func(w http.ResponseWriter, r *http.Request) {
			var c inferencetest.Config
			if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			u.fake.SetConfig(c)
			w.WriteHeader(http.StatusNoContent)
		})
		h = withControl(h, mux)
	}
	var err error
	if u.loopback, err = serve("direct", h); err != nil {
		return nil, err
	}
	return u, nil
}

// setConfig replaces the fake's configuration for the next requests.
func (u *upstream) setConfig(_ context.Context, c inferencetest.Config) error {
	u.fake.SetConfig(c)
	return nil
}

// startProxy serves a bare reverse proxy to the upstream: the standard
// library's httputil.ReverseProxy, flushing every write, over a transport
// like the gateway's. It does what every HTTP gateway must (a second
// server hop and a client hop) and nothing else: no authentication, no
// billing, no JSON. Its overhead over direct is the floor for any HTTP
// gateway on this machine, measured in the same run.
//
// With control, it also serves the control API (only /_bench/gc).
func startProxy(upstreamURL string, control bool) (*loopback, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	rp.Transport = t
	// Full duplex: by default, the HTTP/1 server drains and closes the
	// request body when the handler first writes the response. If the
	// upstream answers before the transport has finished sending the
	// body (its last read, which checks for bytes past Content-Length),
	// that read fails, the transport drops the upstream connection and the
	// answer is cut mid-stream (golang/go#40747). A gateway that reads the
	// body before proxying, as Perceptron's does, never meets it.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
	if control {
		return serve("proxy", withControl(h, http.NewServeMux()))
	}
	return serve("proxy", h)
}

// upstreamConfig is the fake upstream's configuration for a latency.
func upstreamConfig(cfg config, latency time.Duration) inferencetest.Config {
	return inferencetest.Config{
		Latency:          latency,
		CompletionTokens: cfg.tokens,
		Chunks:           cfg.chunks,
		ChunkDelay:       cfg.chunkDelay,
		NoRecord:         true,
	}
}

// backendOptions says where the gateways' databases go.
type backendOptions struct {
	sqliteDir   string // the SQLite file's directory; "" means a new temp dir
	postgresURL string // the PostgreSQL server of the postgres backend
}

// gateway is a platform served over loopback, with a funded wallet and a
// client key.
type gateway struct {
	backend string
	p       *perceptron.Platform
	http    *loopback
	key     string
	dir     string                     // temp dir to remove, if any
	files   []string                   // database files to remove, if any
	store   interface{ Close() error } // a store the platform was given, to close after it
	pgURL   string                     // with schema: the server to drop it on
	schema  string                     // a PostgreSQL schema to drop, if any
}

// startGateway opens a platform on backend ("memory", "sqlite" or
// "postgres") in front of the upstream at upstreamURL, serves it, funds
// the wallet and creates a client key. SQLite gets a new file in
// opts.sqliteDir, PostgreSQL a new schema on opts.postgresURL; close
// removes either. With control, it also serves the control API, where
// GET /_bench/verify?succeeded=N runs verify (see verifyHandler).
func startGateway(ctx context.Context, backend, upstreamURL string, opts backendOptions, control bool) (_ *gateway, err error) {
	g := &gateway{backend: backend}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	pc := perceptron.Config{} // memory
	switch backend {
	case "sqlite":
		dir := opts.sqliteDir
		if dir == "" {
			if g.dir, err = os.MkdirTemp("", "gatewaybench-"); err != nil {
				return nil, err
			}
			dir = g.dir
		}
		file := filepath.Join(dir, fmt.Sprintf("gatewaybench-%d.db", time.Now().UnixNano()))
		g.files = []string{file, file + "-wal", file + "-shm", file + "-settle", file + ".lock"}
		st, err := sqlite.Open(ctx, file, sqlite.Options{})
		if err != nil {
			return nil, err
		}
		g.store, pc.Store = st, st // close closes it
	case "postgres":
		if opts.postgresURL == "" {
			return nil, fmt.Errorf("postgres: no server (-postgres or %s)", envPostgres)
		}
		// Set before Open, which creates the schema first: close drops it
		// even if the migrations fail.
		g.pgURL, g.schema = opts.postgresURL, newSchemaName()
		st, err := postgres.Open(ctx, opts.postgresURL, postgres.Options{Schema: g.schema, MaxConns: postgresMaxConns})
		if err != nil {
			return nil, err
		}
		// The platform does not close a store it was given: close does.
		g.store, pc.Store = st, st
	}
	provider, err := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: upstreamURL + "/v1"})
	if err != nil {
		return nil, err
	}
	pc.Inference = perceptron.InferenceConfig{
		Models: []inference.Model{{
			ID:               modelID,
			Name:             "Benchmark fake",
			ContextLength:    128_000,
			MaxOutputTokens:  8_192,
			InputCentsPer1M:  100,
			OutputCentsPer1M: 400,
			Providers:        []string{"fake"},
			UpstreamModel:    upstreamModel,
		}},
		Providers: []inference.ModelProvider{provider},
	}
	if g.p, err = perceptron.New(ctx, pc); err != nil {
		return nil, fmt.Errorf("%s platform: %w", backend, err)
	}
	if _, err := g.p.Billing.Ledger().Credit(ctx, billing.Posting{
		Account: wallet, Type: billing.Purchase, Amount: funds, Description: "gatewaybench funds", At: time.Now(),
	}); err != nil {
		return nil, fmt.Errorf("%s: funding the wallet: %w", backend, err)
	}
	master := auth.Principal{Address: wallet, Kind: auth.MasterKey}
	k, err := g.p.Auth.GenerateClientKey(ctx, master, "gatewaybench")
	if err != nil {
		return nil, fmt.Errorf("%s: client key: %w", backend, err)
	}
	g.key = k.Key
	h := http.Handler(httpserver.New(g.p, httpserver.Options{}))
	if control {
		mux := http.NewServeMux()
		mux.HandleFunc("GET "+controlPrefix+"verify", g.verifyHandler)
		h = withControl(h, mux)
	}
	if g.http, err = serve("gateway-"+backend, h); err != nil {
		return nil, err
	}
	return g, nil
}

// baseURL is the gateway's http://127.0.0.1:PORT.
func (g *gateway) baseURL() string { return g.http.url }

// clientKey is the key the load generator sends as its bearer token.
func (g *gateway) clientKey() string { return g.key }

// verifyHandler serves GET /_bench/verify?succeeded=N: 200 and "ok" if
// verify passes for N successful requests, 409 and the error text if not.
func (g *gateway) verifyHandler(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("succeeded"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "succeeded must be a count", http.StatusBadRequest)
		return
	}
	if err := g.verify(r.Context(), n); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	fmt.Fprintln(w, "ok")
}

// verify checks the ledger after the run: exactly one ChatInference entry
// per successful request, and no hold left open.
func (g *gateway) verify(ctx context.Context, succeeded int64) error {
	l := g.p.Billing.Ledger()
	entries, err := billing.AllEntries(ctx, l, wallet, billing.EntryFilter{Types: []billing.TxType{billing.ChatInference}})
	if err != nil {
		return err
	}
	bal, err := l.Balance(ctx, wallet)
	if err != nil {
		return err
	}
	var spent billing.MicroCents
	for _, e := range entries {
		spent -= e.Amount
	}
	var errs []error
	if int64(len(entries)) != succeeded {
		errs = append(errs, fmt.Errorf("%s: %d ChatInference entries for %d successful requests", g.backend, len(entries), succeeded))
	}
	if bal.Held != 0 {
		errs = append(errs, fmt.Errorf("%s: %d micro-cents still held after the run", g.backend, bal.Held))
	}
	if bal.Total != funds-spent {
		errs = append(errs, fmt.Errorf("%s: balance %d, want funds minus entries %d", g.backend, bal.Total, funds-spent))
	}
	return errors.Join(errs...)
}

// close stops the server and the platform, closes the store it was given
// and removes the temp files or drops the schema.
func (g *gateway) close() error {
	var errs []error
	if g.http != nil {
		errs = append(errs, g.http.close())
	}
	if g.p != nil {
		errs = append(errs, g.p.Close())
	}
	if g.store != nil {
		errs = append(errs, g.store.Close())
	}
	if g.schema != "" {
		errs = append(errs, dropSchema(g.pgURL, g.schema))
	}
	for _, f := range g.files {
		_ = os.Remove(f)
	}
	if g.dir != "" {
		errs = append(errs, os.RemoveAll(g.dir))
	}
	return errors.Join(errs...)
}
