// Command gatewaybench measures what the Perceptron gateway adds to a chat
// completion: latency (p50, p99) and throughput, against calling the same
// upstream directly, in one run so that both see the same noisy machine.
//
// It starts, all on loopback:
//
//   - the fake OpenAI-compatible upstream of inference/inferencetest, with a
//     fixed latency, a fixed number of completion tokens and, for streams, a
//     fixed number of chunks;
//   - a bare reverse proxy in front of it (httputil.ReverseProxy), the
//     floor of any HTTP gateway;
//   - one Perceptron platform per storage backend (memory, SQLite on a
//     temporary file and, if asked for, PostgreSQL on a schema of its own),
//     each served by httpserver in front of that upstream, with a funded
//     wallet and a client key;
//
// then drives each target with a closed-loop load generator (C workers on
// one shared keep-alive Transport), non-streaming and streaming, at each
// concurrency. The direct baseline and the gateways are measured in
// alternating rounds of every cell, so that slow phases of the machine hit
// them alike. Every response is checked (status 200, the exact answer text
// and usage, and for streams a well-formed SSE stream ending in
// "data: [DONE]"); failures are counted and reported, never timed as
// successes. At the end the tool checks that each gateway billed exactly
// one ChatInference entry per successful request and left no hold open.
//
// # PostgreSQL
//
// The postgres backend is not in the default -backends list, since it
// needs a server: name one with -postgres URL (a postgres:// URL or a
// key=value DSN), which defaults to the environment variable
// PERCEPTRON_TEST_POSTGRES, as the repository's PostgreSQL tests use.
// bash .ci/postgres.sh starts a throwaway local server and prints the
// export line:
//
//	eval "$(bash .ci/postgres.sh)"
//	go run ./bench/gatewaybench -backends proxy,memory,sqlite,postgres
//
// Each gateway on PostgreSQL creates a schema of its own on that server
// (gatewaybench_<unix nanoseconds>_<pid>), so that the ledger check sees
// only the run's own entries, with a pool of up to 64 connections, and
// drops the schema when it closes (in the split layout, when its process
// exits: on stdin EOF, SIGTERM or an interrupt; the child gets the URL on
// its command line). A process killed outright leaves its schema behind,
// to drop by hand. The report names the server, its version and its
// durability settings (the throwaway server runs with fsync and
// synchronous_commit off, which flatters every commit).
//
// # Layouts
//
// With -layout inproc (the default), the load generator and every server
// share one process: one heap, one garbage collector, one scheduler with
// GOMAXPROCS threads. It is the simplest to profile (one -cpuprofile, with
// -mutexprofile and -blockprofile too, samples labelled by target) and
// the layout of the recorded runs so far, but the servers pay for each
// other's garbage and goroutines, and the gateway competes with the load
// generator inside one runtime.
//
// With -layout split, the upstream, the proxy and each gateway run in a
// child process of their own (this binary re-executed with a hidden -role
// flag), and the load generator stays in the parent: each has its own heap
// and scheduler, as a gateway deployed as its own process (or machine)
// does. Use it for figures meant to stand for a deployment. Children write
// FILE.<role> for -cpuprofile; they exit when the parent does.
//
// -pin (with -layout split, Linux only, at least two CPUs) goes further:
// the gateway and proxy processes run on one CPU, the load generator and
// the upstream on another, every process with GOMAXPROCS 1. Direct then
// measures the client and upstream on their CPU, the other idle, and each
// gateway the same client and upstream with the gateway given a core of
// its own: what a gateway on its own core adds, on the same client and
// upstream budget. Use it to compare the gateway with the proxy floor
// without the scheduling noise of processes migrating between CPUs.
//
// It prints a Markdown table: per cell the direct and gateway p50/p99
// (latency of the whole response, or time to the first SSE event for
// streams), throughput, the added latency (gateway minus direct, per
// percentile) and the throughput ratio gateway/direct. The header says the
// layout, the pinning and each process's GOMAXPROCS.
//
//	go run ./bench/gatewaybench -duration 6s -rounds 3
//	go build -o /tmp/gwb ./bench/gatewaybench && /tmp/gwb -layout split -pin
//	/tmp/gwb -backends proxy,sqlite,postgres -postgres postgres://user@host/db
//
// See BENCHMARKS.md at the repository root for recorded runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is the tool's command line.
type config struct {
	duration    time.Duration   // measured time per target per cell
	requests    int             // if > 0, requests per target per cell instead of duration
	warmup      time.Duration   // per target per cell, discarded
	firstWarmup int             // requests per target and mode before the first cell
	rounds      int             // alternating rounds per cell
	concurrency []int           // workers
	backends    []string        // "proxy", "memory", "sqlite", "postgres"
	modes       []mode          // json, stream
	latencies   []time.Duration // upstream latency settings
	tokens      int             // completion tokens per answer
	chunks      int             // content chunks per stream
	chunkDelay  time.Duration   // between chunks
	sqliteDir   string          // where the SQLite file goes; "" means a temp dir
	postgresURL string          // the PostgreSQL server of the postgres backend
	layout      string          // layoutInproc or layoutSplit
	pin         bool            // split only: pin the processes to two CPUs
	cpuProfile  string
	mutexProf   string
	blockProf   string
	quiet       bool
}

