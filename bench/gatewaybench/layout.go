package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// The layouts of -layout.
const (
	layoutInproc = "inproc" // every server in the load generator's process
	layoutSplit  = "split"  // every server in a child process of its own
)

// server is a running server of the benchmark, in this process or in a
// child process.
type server interface {
	// baseURL is http://127.0.0.1:PORT.
	baseURL() string
	// close stops the server (and its process, if it has one).
	close() error
}

// upstreamServer is the fake OpenAI upstream.
type upstreamServer interface {
	server
	// setConfig replaces the fake's configuration for the next requests.
	setConfig(ctx context.Context, c inferencetest.Config) error
}

// gatewayServer is a Perceptron gateway on one backend.
type gatewayServer interface {
	server
	// clientKey is the bearer token of the funded wallet's client key.
	clientKey() string
	// verify runs the ledger check of (*gateway).verify.
	verify(ctx context.Context, succeeded int64) error
}

// servers starts the benchmark's servers where the layout puts them.
type servers interface {
	// upstream starts the fake upstream with c.
	upstream(ctx context.Context, c inferencetest.Config) (upstreamServer, error)
	// proxy starts the bare reverse proxy in front of the upstream.
	proxy(ctx context.Context, upstreamURL string) (server, error)
	// gateway starts a gateway on backend in front of the upstream.
	gateway(ctx context.Context, backend, upstreamURL string) (gatewayServer, error)
	// gc collects garbage in every process of the benchmark, so that a
	// measured slice starts with clean heaps.
	gc(ctx context.Context) error
	// describe says, for the report, where the servers run and with what
	// GOMAXPROCS; it is called once every server has started.
	describe() string
	// close undoes what starting the layout did to this process (CPU
	// pinning, GOMAXPROCS), after every server has been closed.
	close() error
}

// inproc is the in-process layout: the servers share the load generator's
// process, its GOMAXPROCS and its garbage collector.
type inproc struct {
	backend backendOptions
}

// upstream starts the fake in this process.
func (inproc) upstream(_ context.Context, c inferencetest.Config) (upstreamServer, error) {
	return startUpstream(c, false)
}

// proxy starts the proxy in this process.
func (inproc) proxy(_ context.Context, upstreamURL string) (server, error) {
	return startProxy(upstreamURL, false)
}

// gateway starts the gateway in this process.
func (l inproc) gateway(ctx context.Context, backend, upstreamURL string) (gatewayServer, error) {
	return startGateway(ctx, backend, upstreamURL, l.backend, false)
}

// gc collects this process's garbage, which is everyone's.
func (inproc) gc(context.Context) error {
	runtime.GC()
	return nil
}

// describe says that everything shares one process.
func (inproc) describe() string {
	return fmt.Sprintf("inproc (the load generator, the upstream, the proxy and the gateways share one process, GOMAXPROCS %d)", runtime.GOMAXPROCS(0))
}

// close has nothing to undo.
func (inproc) close() error { return nil }
