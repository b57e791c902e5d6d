// Command perceptron-server is the reference Perceptron server: the REST API
// of the httpserver package over a platform built from flags and a config
// file.
//
//	perceptron-server -dev                         # offline dev mode, SQLite file perceptron.db
//	perceptron-server -dev -db memory: -addr 127.0.0.1:9000
//	perceptron-server -db postgres://user@host/db -config perceptron.json
//
// Flags:
//
//	-addr    listen address (default 127.0.0.1:8080)
//	-db      memory:, sqlite:PATH (default sqlite:perceptron.db) or a postgres:// URL
//	-config  a JSON config file for everything else (see config.go)
//	-dev     offline development mode
//	-ingress-addr
//	         the public ingress of reserved domains: requests for
//	         SUBDOMAIN.BASE_DOMAIN go through their tunnels (default
//	         127.0.0.1:8081; "off" disables it)
//	-max-conns, -max-conns-per-addr
//	         connection limits of each listener (default 4096 and 256)
//
// It logs with log/slog to standard error, prints the URL it listens on,
// and shuts down gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/dev"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/storage"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "perceptron-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perceptron-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	db := fs.String("db", "sqlite:perceptron.db", "database: memory:, sqlite:PATH, or a postgres:// URL")
	configPath := fs.String("config", "", "JSON config file")
	devMode := fs.Bool("dev", false, "offline development mode")
	ingressAddr := fs.String("ingress-addr", "127.0.0.1:8081", `public ingress of reserved domains ("off" disables it)`)
	maxConns := fs.Int("max-conns", httpserver.DefaultMaxConns, "most connections open at once (negative: no limit)")
	maxPerAddr := fs.Int("max-conns-per-addr", httpserver.DefaultMaxConnsPerAddr, "most connections of one client address, an IPv4 address or IPv6 /64 (negative: no limit); raise it behind a reverse proxy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	pcfg, err := cfg.platformConfig()
	if err != nil {
		return err
	}
	if *devMode {
		pcfg = dev.Enable(pcfg) // the dev model, a seeded release, the dev chain
	}
	pcfg.Logger = log

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	store, err := storage.Open(ctx, *db, storage.Options{Logger: log})
	if err != nil {
		return err
	}
	defer store.Close() // after the platform's Close, which flushes to it
	pcfg.Store = store
	p, err := perceptron.New(ctx, pcfg)
	if err != nil {
		return err
	}
	defer p.Close()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := httpserver.NewServer(httpserver.New(p, httpserver.Options{}), httpserver.ServerOptions{})
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	ln = httpserver.LimitListener(ln, httpserver.ConnLimits{MaxConns: *maxConns, MaxConnsPerAddr: *maxPerAddr})
	url := "http://" + ln.Addr().String()
	log.Info("perceptron-server listening", "url", url, "db", redactDSN(*db), "dev", *devMode, "version", p.Version())
	fmt.Fprintf(stdout, "Perceptron listening on %s (try %s/api/health)\n", url, url)

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	servers := []*http.Server{srv}
	if h := httpserver.NewIngress(p, httpserver.IngressOptions{}); h != nil && *ingressAddr != "off" && *ingressAddr != "" {
		iln, err := net.Listen("tcp", *ingressAddr)
		if err != nil {
			return err
		}
		isrv := httpserver.NewServer(h, httpserver.ServerOptions{})
		isrv.ErrorLog = srv.ErrorLog
		iln = httpserver.IngressListener(httpserver.LimitListener(iln, httpserver.ConnLimits{MaxConns: *maxConns, MaxConnsPerAddr: *maxPerAddr}))
		log.Info("ingress listening", "url", "http://"+iln.Addr().String(), "base_domain", p.Domains.BaseDomain())
		fmt.Fprintf(stdout, "Ingress for *.%s listening on http://%s\n", p.Domains.BaseDomain(), iln.Addr())
		go func() { errc <- isrv.Serve(iln) }()
		servers = append(servers, isrv)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