func main() {
	if isChild(os.Args[1:]) {
		os.Exit(childMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gatewaybench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := runWithProfiles(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gatewaybench:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("gatewaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                           config
		conc, backends, modes, lats   string
		mutexProfile, blockProfile    string
		cpuProfile, sqliteDir, layout string
		postgresURL                   string
		duration, warmup, chunkDelay  time.Duration
		requests, rounds, tok, chunks int
		quiet, pin                    bool
	)
	fs.DurationVar(&duration, "duration", 6*time.Second, "measured time per target per cell (split over -rounds)")
	fs.IntVar(&requests, "requests", 0, "if > 0, measure this many requests per target per cell instead of -duration")
	fs.DurationVar(&warmup, "warmup", 500*time.Millisecond, "warm-up per target per cell, not measured")
	fs.IntVar(&rounds, "rounds", 3, "alternating rounds per cell (direct, memory, sqlite, direct, ...)")
	fs.StringVar(&conc, "c", "1,32", "comma-separated concurrencies")
	fs.StringVar(&backends, "backends", "proxy,memory,sqlite", "comma-separated targets besides direct: proxy (a bare reverse proxy, the floor of any HTTP gateway), memory, sqlite, postgres (the gateway on that backend; postgres needs -postgres)")
	fs.StringVar(&modes, "modes", "json,stream", "comma-separated modes: json (non-streaming), stream")
	fs.StringVar(&lats, "latency", "0,1ms", "comma-separated upstream latencies (time to first byte of the fake)")
	fs.IntVar(&tok, "tokens", 64, "completion tokens per answer")
	fs.IntVar(&chunks, "chunks", 16, "content chunks per streamed answer")
	fs.DurationVar(&chunkDelay, "chunk-delay", 0, "upstream delay between stream chunks")
	fs.StringVar(&sqliteDir, "sqlite-dir", "", "directory for the SQLite database file (default: a new temp dir)")
	fs.StringVar(&postgresURL, "postgres", os.Getenv(envPostgres), "PostgreSQL server for the postgres backend, a postgres:// URL or DSN (default: $"+envPostgres+"); each gateway on it creates a schema of its own and drops it at the end")
	fs.StringVar(&layout, "layout", layoutInproc, "where the servers run: inproc (all in this process, with the load generator) or split (each server in a child process of its own, as deployed)")
	fs.BoolVar(&pin, "pin", false, "with -layout split, Linux only: pin the gateway and proxy processes to one CPU, the load generator and the upstream to another, each process with GOMAXPROCS 1")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (samples are labelled target=direct|proxy|gateway-memory|gateway-sqlite|gateway-postgres on the server side and client=... on the load generator); with -layout split, this file profiles the load generator and each child writes FILE.<role> (FILE.upstream, FILE.proxy, FILE.gateway-sqlite, ...)")
	fs.StringVar(&mutexProfile, "mutexprofile", "", "write a mutex contention profile to this file (-layout inproc only)")
	fs.StringVar(&blockProfile, "blockprofile", "", "write a blocking profile to this file (-layout inproc only)")
	fs.BoolVar(&quiet, "q", false, "no progress on stderr")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg = config{
		duration: duration, requests: requests, warmup: warmup, firstWarmup: 200, rounds: rounds,
		tokens: tok, chunks: chunks, chunkDelay: chunkDelay, sqliteDir: sqliteDir, postgresURL: postgresURL, layout: layout, pin: pin,
		cpuProfile: cpuProfile, mutexProf: mutexProfile, blockProf: blockProfile, quiet: quiet,
	}
	var err error
	if cfg.concurrency, err = parseInts(conc); err != nil {
		return config{}, fmt.Errorf("-c: %w", err)
	}
	for _, b := range splitList(backends) {
		if b != "memory" && b != "sqlite" && b != "postgres" && b != "proxy" {
			return config{}, fmt.Errorf("-backends: unknown backend %q", b)
		}
		cfg.backends = append(cfg.backends, b)
	}
	if slices.Contains(cfg.backends, "postgres") {
		if err := checkPostgresURL(cfg.postgresURL); err != nil {
			return config{}, err
		}
	}
	for _, m := range splitList(modes) {
		md, err := parseMode(m)
		if err != nil {
			return config{}, fmt.Errorf("-modes: %w", err)
		}
		cfg.modes = append(cfg.modes, md)
	}
	for _, l := range splitList(lats) {
		d, err := time.ParseDuration(l)
		if l == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			return config{}, fmt.Errorf("-latency: bad duration %q", l)
		}
		cfg.latencies = append(cfg.latencies, d)
	}
	switch {
	case cfg.rounds < 1:
		return config{}, fmt.Errorf("-rounds must be at least 1")
	case cfg.duration <= 0 && cfg.requests <= 0:
		return config{}, fmt.Errorf("-duration or -requests must be positive")
	case cfg.tokens < 1 || cfg.chunks < 1:
		return config{}, fmt.Errorf("-tokens and -chunks must be at least 1")
	case len(cfg.concurrency) == 0 || len(cfg.modes) == 0 || len(cfg.latencies) == 0:
		return config{}, fmt.Errorf("-c, -modes and -latency need at least one value")
	case cfg.layout != layoutInproc && cfg.layout != layoutSplit:
		return config{}, fmt.Errorf("-layout: unknown layout %q (want inproc or split)", cfg.layout)
	case cfg.pin && cfg.layout != layoutSplit:
		return config{}, fmt.Errorf("-pin needs -layout split")
	case cfg.pin && !canPin:
		return config{}, fmt.Errorf("-pin needs Linux (sched_setaffinity), not %s", runtime.GOOS)
	case cfg.layout == layoutSplit && (cfg.mutexProf != "" || cfg.blockProf != ""):
		return config{}, fmt.Errorf("-mutexprofile and -blockprofile need -layout inproc")
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad value %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// runWithProfiles runs the benchmark with the requested profiles.
func runWithProfiles(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	if cfg.mutexProf != "" {
		runtime.SetMutexProfileFraction(5)
	}
	if cfg.blockProf != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	err := run(ctx, cfg, stdout, stderr)
	for _, p := range []struct{ name, file string }{{"mutex", cfg.mutexProf}, {"block", cfg.blockProf}} {
		if p.file == "" {
			continue
		}
		f, ferr := os.Create(p.file)
		if ferr != nil {
			return ferr
		}
		if werr := pprof.Lookup(p.name).WriteTo(f, 0); werr != nil {
			f.Close()
			return werr
		}
		if cerr := f.Close(); cerr != nil {
			return cerr
		}
	}
	return err
}
