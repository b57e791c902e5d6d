package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// The split layout runs every server in a child process: this binary,
// re-executed with -role as its first argument (see isChild and
// childMain). The protocol between the parent (the load generator) and a
// child:
//
//   - the child starts its server on 127.0.0.1 and prints one line of
//     JSON on stdout, a readyLine, then nothing more;
//   - the server also answers a control API under controlPrefix
//     (/_bench/), which no real route uses: POST /_bench/gc on every
//     child, POST /_bench/config (a JSON inferencetest.Config) on the
//     upstream, GET /_bench/verify?succeeded=N on a gateway;
//   - the child stops its server, closes its platform, removes its
//     temporary files (SQLite) or drops its schema (PostgreSQL) and exits
//     0 when its stdin closes (the parent closes it, or dies) or when it
//     gets SIGTERM or an interrupt;
//   - its stderr is the parent's.

const (
	// childReadyTimeout bounds a child's start, up to its readyLine.
	childReadyTimeout = time.Minute
	// childExitTimeout bounds a child's exit once its stdin is closed;
	// then it is killed.
	childExitTimeout = 30 * time.Second
	// controlTimeout bounds one call of the control API.
	controlTimeout = 2 * time.Minute
)

// readyLine is what a child prints on stdout once it serves.
type readyLine struct {
	Role       string `json:"role"`          // upstream, proxy, gateway-memory, gateway-sqlite, gateway-postgres
	URL        string `json:"url"`           // http://127.0.0.1:PORT
	Key        string `json:"key,omitempty"` // a gateway's client key
	PID        int    `json:"pid"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUs       []int  `json:"cpus,omitempty"` // the CPUs it may run on, if known
}

// pinning is the CPU plan of -pin: the gateways and the proxy run on the
// server CPU, the load generator and the upstream on the client CPU.
type pinning struct {
	server, client int
	undo           func() error // unpins this process
}

// restore unpins this process and restores its GOMAXPROCS.
func (p *pinning) restore() error { return p.undo() }

// split is the split layout, seen from the parent.
type split struct {
	exe      string
	backend  backendOptions
	cpuProf  string // -cpuprofile: each child writes cpuProf.<role>
	stderr   io.Writer
	pin      *pinning // nil without -pin
	ctl      *http.Client
	children []*child // in start order, for describe
}

// newSplit prepares the split layout. With cfg.pin it pins this process
// (see pinSelf); close undoes it.
func newSplit(cfg config, stderr io.Writer) (*split, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("split layout: finding this binary: %w", err)
	}
	if _, ok := stderr.(*os.File); !ok {
		// Children's stderr is then copied by goroutines of os/exec,
		// concurrently with this process's own progress lines.
		stderr = &lockedWriter{w: stderr}
	}
	s := &split{
		exe: exe, backend: cfg.backendOptions(), cpuProf: cfg.cpuProfile, stderr: stderr,
		ctl: &http.Client{Transport: &http.Transport{DisableCompression: true}},
	}
	if cfg.pin {
		if s.pin, err = pinSelf(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// upstream starts the fake upstream's child (on the client CPU when
// pinned) and sets its configuration.
func (s *split) upstream(ctx context.Context, c inferencetest.Config) (upstreamServer, error) {
	ch, err := s.start(ctx, "upstream", "upstream", false)
	if err != nil {
		return nil, err
	}
	if err := ch.setConfig(ctx, c); err != nil {
		return nil, errors.Join(err, ch.close())
	}
	return ch, nil
}

// proxy starts the proxy's child (on the server CPU when pinned).
func (s *split) proxy(ctx context.Context, upstreamURL string) (server, error) {
	return s.start(ctx, "proxy", "proxy", true, "-upstream", upstreamURL)
}

// gateway starts a gateway's child (on the server CPU when pinned). A
// gateway on PostgreSQL gets the server's URL on its command line, and
// creates (and drops) its schema itself.
func (s *split) gateway(ctx context.Context, backend, upstreamURL string) (gatewayServer, error) {
	args := []string{"-backend", backend, "-upstream", upstreamURL}
	if backend == "sqlite" && s.backend.sqliteDir != "" {
		args = append(args, "-sqlite-dir", s.backend.sqliteDir)
	}
	if backend == "postgres" {
		args = append(args, "-postgres", s.backend.postgresURL)
	}
	return s.start(ctx, "gateway-"+backend, "gateway", true, args...)
}

// gc collects garbage here and in every child.
func (s *split) gc(ctx context.Context) error {
	runtime.GC()
	for _, c := range s.children {
		if _, err := c.control(ctx, http.MethodPost, "gc", nil); err != nil {
			return err
		}
	}
	return nil
}

// describe names the processes, their GOMAXPROCS and CPUs.
func (s *split) describe() string {
	var b strings.Builder
	b.WriteString("split (each server in a process of its own")
	if s.pin != nil {
		fmt.Fprintf(&b, "; pinned: the gateways and the proxy on CPU %d, the load generator and the upstream on CPU %d", s.pin.server, s.pin.client)
	} else {
		b.WriteString(", not pinned")
	}
	fmt.Fprintf(&b, "). GOMAXPROCS per process: load generator %d%s", runtime.GOMAXPROCS(0), cpuList(cpusOf()))
	for _, c := range s.children {
		fmt.Fprintf(&b, ", %s %d%s", c.ready.Role, c.ready.GOMAXPROCS, cpuList(c.ready.CPUs))
	}
	return b.String()
}

// cpuList formats a process's CPUs for describe, or nothing if unknown.
func cpuList(cpus []int) string {
	if len(cpus) == 0 {
		return ""
	}
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	if len(cpus) == 1 {
		return " (CPU " + s[0] + ")"
	}
	return " (CPUs " + strings.Join(s, ",") + ")"
}

// close unpins this process.
func (s *split) close() error {
	if s.pin != nil {
		return s.pin.restore()
	}
	return nil
}

// start starts a child named name (see childOptions.name) for role with
// args and waits for its readyLine. serverSide says which CPU it gets when
// pinned.
func (s *split) start(ctx context.Context, name, role string, serverSide bool, args ...string) (_ *child, err error) {
	cmd := exec.Command(s.exe, append([]string{"-role", role}, args...)...)
	cmd.Stderr = s.stderr
	if s.cpuProf != "" {
		cmd.Args = append(cmd.Args, "-cpuprofile", s.cpuProf+"."+name)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if s.pin != nil {
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		cpu := s.pin.client
		if serverSide {
			cpu = s.pin.server
		}
		err = startOnCPU(cmd, cpu)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, ctl: s.ctl, drained: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	ready := make(chan error, 1)
	go func() {
		defer close(c.drained)
		br := bufio.NewReader(stdout)
		line, err := br.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &c.ready)
		}
		ready <- err
		_, _ = io.Copy(s.stderr, br) // nothing more is expected; never block the child
	}()
	t := time.NewTimer(childReadyTimeout)
	defer t.Stop()
	select {
	case err = <-ready:
		if err != nil {
			return nil, fmt.Errorf("%s did not start (reading its ready line: %v)", name, err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("%s not ready after %v", name, childReadyTimeout)
	}
	if c.ready.URL == "" || (role == "gateway" && c.ready.Key == "") {
		return nil, fmt.Errorf("%s: incomplete ready line %+v", name, c.ready)
	}
	s.children = append(s.children, c)
	return c, nil
}

// child is a server in a child process, seen from the parent. It is an
// upstreamServer and a gatewayServer, whose methods call its control API.
type child struct {
	name    string // its role, and backend for gateways
	cmd     *exec.Cmd
	stdin   io.Closer
	ready   readyLine
	ctl     *http.Client
	drained chan struct{} // closed when its stdout is at EOF
	once    sync.Once
	err     error // of close
}

// baseURL is the child's server's URL.
func (c *child) baseURL() string { return c.ready.URL }

// clientKey is a gateway child's client key.
func (c *child) clientKey() string { return c.ready.Key }

// setConfig sends c to the upstream child's POST /_bench/config.
func (c *child) setConfig(ctx context.Context, cfg inferencetest.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	_, err = c.control(ctx, http.MethodPost, "config", b)
	return err
}

// verify asks the gateway child to check its ledger.
func (c *child) verify(ctx context.Context, succeeded int64) error {
	_, err := c.control(ctx, http.MethodGet, "verify?succeeded="+strconv.FormatInt(succeeded, 10), nil)
	return err
}

// control calls the child's control API at controlPrefix+path. An answer
// other than 2xx is an error carrying the answer's text.
func (c *child) control(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.ready.URL+controlPrefix+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.ctl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	if resp.StatusCode/100 != 2 {
		if resp.StatusCode == http.StatusConflict { // a failed check: its text is the error
			return nil, errors.New(strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("%s: %s %s: status %d: %s", c.name, method, controlPrefix+path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// close closes the child's stdin, which makes it exit, and waits for it
// (killing it after childExitTimeout). It is safe to call more than once.
func (c *child) close() error {
	c.once.Do(func() {
		_ = c.stdin.Close()
		t := time.NewTimer(childExitTimeout)
		defer t.Stop()
		killed := false
		select {
		case <-c.drained:
		case <-t.C:
			_ = c.cmd.Process.Kill()
			killed = true
			<-c.drained
		}
		err := c.cmd.Wait()
		switch {
		case killed:
			c.err = fmt.Errorf("%s did not exit within %v of its stdin closing: killed", c.name, childExitTimeout)
		case err != nil:
			c.err = fmt.Errorf("%s: %w", c.name, err)
		}
	})
	return c.err
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes p to w under the lock.
func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// isChild says whether args (without the program name) start a child role
// rather than the benchmark.
func isChild(args []string) bool {
	return len(args) > 0 && (args[0] == "-role" || args[0] == "--role" || strings.HasPrefix(args[0], "-role=") || strings.HasPrefix(args[0], "--role="))
}

// childOptions is a child's command line.
type childOptions struct {
	role       string // upstream, proxy, gateway
	upstream   string // the upstream's URL, for proxy and gateway
	backend    string // memory, sqlite or postgres, for gateway
	db         backendOptions
	cpuProfile string
}

// name is the child's name in reports and profile file names.
func (o childOptions) name() string {
	if o.role == "gateway" {
		return "gateway-" + o.backend
	}
	return o.role
}

// childMain runs a child role (see split) and returns the exit code. It
// exits when stdin closes, or on SIGTERM or interrupt.
func childMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatewaybench child", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o childOptions
	fs.StringVar(&o.role, "role", "", "upstream, proxy or gateway")
	fs.StringVar(&o.upstream, "upstream", "", "the upstream's URL (proxy, gateway)")
	fs.StringVar(&o.backend, "backend", "", "memory, sqlite or postgres (gateway)")
	fs.StringVar(&o.db.sqliteDir, "sqlite-dir", "", "directory for the SQLite database file (default: a new temp dir)")
	fs.StringVar(&o.db.postgresURL, "postgres", "", "the PostgreSQL server, for -backend postgres (a schema of the child's own, dropped when it exits)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the child to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var bad string
	switch {
	case fs.NArg() > 0:
		bad = fmt.Sprintf("unexpected arguments %q", fs.Args())
	case o.role != "upstream" && o.role != "proxy" && o.role != "gateway":
		bad = fmt.Sprintf("unknown role %q", o.role)
	case o.role != "upstream" && o.upstream == "":
		bad = "-upstream is required"
	case o.role == "gateway" && o.backend != "memory" && o.backend != "sqlite" && o.backend != "postgres":
		bad = fmt.Sprintf("unknown backend %q", o.backend)
	case o.role == "gateway" && o.backend == "postgres" && o.db.postgresURL == "":
		bad = "-backend postgres needs -postgres"
	}
	if bad != "" {
		fmt.Fprintln(stderr, "gatewaybench child:", bad)
		return 2
	}
	if _, err := url.Parse(o.upstream); err != nil {
		fmt.Fprintln(stderr, "gatewaybench child: -upstream:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	if err := runChild(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "gatewaybench %s: %v\n", o.name(), err)
		return 1
	}
	return 0
}

// runChild starts the child's server with the same functions as the
// in-process layout, plus the control API, prints the readyLine and
// serves until ctx ends; then it closes everything (a gateway removes its
// SQLite files or drops its PostgreSQL schema).
func runChild(ctx context.Context, o childOptions, stdout io.Writer) (err error) {
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, f.Close()) }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ready := readyLine{Role: o.name(), PID: os.Getpid(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: cpusOf()}
	var srv server
	switch o.role {
	case "upstream":
		srv, err = startUpstream(inferencetest.Config{NoRecord: true}, true)
	case "proxy":
		srv, err = startProxy(o.upstream, true)
	case "gateway":
		var g *gateway
		if g, err = startGateway(ctx, o.backend, o.upstream, o.db, true); err == nil {
			srv, ready.Key = g, g.key
		}
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.close()) }()
	ready.URL = srv.baseURL()
	if err := json.NewEncoder(stdout).Encode(ready); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
