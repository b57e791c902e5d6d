package main

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// BenchmarkGateway sends one request at a time over loopback, to the fake
// upstream directly and through a gateway on each backend, so that a CPU
// profile of one sub-benchmark shows where a request's time goes:
//
//	go test -c -o /tmp/gw.test ./bench/gatewaybench
//	cd /tmp && ./gw.test -test.run '^$' -test.bench 'Gateway/sqlite/json' -test.benchtime 5s -test.cpuprofile cpu.out
//	go tool pprof -top -tagfocus target=gateway-sqlite gw.test cpu.out
//
// Server-side samples carry the pprof label target=direct,
// target=gateway-memory, target=gateway-sqlite or target=gateway-postgres
// (the gateway's own call to the upstream is labelled target=direct too,
// as the fake serves it). The postgres sub-benchmarks run only when
// PERCEPTRON_TEST_POSTGRES names a server.
func BenchmarkGateway(b *testing.B) {
	const tokens, chunks = 64, 16
	ctx := context.Background()
	fake := inferencetest.New(inferencetest.Config{CompletionTokens: tokens, Chunks: chunks, NoRecord: true})
	up, err := serve("direct", fake)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { up.close() })
	want := inferencetest.Text(tokens)
	targets := []*target{newTarget("direct", up.url+"/v1/chat/completions", "", upstreamModel, tokens, want, true)}
	backends := []string{"memory", "sqlite"}
	opts := backendOptions{sqliteDir: b.TempDir(), postgresURL: os.Getenv(envPostgres)}
	if opts.postgresURL != "" {
		backends = append(backends, "postgres")
	}
	for _, backend := range backends {
		g, err := startGateway(ctx, backend, up.url, opts, false)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { g.close() })
		targets = append(targets, newTarget(backend, g.http.url+"/api/v1/chat/completions", g.key, modelID, tokens, want, false))
	}
	client := newClient(1)
	b.Cleanup(client.CloseIdleConnections)
	for _, t := range targets {
		for _, m := range []mode{modeJSON, modeStream} {
			b.Run(t.name+"/"+m.String(), func(b *testing.B) { benchTarget(b, client, t, m) })
		}
	}
}

// benchTarget times requests to t one after another and reports the
// latency percentiles besides ns/op.
func benchTarget(b *testing.B, c *http.Client, t *target, m mode) {
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		l, _, err := t.do(ctx, c, m)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, l)
	}
	b.ReportMetric(float64(percentile(lat, 50).Microseconds()), "p50-us")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds()), "p99-us")
}
