package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// TestMain runs a child role of the split layout when the test binary is
// re-executed as one (os.Executable is the test binary in tests).
func TestMain(m *testing.M) {
	if isChild(os.Args[1:]) {
		os.Exit(childMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestPercentile(t *testing.T) {
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
	var s []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s = append(s, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0.1, 1}, {99.5, 100}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one sample = %v, want 7", got)
	}
}

func TestReadStream(t *testing.T) {
	const want = "The quick"
	ok := "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"The\"}}]}\n\n" +
		": keep-alive comment\n\n" +
		"data:{\"choices\":[{\"delta\":{\"content\":\" quick\"}}]}\r\n\r\n" +
		"data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n" +
		"data: [DONE]\n\n"
	if _, err := readStream(strings.NewReader(ok), time.Now(), want, 2); err != nil {
		t.Fatalf("good stream refused: %v", err)
	}
	for name, body := range map[string]string{
		"no [DONE]":        strings.TrimSuffix(ok, "data: [DONE]\n\n"),
		"wrong text":       strings.Replace(ok, "quick", "slow", 1),
		"no usage":         strings.Replace(ok, `"usage":{"completion_tokens":2}`, `"x":1`, 1),
		"wrong usage":      strings.Replace(ok, `"completion_tokens":2`, `"completion_tokens":3`, 1),
		"error event":      strings.Replace(ok, "data: [DONE]", `data: {"error":{"message":"credit limit reached"}}`+"\n\ndata: [DONE]", 1),
		"event after DONE": ok + "data: {}\n\n",
		"not JSON":         strings.Replace(ok, `{"choices":[],`, `{choices`, 1),
		"not SSE":          "HTTP/1.1 garbage\n",
		"empty":            "",
	} {
		if _, err := readStream(strings.NewReader(body), time.Now(), want, 2); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckCompletion(t *testing.T) {
	good := `{"object":"chat.completion","choices":[{"message":{"content":"The quick"}}],"usage":{"completion_tokens":2}}`
	if err := checkCompletion([]byte(good), "The quick", 2); err != nil {
		t.Fatalf("good answer refused: %v", err)
	}
	for name, body := range map[string]string{
		"error":      `{"error":{"message":"insufficient credits"}}`,
		"wrong text": strings.Replace(good, "quick", "slow", 1),
		"no usage":   strings.Replace(good, `,"usage":{"completion_tokens":2}`, "", 1),
		"no choices": `{"object":"chat.completion","choices":[],"usage":{"completion_tokens":2}}`,
		"not JSON":   "<html>",
	} {
		if err := checkCompletion([]byte(body), "The quick", 2); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-c", "1,8", "-latency", "0,250us", "-modes", "stream", "-backends", "sqlite"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.concurrency) != 2 || cfg.concurrency[1] != 8 || cfg.latencies[1] != 250*time.Microsecond ||
		len(cfg.modes) != 1 || cfg.modes[0] != modeStream || len(cfg.backends) != 1 {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg.layout != layoutInproc || cfg.pin {
		t.Errorf("default layout %q, pin %v; want inproc, false", cfg.layout, cfg.pin)
	}
	for _, bad := range [][]string{
		{"-c", "0"}, {"-backends", "mysql"}, {"-modes", "ws"}, {"-latency", "fast"}, {"-rounds", "0"},
		{"-layout", "threads"}, {"-pin"}, {"-layout", "inproc", "-pin"},
		{"-layout", "split", "-mutexprofile", "m.out"}, {"-layout", "split", "-blockprofile", "b.out"},
		{"-role", "upstream"}, // hidden: only as the first argument, which main checks before parsing
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cfg, err = parseFlags([]string{"-layout", "split", "-pin"}, &bytes.Buffer{})
	switch {
	case !canPin && err == nil:
		t.Errorf("-pin accepted on %s", runtime.GOOS)
	case canPin && err != nil:
		t.Errorf("-layout split -pin: %v", err)
	case canPin && (cfg.layout != layoutSplit || !cfg.pin):
		t.Errorf("-layout split -pin parsed as %q, %v", cfg.layout, cfg.pin)
	}
}

// TestParseFlagsPostgres checks where the postgres backend finds its
// server: -postgres, else PERCEPTRON_TEST_POSTGRES, else a clear error at
// flag parsing.
func TestParseFlagsPostgres(t *testing.T) {
	const flagURL, envURL = "postgres://flag@127.0.0.1:5432/bench", "postgres://env@127.0.0.1:5432/bench"
	t.Setenv(envPostgres, "")
	_, err := parseFlags([]string{"-backends", "proxy,postgres"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "-postgres") || !strings.Contains(err.Error(), envPostgres) {
		t.Errorf("-backends postgres without a server: %v; want an error naming -postgres and %s", err, envPostgres)
	}
	if _, err := parseFlags([]string{"-backends", "postgres", "-postgres", "host=127.0.0.1 port=notaport"}, &bytes.Buffer{}); err == nil {
		t.Error("-postgres with a bad port accepted")
	}
	if cfg, err := parseFlags([]string{"-backends", "memory,sqlite"}, &bytes.Buffer{}); err != nil || cfg.postgresURL != "" {
		t.Errorf("no postgres, no server: %v, URL %q", err, cfg.postgresURL)
	}
	cfg, err := parseFlags([]string{"-backends", "postgres", "-postgres", flagURL}, &bytes.Buffer{})
	if err != nil || cfg.postgresURL != flagURL || !slices.Equal(cfg.backends, []string{"postgres"}) {
		t.Errorf("-postgres %s: %v, %+v", flagURL, err, cfg)
	}
	if cfg, err := parseFlags(nil, &bytes.Buffer{}); err != nil || slices.Contains(cfg.backends, "postgres") {
		t.Errorf("default backends %v (%v); want no postgres, which needs a server", cfg.backends, err)
	}

	t.Setenv(envPostgres, envURL)
	if cfg, err := parseFlags([]string{"-backends", "sqlite,postgres"}, &bytes.Buffer{}); err != nil || cfg.postgresURL != envURL {
		t.Errorf("with %s set: %v, URL %q; want %q", envPostgres, err, cfg.postgresURL, envURL)
	}
	if cfg, err := parseFlags([]string{"-backends", "postgres", "-postgres", flagURL}, &bytes.Buffer{}); err != nil || cfg.postgresURL != flagURL {
		t.Errorf("-postgres over %s: %v, URL %q; want %q", envPostgres, err, cfg.postgresURL, flagURL)
	}
	if _, err := parseFlags([]string{"-backends", "postgres", "-postgres", ""}, &bytes.Buffer{}); err == nil {
		t.Errorf("-postgres \"\" accepted with %s set: the flag wins, and names no server", envPostgres)
	}
}

// TestChildFlags checks a gateway child's command line for the postgres
// backend: it needs -postgres (the parent always passes it).
func TestChildFlags(t *testing.T) {
	var stderr bytes.Buffer
	code := childMain([]string{"-role", "gateway", "-upstream", "http://127.0.0.1:1", "-backend", "postgres"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "-postgres") {
		t.Errorf("gateway child on postgres without -postgres: exit %d, %q; want 2 and a word on -postgres", code, stderr.String())
	}
	stderr.Reset()
	code = childMain([]string{"-role", "gateway", "-upstream", "http://127.0.0.1:1", "-backend", "mysql"}, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "unknown backend") {
		t.Errorf("gateway child on mysql: exit %d, %q; want 2, unknown backend", code, stderr.String())
	}
}

func TestIsChild(t *testing.T) {
	for args, want := range map[string]bool{
		"-role upstream": true, "--role=proxy": true, "-role=gateway -backend memory": true,
		"": false, "-layout split": false, "-q -role upstream": false, "-roles x": false,
	} {
		if got := isChild(strings.Fields(args)); got != want {
			t.Errorf("isChild(%q) = %v, want %v", args, got, want)
		}
	}
}

// TestRunSmoke runs the whole tool for a handful of requests per cell:
// every target answers, is checked, and the ledgers add up.
func TestRunSmoke(t *testing.T) {
	cfg := config{
		requests: 8, rounds: 2, firstWarmup: 4,
		concurrency: []int{1, 3}, backends: []string{"memory", "sqlite"},
		modes: []mode{modeJSON, modeStream}, latencies: []time.Duration{0},
		tokens: 12, chunks: 4, sqliteDir: t.TempDir(), quiet: true,
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, s := range []string{"| 0 ms | json | 1 | sqlite |", "| 0 ms | stream | 3 | memory |", "Ledger check passed"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
}

// TestRunPostgres runs the whole tool in one process for a handful of
// requests per cell on the postgres backend: the report has its rows and
// names the server, the ledger of the run's own schema adds up, and the
// schema is dropped at the end.
func TestRunPostgres(t *testing.T) {
	url := requirePostgres(t)
	before := benchSchemas(t, url)
	cfg := config{
		requests: 8, rounds: 2, firstWarmup: 4,
		concurrency: []int{1, 3}, backends: []string{"proxy", "postgres"},
		modes: []mode{modeJSON, modeStream}, latencies: []time.Duration{0},
		tokens: 12, chunks: 4, postgresURL: url, quiet: true,
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, s := range []string{
		"Database: PostgreSQL ", "schema of its own (" + schemaPrefix,
		"| 0 ms | json | 1 | postgres |", "| 0 ms | stream | 3 | postgres |", "| 0 ms | stream | 3 | gateway-postgres | 8 | 0 |",
		"Ledger check passed",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
	if left := newSchemas(before, benchSchemas(t, url)); len(left) > 0 {
		t.Errorf("schemas left after the run: %v", left)
	}
}

// TestLoadCountsFailures checks that refused requests are errors, not
// fast successes.
func TestLoadCountsFailures(t *testing.T) {
	fake := inferencetest.New(inferencetest.Config{Status: 500, NoRecord: true})
	up, err := serve("direct", fake)
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	tg := newTarget("direct", up.url+"/v1/chat/completions", "", upstreamModel, 8, inferencetest.Text(8), true)
	c := newClient(2)
	for _, m := range []mode{modeJSON, modeStream} {
		r := load(context.Background(), c, tg, m, 2, 0, 6)
		if r.ok() != 0 || r.errs != 6 || !strings.Contains(r.firstErr, "status 500") {
			t.Errorf("%s: ok %d, errors %d, first %q; want 0, 6, status 500", m, r.ok(), r.errs, r.firstErr)
		}
	}
}

// TestRunSplit runs the whole tool in the split layout for a moment: every
// server in a child process (this test binary, see TestMain), the report
// says so, the ledgers add up, and no child outlives the run nor leaves
// its SQLite files behind.
func TestRunSplit(t *testing.T) {
	testRunSplit(t, false, "")
}

// TestRunSplitPostgres runs the split layout with a gateway on PostgreSQL
// (its child gets the server with -postgres) and checks that the child
// drops its schema when it exits.
func TestRunSplitPostgres(t *testing.T) {
	testRunSplit(t, false, requirePostgres(t))
}

// TestRunSplitPinned does the same with -pin, and checks that the run
// restores this process's CPUs and GOMAXPROCS.
func TestRunSplitPinned(t *testing.T) {
	if !canPin {
		t.Skipf("-pin is Linux only, not %s", runtime.GOOS)
	}
	if n := len(cpusOf()); n < 2 {
		t.Skipf("-pin needs 2 CPUs, this process has %d", n)
	}
	testRunSplit(t, true, "")
}

// testRunSplit runs the split layout, pinned or not, on the default
// backends or, with a PostgreSQL server at pgURL, on proxy and postgres.
func testRunSplit(t *testing.T, pin bool, pgURL string) {
	args := []string{"-layout", "split", "-duration", "200ms", "-warmup", "20ms", "-rounds", "1", "-c", "1,2", "-latency", "0", "-tokens", "12", "-chunks", "4", "-q"}
	if pin {
		args = append(args, "-pin")
	}
	var schemasBefore []string
	if pgURL != "" {
		args = append(args, "-backends", "proxy,postgres", "-postgres", pgURL)
		schemasBefore = benchSchemas(t, pgURL)
	}
	cfg, err := parseFlags(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.firstWarmup = 4
	cfg.sqliteDir = t.TempDir()
	procs, cpus := runtime.GOMAXPROCS(0), cpusOf()
	before := childPIDs(t)

	var out, errOut bytes.Buffer
	if err := run(context.Background(), cfg, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	want := []string{"Layout: split (each server in a process of its own", "| 0 ms | json | 1 | proxy |", "Ledger check passed"}
	switch {
	case pgURL != "":
		want = append(want, "Database: PostgreSQL ", "| 0 ms | json | 2 | postgres |", "| 0 ms | stream | 1 | postgres |",
			"not pinned", "gateway-postgres "+strconv.Itoa(runtime.GOMAXPROCS(0)))
	case pin:
		want = append(want, "| 0 ms | json | 2 | sqlite |", "| 0 ms | stream | 2 | memory |", "pinned: the gateways and the proxy on CPU ",
			"GOMAXPROCS per process: load generator 1 (CPU ", "upstream 1 (CPU ", "proxy 1 (CPU ", "gateway-memory 1 (CPU ", "gateway-sqlite 1 (CPU ")
	default:
		want = append(want, "| 0 ms | json | 2 | sqlite |", "| 0 ms | stream | 2 | memory |", "not pinned", "gateway-sqlite "+strconv.Itoa(runtime.GOMAXPROCS(0)))
	}
	for _, s := range want {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
	for _, pid := range childPIDs(t) {
		if !slices.Contains(before, pid) {
			t.Errorf("child process %d left after the run", pid)
		}
	}
	if ents, err := os.ReadDir(cfg.sqliteDir); err != nil || len(ents) > 0 {
		t.Errorf("SQLite dir after the run: %v, %v; want empty", ents, err)
	}
	if pgURL != "" {
		if left := newSchemas(schemasBefore, benchSchemas(t, pgURL)); len(left) > 0 {
			t.Errorf("schemas left after the run: %v", left)
		}
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after the run, %d before", got, procs)
	}
	if got := cpusOf(); !slices.Equal(got, cpus) {
		t.Errorf("CPUs %v after the run, %v before", got, cpus)
	}
}

// TestChildSIGTERM checks that a gateway child stops on SIGTERM, exits 0
// and removes its SQLite files.
func TestChildSIGTERM(t *testing.T) {
	dir := t.TempDir()
	testChildSIGTERM(t, config{sqliteDir: dir}, "sqlite", func() []string {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	})
}

// TestChildSIGTERMPostgres checks that a gateway child on PostgreSQL has a
// schema of its own while it runs, and drops it when SIGTERM stops it.
func TestChildSIGTERMPostgres(t *testing.T) {
	url := requirePostgres(t)
	before := benchSchemas(t, url)
	testChildSIGTERM(t, config{postgresURL: url}, "postgres", func() []string {
		return newSchemas(before, benchSchemas(t, url))
	})
}

// testChildSIGTERM starts a gateway child on backend with cfg's database
// options, checks its ledger check, stops it with SIGTERM and checks that
// it exits 0. databases lists what the gateway's database leaves on disk
// or on the server: something while the child runs, nothing after.
func testChildSIGTERM(t *testing.T, cfg config, backend string, databases func() []string) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on Windows")
	}
	ctx := context.Background()
	s, err := newSplit(cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.upstream(ctx, inferencetest.Config{NoRecord: true})
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	g, err := s.gateway(ctx, backend, up.baseURL())
	if err != nil {
		t.Fatal(err)
	}
	c := g.(*child)
	defer c.close()
	if len(databases()) == 0 {
		t.Fatalf("no %s database while the gateway runs", backend)
	}
	if err := c.verify(ctx, 0); err != nil {
		t.Errorf("verify with no request: %v", err)
	}
	if err := c.verify(ctx, 1); err == nil || !strings.Contains(err.Error(), "0 ChatInference entries for 1 successful requests") {
		t.Errorf("verify with a request the ledger has not seen: %v", err)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.drained:
	case <-time.After(childExitTimeout):
		t.Fatal("the gateway child did not exit on SIGTERM")
	}
	if err := c.close(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if left := databases(); len(left) > 0 {
		t.Errorf("%s database left after the child exited: %v", backend, left)
	}
}

// requirePostgres returns the PostgreSQL server of PERCEPTRON_TEST_POSTGRES,
// or skips the test without one, as the repository's PostgreSQL tests do
// (CI always sets it; see .ci/postgres.sh).
func requirePostgres(t *testing.T) string {
	t.Helper()
	url := os.Getenv(envPostgres)
	if url == "" {
		t.Skip(envPostgres + " is not set; CI sets it to a throwaway server")
	}
	return url
}

// benchSchemas lists the schemas on the server at url whose names start
// with schemaPrefix, the gateways' schemas.
func benchSchemas(t *testing.T, url string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1) ORDER BY 1`, schemaPrefix)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// newSchemas lists the schemas of after that are not in before.
func newSchemas(before, after []string) []string {
	var out []string
	for _, s := range after {
		if !slices.Contains(before, s) {
			out = append(out, s)
		}
	}
	return out
}

// childPIDs lists the processes whose parent is this one, from /proc
// (nil where there is no /proc).
func childPIDs(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == self {
			pids = append(pids, pid)
		}
	}
	return pids
}
