package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

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
	for _, bad := range [][]string{{"-c", "0"}, {"-backends", "postgres"}, {"-modes", "ws"}, {"-latency", "fast"}, {"-rounds", "0"}} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", bad)
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
