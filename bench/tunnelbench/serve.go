package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/storage"
)

// runServer is the child: a platform on the store dsn names (memory: or
// sqlite:PATH, as perceptron-server's -db) with its API and ingress
// served as the reference server serves them, plus two bench routes:
// POST /bench/setup?n=N&port=P (N funded wallets with a client key and a
// domain on port P each) and GET /bench/rss.
func runServer(dsn string, plainIngress bool) error {
	ctx := context.Background()
	store, err := storage.Open(ctx, dsn, storage.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	p, err := perceptron.New(ctx, perceptron.Config{Store: store, Domains: perceptron.DomainsConfig{PortMin: 1, PortMax: 65535}})
	if err != nil {
		return err
	}
	defer p.Close()
	api := http.NewServeMux()
	api.Handle("/api/", httpserver.New(p, httpserver.Options{}))
	api.HandleFunc("POST /bench/setup", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		port, _ := strconv.Atoi(r.URL.Query().Get("port"))
		out := make([]map[string]string, 0, n)
		for range n {
			d, err := benchDomain(r.Context(), p, port)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			out = append(out, d)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	api.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	api.HandleFunc("GET /bench/rss", func(w http.ResponseWriter, r *http.Request) {
		b, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				fmt.Fprintln(w, kb*1024)
			}
		}
	})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// One load generator and many tunnels, all from one address: no
	// per-address limits.
	lim := httpserver.ConnLimits{MaxConns: -1, MaxConnsPerAddr: -1}
	asrv := httpserver.NewServer(api, httpserver.ServerOptions{})
	isrv := httpserver.NewServer(httpserver.NewIngress(p, httpserver.IngressOptions{RateLimit: httpserver.NoRateLimit{}}), httpserver.ServerOptions{})
	go asrv.Serve(httpserver.LimitListener(aln, lim))
	// As perceptron-server serves its ingress: the framing checks of
	// request heads over the connection limits.
	iln = httpserver.LimitListener(iln, lim)
	if !plainIngress {
		iln = ingressListener(iln)
	}
	go isrv.Serve(iln)
	fmt.Printf("http://%s http://%s\n", aln.Addr(), iln.Addr())
	select {}
}

// benchDomain makes a funded wallet with a client key and a domain on
// port, through the Go API.
func benchDomain(ctx context.Context, p *perceptron.Platform, port int) (map[string]string, error) {
	addr := "0x" + strings.ReplaceAll(uuid.NewString(), "-", "") + "00000000"
	if _, err := p.Billing.Ledger().Credit(ctx, billing.Posting{Account: addr, Type: billing.Purchase, Amount: billing.FromCents(1000), Description: "bench"}); err != nil {
		return nil, err
	}
	// In process, a master principal of the wallet (no login needed).
	k, err := p.Auth.GenerateClientKey(ctx, auth.Principal{Address: addr, Kind: auth.MasterKey}, "bench")
	if err != nil {
		return nil, err
	}
	d, err := p.Domains.Reserve(ctx, addr, "b"+strings.ReplaceAll(uuid.NewString(), "-", "")[:20])
	if err != nil {
		return nil, err
	}
	if _, err := p.Domains.Assign(ctx, addr, d.ID, port); err != nil {
		return nil, err
	}
	return map[string]string{"id": d.ID, "key": k.Key, "host": p.Domains.FullDomain(d.Subdomain)}, nil
}
