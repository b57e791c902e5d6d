// Command tunnelbench measures the tunnel against direct loopback in the
// same run: bulk download MB/s through the ingress and the tunnel, small
// requests per second at a concurrency with p50/p99, and the server's
// memory (RSS) for many idle connected tunnels.
//
//	go run ./bench/tunnelbench [-bulk-mb 1024] [-c 50] [-duration 5s] [-rounds 3] [-idle 1000] [-db memory|sqlite] [-plain-ingress]
//
// The platform (API, broker and ingress, on a memory store, or with -db
// sqlite on a SQLite file in a temporary directory, sync=full as
// perceptron-server's default) runs in a child process of its own, as
// deployed, so its RSS is its own; the origin server, the tunnel clients
// and the load generator run in this process. Its ingress listener is
// wrapped as perceptron-server wraps it (httpserver.IngressListener over
// the connection limits); -plain-ingress leaves out IngressListener.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

func main() {
	serve := flag.Bool("serve", false, "run the platform (child process)")
	dsn := flag.String("dsn", "memory:", "the child's store (set by the parent from -db)")
	db := flag.String("db", "memory", "the platform's store: memory, or sqlite (a file in a temporary directory)")
	plainIngress := flag.Bool("plain-ingress", false, "serve the ingress without httpserver.IngressListener")
	bulkMB := flag.Int("bulk-mb", 1024, "size of each bulk download")
	conc := flag.Int("c", 50, "concurrency of small requests")
	dur := flag.Duration("duration", 5*time.Second, "measured time of small requests per target per round")
	rounds := flag.Int("rounds", 3, "alternating rounds (direct, tunnel, direct, ...)")
	idle := flag.Int("idle", 1000, "idle tunnels for the memory figure (0: skip)")
	cpuprofile := flag.String("cpuprofile", "", "write CPU profiles of the bulk downloads through the tunnel: FILE (this process: origin, tunnel client, load) and FILE.server")
	flag.Parse()
	if *db != "memory" && *db != "sqlite" {
		fmt.Fprintln(os.Stderr, "tunnelbench: -db is memory or sqlite")
		os.Exit(2)
	}
	childArgs = []string{"-serve", "-db", *db, "-plain-ingress=" + strconv.FormatBool(*plainIngress)}
	if *serve {
		if err := runServer(*dsn, *plainIngress); err != nil {
			fmt.Fprintln(os.Stderr, "tunnelbench -serve:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuprofile != "" {
		if err := profileBulk(*bulkMB, *cpuprofile); err != nil {
			fmt.Fprintln(os.Stderr, "tunnelbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*bulkMB, *conc, *dur, *rounds, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "tunnelbench:", err)
		os.Exit(1)
	}
}

// server is the child process's addresses.
type server struct {
	api, ingress string
}

type setupDomain struct {
	ID   string `json:"id"`
	Key  string `json:"key"`
	Host string `json:"host"`
}

func (s server) setup(n, port int) ([]setupDomain, error) {
	res, err := http.Post(fmt.Sprintf("%s/bench/setup?n=%d&port=%d", s.api, n, port), "", nil)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		return nil, fmt.Errorf("setup: %d %s", res.StatusCode, b)
	}
	var out []setupDomain
	return out, json.NewDecoder(res.Body).Decode(&out)
}

func (s server) rss() (int64, error) {
	res, err := http.Get(s.api + "/bench/rss")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// childArgs are the child's flags: -serve and this run's -db and
// -plain-ingress.
var childArgs []string

// startServer starts the child, on a fresh store: with -db sqlite, a new
// file in a temporary directory that stop removes.
func startServer() (server, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return server{}, nil, err
	}
	args := slices.Clone(childArgs)
	dir := ""
	if slices.Contains(args, "sqlite") {
		if dir, err = os.MkdirTemp("", "tunnelbench-"); err != nil {
			return server{}, nil, err
		}
		args = append(args, "-dsn", "sqlite:"+filepath.Join(dir, "platform.db"))
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		if dir != "" {
			os.RemoveAll(dir)
		}
		return server{}, nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return server{}, nil, fmt.Errorf("the child did not start: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		stop()
		return server{}, nil, fmt.Errorf("the child said %q", line)
	}
	return server{api: f[0], ingress: f[1]}, stop, nil
}

// origin is the local service: /bulk?mb=N streams N MiB, /small a short
// body.
func startOrigin() (string, int, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		w.Header().Set("Content-Length", strconv.Itoa(mb<<20))
		for range mb * 4 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"payload":"0123456789abcdef0123456789abcdef"}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port, func() { srv.Close() }, nil
}

func connect(s server, d setupDomain) (*client.Client, error) {
	c, err := client.New(client.Options{URL: s.api, Tokens: client.APITokens(s.api, d.Key, d.ID, nil)})
	if err != nil {
		return nil, err
	}
	go func() { _ = c.Run(context.Background()) }()
	select {
	case <-c.Connected():
		return c, nil
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("tunnel %s did not connect: %+v", d.Host, c.Status())
	}
}

// oneTunnel starts the origin and the server, and connects one tunnel to
// the origin; stop ends all three.
func oneTunnel() (originURL string, port int, s server, d setupDomain, stop func(), err error) {
	originURL, port, stopOrigin, err := startOrigin()
	if err != nil {
		return "", 0, server{}, setupDomain{}, nil, err
	}
	s, stopServer, err := startServer()
	if err != nil {
		stopOrigin()
		return "", 0, server{}, setupDomain{}, nil, err
	}
	stop = func() { stopServer(); stopOrigin() }
	ds, err := s.setup(1, port)
	if err == nil {
		_, err = connect(s, ds[0])
	}
	if err != nil {
		stop()
		return "", 0, server{}, setupDomain{}, nil, err
	}
	return originURL, port, s, ds[0], stop, nil
}

func run(bulkMB, conc int, dur time.Duration, rounds, idle int) error {
	originURL, port, s, d, stopAll, err := oneTunnel()
	if err != nil {
		return err
	}
	defer stopAll()
	stop := func() {}
	ds := []setupDomain{d}
	tr := &http.Transport{MaxIdleConnsPerHost: conc * 2, MaxConnsPerHost: conc * 2, DisableCompression: true}
	hc := &http.Client{Transport: tr}
	targets := []struct {
		name, base, host string
	}{{"direct", originURL, ""}, {"tunnel", s.ingress, ds[0].Host}}

	fmt.Printf("tunnelbench: bulk %d MiB, %d concurrent small requests for %v, %d rounds, GOMAXPROCS %s, child %s\n\n",
		bulkMB, conc, dur, rounds, os.Getenv("GOMAXPROCS"), strings.Join(childArgs, " "))
	bulk := map[string][]float64{}
	small := map[string][]result{}
	for r := range rounds {
		for _, t := range targets {
			mbps, err := download(hc, t.base+"/bulk?mb="+strconv.Itoa(bulkMB), t.host, bulkMB)
			if err != nil {
				return fmt.Errorf("%s bulk: %w", t.name, err)
			}
			bulk[t.name] = append(bulk[t.name], mbps)
			res, err := hammer(hc, t.base+"/small", t.host, conc, dur)
			if err != nil {
				return fmt.Errorf("%s small: %w", t.name, err)
			}
			small[t.name] = append(small[t.name], res)
			fmt.Printf("round %d %-6s bulk %7.0f MB/s   small %7.0f req/s p50 %.3f ms p99 %.3f ms (%d errors)\n",
				r+1, t.name, mbps, res.rps, res.p50, res.p99, res.errors)
		}
	}
	fmt.Println()
	fmt.Println("| target | bulk MB/s (median) | small req/s (median) | p50 ms | p99 ms |")
	fmt.Println("|---|--:|--:|--:|--:|")
	for _, t := range targets {
		b, m := median(bulk[t.name]), medianResult(small[t.name])
		fmt.Printf("| %s | %.0f | %.0f | %.3f | %.3f |\n", t.name, b, m.rps, m.p50, m.p99)
	}
	fmt.Printf("\ntunnel/direct: bulk %.2f, small req/s %.2f\n",
		median(bulk["tunnel"])/median(bulk["direct"]), medianResult(small["tunnel"]).rps/medianResult(small["direct"]).rps)

	if idle > 0 {
		// A fresh server, so that its RSS holds no buffers of the bulk
		// downloads.
		tr.CloseIdleConnections()
		stop()
		if s, stop, err = startServer(); err != nil {
			return err
		}
		defer stop()
		time.Sleep(500 * time.Millisecond)
		before, err := s.rss()
		if err != nil {
			return err
		}
		many, err := s.setup(idle, port)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		var failed atomic.Int64
		sem := make(chan struct{}, 50)
		for _, d := range many {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if _, err := connect(s, d); err != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			return fmt.Errorf("%d idle tunnels did not connect", n)
		}
		time.Sleep(2 * time.Second)
		after, err := s.rss()
		if err != nil {
			return err
		}
		fmt.Printf("\nidle tunnels: %d connected; server RSS %.1f MB before, %.1f MB after (+%.1f MB, %.1f KB per tunnel)\n",
			idle, float64(before)/1e6, float64(after)/1e6, float64(after-before)/1e6, float64(after-before)/float64(idle)/1e3)
	}
	return nil
}

func download(hc *http.Client, url, host string, mb int) (float64, error) {
	req, _ := http.NewRequest("GET", url, nil)
	if host != "" {
		req.Host = host
	}
	start := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil {
		return 0, err
	}
	if n != int64(mb)<<20 {
		return 0, fmt.Errorf("got %d bytes", n)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

type result struct {
	rps, p50, p99 float64
	errors        int64
}

func hammer(hc *http.Client, url, host string, conc int, dur time.Duration) (result, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", url, nil)
				if host != "" {
					req.Host = host
				}
				t0 := time.Now()
				res, err := hc.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return result{}, errors.New("no request succeeded")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	return result{rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.5), p99: pct(0.99), errors: errs.Load()}, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianResult(v []result) result {
	s := slices.Clone(v)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.rps < b.rps:
			return -1
		case a.rps > b.rps:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// profileBulk downloads through the tunnel for 5 seconds with CPU
// profiles of both processes.
func profileBulk(bulkMB int, file string) error {
	_, _, s, d, stopAll, err := oneTunnel()
	if err != nil {
		return err
	}
	defer stopAll()
	ds := []setupDomain{d}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() {
		res, err := http.Get(s.api + "/debug/pprof/profile?seconds=5")
		if err != nil {
			done <- err
			return
		}
		defer res.Body.Close()
		sf, err := os.Create(file + ".server")
		if err != nil {
			done <- err
			return
		}
		defer sf.Close()
		_, err = io.Copy(sf, res.Body)
		done <- err
	}()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	hc := &http.Client{}
	end := time.Now().Add(5 * time.Second)
	total := 0.0
	n := 0
	for time.Now().Before(end) {
		mbps, err := download(hc, s.ingress+"/bulk?mb="+strconv.Itoa(bulkMB), ds[0].Host, bulkMB)
		if err != nil {
			return err
		}
		total += mbps
		n++
	}
	pprof.StopCPUProfile()
	fmt.Printf("%d downloads, mean %.0f MB/s\n", n, total/float64(n))
	return <-done
}
