package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Targets of the benchmark (issue 4, item 7).
const (
	targetAddedP50 = 200 * time.Microsecond // at concurrency 1, SQLite
	targetAddedP99 = time.Millisecond       // at concurrency 1, SQLite
	targetRatio    = 0.5                    // gateway/direct throughput at concurrency 32
	targetConc     = 32
)

// ms formats a duration in milliseconds with microsecond precision.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// signedMS formats a difference in milliseconds with its sign.
func signedMS(d time.Duration) string {
	return fmt.Sprintf("%+.3f", float64(d)/float64(time.Millisecond))
}

// latencyName names an upstream latency setting.
func latencyName(d time.Duration) string {
	if d == 0 {
		return "0 ms"
	}
	return ms(d) + " ms"
}

// report prints the Markdown report: the main table (added latency and
// throughput ratio per cell and backend), the targets, and the detail per
// target. layout says where the servers ran (servers.describe), pgInfo
// the PostgreSQL server of the postgres backend, if any (postgresInfo).
func report(w io.Writer, cfg config, layout, pgInfo string, targets []*target, cells []cell, total time.Duration) {
	measured := fmt.Sprintf("%v per target per cell in %d alternating rounds", cfg.duration, cfg.rounds)
	if cfg.requests > 0 {
		measured = fmt.Sprintf("%d requests per target per cell in %d alternating rounds", cfg.requests, cfg.rounds)
	}
	fmt.Fprintf(w, "Machine: %s  \n", machine())
	fmt.Fprintf(w, "Layout: %s  \n", layout)
	if pgInfo != "" {
		fmt.Fprintf(w, "Database: %s  \n", pgInfo)
	}
	fmt.Fprintf(w, "Upstream: %d completion tokens, streams in %d chunks, chunk delay %v. Measured: %s, after %v warm-up per target per cell. Wall time %v.\n\n",
		cfg.tokens, cfg.chunks, cfg.chunkDelay, measured, cfg.warmup, total.Round(time.Second))
	fmt.Fprintln(w, "Latency is of the whole response for json, and the time to the first SSE event (TTFB) for stream. Added = gateway minus direct, percentile by percentile. Ratio = gateway req/s / direct req/s.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| upstream | mode | c | backend | direct p50 | direct p99 | gateway p50 | gateway p99 | **added p50** | **added p99** | direct req/s | gateway req/s | **ratio** | errors |")
	fmt.Fprintln(w, "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		d := &c.results[0]
		dp50, dp99 := percentile(d.lat, 50), percentile(d.lat, 99)
		for i := 1; i < len(c.results); i++ {
			g := &c.results[i]
			gp50, gp99 := percentile(g.lat, 50), percentile(g.lat, 99)
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | **%s** | **%s** | %.0f | %.0f | **%.2f** | %d / %d |\n",
				latencyName(c.latency), c.mode, c.conc, strings.TrimPrefix(targets[i].name, "gateway-"),
				ms(dp50), ms(dp99), ms(gp50), ms(gp99), signedMS(gp50-dp50), signedMS(gp99-dp99),
				d.throughput(), g.throughput(), ratio(g, d), d.errs, g.errs)
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "Targets (issue 4, item 7): added p50 < 0.2 ms and added p99 < 1 ms at concurrency 1 with SQLite; at concurrency 32 at least half of the direct throughput.")
	fmt.Fprintln(w)
	for _, c := range cells {
		d := &c.results[0]
		for i := 1; i < len(c.results); i++ {
			g := &c.results[i]
			backend := strings.TrimPrefix(targets[i].name, "gateway-")
			where := fmt.Sprintf("upstream %s, %s, c=%d, %s", latencyName(c.latency), c.mode, c.conc, backend)
			switch {
			case backend == "proxy":
				if c.conc == targetConc {
					fmt.Fprintf(w, "- %s (bare reverse proxy, for reference): throughput ratio %.2f\n", where, ratio(g, d))
				} else {
					fmt.Fprintf(w, "- %s (bare reverse proxy, for reference): added p50 %s ms, p99 %s ms\n", where,
						signedMS(percentile(g.lat, 50)-percentile(d.lat, 50)), signedMS(percentile(g.lat, 99)-percentile(d.lat, 99)))
				}
			case c.conc == 1 && backend == "sqlite":
				a50 := percentile(g.lat, 50) - percentile(d.lat, 50)
				a99 := percentile(g.lat, 99) - percentile(d.lat, 99)
				fmt.Fprintf(w, "- %s: added p50 %s ms (target < 0.200): %s; added p99 %s ms (target < 1.000): %s\n",
					where, signedMS(a50), verdict(a50 < targetAddedP50, float64(a50)/float64(targetAddedP50)),
					signedMS(a99), verdict(a99 < targetAddedP99, float64(a99)/float64(targetAddedP99)))
			case c.conc == targetConc:
				r := ratio(g, d)
				fmt.Fprintf(w, "- %s: throughput ratio %.2f (target >= %.2f): %s\n", where, r, targetRatio, verdict(r >= targetRatio, r/targetRatio))
			}
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "<details><summary>Every target in every cell</summary>")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| upstream | mode | c | target | ok | errors | p50 | p90 | p99 | max | req/s | end-of-response p50 | p99 |")
	fmt.Fprintln(w, "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		for i := range c.results {
			r := &c.results[i]
			fmt.Fprintf(w, "| %s | %s | %d | %s | %d | %d | %s | %s | %s | %s | %.0f | %s | %s |\n",
				latencyName(c.latency), c.mode, c.conc, targets[i].name, r.ok(), r.errs,
				ms(percentile(r.lat, 50)), ms(percentile(r.lat, 90)), ms(percentile(r.lat, 99)), ms(percentile(r.lat, 100)),
				r.throughput(), ms(percentile(r.full, 50)), ms(percentile(r.full, 99)))
			if r.firstErr != "" {
				fmt.Fprintf(w, "|  |  |  | first error | %s |  |  |  |  |  |  |  |  |\n", strings.ReplaceAll(r.firstErr, "|", `\|`))
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "</details>")
}

// ratio is g's throughput over d's.
func ratio(g, d *result) float64 {
	if d.throughput() == 0 {
		return 0
	}
	return g.throughput() / d.throughput()
}

// verdict words a target check; x is the measured value over the target.
func verdict(met bool, x float64) string {
	if met {
		return "met"
	}
	return fmt.Sprintf("**MISSED** (%.1fx the target)", x)
}
