package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// cell is one measured combination, with a result per target (direct
// first, then the gateways in backend order).
type cell struct {
	latency time.Duration
	mode    mode
	conc    int
	results []result
}

// run sets everything up, measures every cell and prints the report.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	progress := func(format string, args ...any) {
		if !cfg.quiet {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	var pgInfo string
	if slices.Contains(cfg.backends, "postgres") {
		if pgInfo, err = postgresInfo(ctx, cfg.postgresURL); err != nil {
			return err
		}
	}
	var s servers = inproc{backend: cfg.backendOptions()}
	if cfg.layout == layoutSplit {
		sp, err := newSplit(cfg, stderr)
		if err != nil {
			return err
		}
		s = sp
	}
	defer func() { err = errors.Join(err, s.close()) }()
	up, err := s.upstream(ctx, upstreamConfig(cfg, cfg.latencies[0]))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, up.close()) }()

	want := inferencetest.Text(cfg.tokens)
	targets := []*target{newTarget("direct", up.baseURL()+"/v1/chat/completions", "", upstreamModel, cfg.tokens, want, true)}
	var gateways []gatewayServer
	defer func() {
		for _, g := range gateways {
			err = errors.Join(err, g.close())
		}
	}()
	gatewayTargets := map[gatewayServer]*target{}
	for _, b := range cfg.backends {
		if b == "proxy" {
			px, perr := s.proxy(ctx, up.baseURL())
			if perr != nil {
				return perr
			}
			defer func() { err = errors.Join(err, px.close()) }()
			targets = append(targets, newTarget("proxy", px.baseURL()+"/v1/chat/completions", "", upstreamModel, cfg.tokens, want, true))
			continue
		}
		g, err := s.gateway(ctx, b, up.baseURL())
		if err != nil {
			return err
		}
		gateways = append(gateways, g)
		t := newTarget("gateway-"+b, g.baseURL()+"/api/v1/chat/completions", g.clientKey(), modelID, cfg.tokens, want, false)
		targets = append(targets, t)
		gatewayTargets[g] = t
	}
	layout := s.describe()
	client := newClient(slices.Max(cfg.concurrency))
	defer client.CloseIdleConnections()

	// A first warm-up of every target: connections, the tokenizer-free
	// paths, the SQLite page cache.
	for _, t := range targets {
		for _, m := range cfg.modes {
			if r := load(ctx, client, t, m, 4, 0, cfg.firstWarmup); r.errs > 0 {
				return fmt.Errorf("warm-up of %s (%s): %d errors, first: %s", t.name, m, r.errs, r.firstErr)
			}
		}
	}

	started := time.Now()
	var cells []cell
	for _, lat := range cfg.latencies {
		if err := up.setConfig(ctx, upstreamConfig(cfg, lat)); err != nil {
			return err
		}
		for _, m := range cfg.modes {
			for _, conc := range cfg.concurrency {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				progress("measuring upstream latency %v, %s, concurrency %d", lat, m, conc)
				c, err := measure(ctx, client, s, targets, cfg, m, conc)
				if err != nil {
					return err
				}
				c.latency = lat
				cells = append(cells, c)
			}
		}
	}
	total := time.Since(started)

	var verr []error
	for _, g := range gateways {
		verr = append(verr, g.verify(ctx, gatewayTargets[g].ok.Load()))
	}
	report(stdout, cfg, layout, pgInfo, targets, cells, total)
	if err := errors.Join(verr...); err != nil {
		fmt.Fprintf(stdout, "\n**Ledger check FAILED:** %v\n", err)
		return err
	}
	var ok int64
	for _, t := range gatewayTargets {
		ok += t.ok.Load()
	}
	fmt.Fprintf(stdout, "\nLedger check passed: one ChatInference entry per successful gateway request (%d in all, warm-up included), no hold left open, balances add up.\n", ok)
	for _, c := range cells {
		for i, r := range c.results {
			if r.errs > 0 {
				return fmt.Errorf("%s failed %d requests (upstream latency %v, %s, c=%d); first: %s", targets[i].name, r.errs, c.latency, c.mode, c.conc, r.firstErr)
			}
		}
	}
	return nil
}

// backendOptions is where cfg puts the gateways' databases.
func (cfg config) backendOptions() backendOptions {
	return backendOptions{sqliteDir: cfg.sqliteDir, postgresURL: cfg.postgresURL}
}

// measure runs one cell: a warm-up of each target, then cfg.rounds rounds
// in which each target in turn runs for its share of the duration (or of
// the request count). Each slice starts with a garbage collection of every
// process (s.gc).
func measure(ctx context.Context, client *http.Client, s servers, targets []*target, cfg config, m mode, conc int) (cell, error) {
	c := cell{mode: m, conc: conc, results: make([]result, len(targets))}
	for _, t := range targets {
		if cfg.warmup > 0 {
			load(ctx, client, t, m, conc, cfg.warmup, 0)
		}
	}
	d := cfg.duration / time.Duration(cfg.rounds)
	n := 0
	if cfg.requests > 0 {
		n = max(cfg.requests/cfg.rounds, 1)
	}
	for range cfg.rounds {
		for i, t := range targets {
			// Start each slice with a clean heap, not the last one's garbage.
			if err := s.gc(ctx); err != nil {
				return c, err
			}
			c.results[i].add(load(ctx, client, t, m, conc, d, n))
		}
	}
	return c, nil
}

// machine describes the host for the report.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, GOMAXPROCS %d, %s %s/%s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
