// Command perceptron is the user's command-line program. This release has
// one command, the local frontend:
//
//	perceptron frontend [-api http://127.0.0.1:8080] [-addr 127.0.0.1:9300] [-key KEY]
//
// The frontend serves, on -addr, the three frontend-only routes of the API
// reference (POST /api/domains/{id}/connect, POST
// /api/domains/{id}/disconnect, GET /api/domains/tunnels/status) and
// passes every other /api/ request to the platform at -api (its base URL,
// without /api) with the key: -key, or $PERCEPTRON_API_KEY. A connected
// domain's public requests are forwarded to localhost on its assigned
// port. It stops on SIGINT or SIGTERM, closing its tunnels.
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

	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "perceptron:", err)
		os.Exit(1)
	}
}

const usage = `usage: perceptron frontend [-api URL] [-addr HOST:PORT] [-key KEY]`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "frontend" {
		fmt.Fprintln(stderr, usage)
		return errors.New("unknown command")
	}
	fs := flag.NewFlagSet("perceptron frontend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", "http://127.0.0.1:8080", "the platform's base URL, without /api")
	addr := fs.String("addr", "127.0.0.1:9300", "listen address of the frontend")
	key := fs.String("key", os.Getenv("PERCEPTRON_API_KEY"), "client or master key (default $PERCEPTRON_API_KEY)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *key == "" {
		return errors.New("no key: set -key or PERCEPTRON_API_KEY")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	m := client.NewManager(*api, *key, client.ManagerOptions{Logger: log})
	defer m.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: client.NewFrontend(m), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	url := "http://" + ln.Addr().String()
	log.Info("perceptron frontend listening", "url", url, "api", *api)
	fmt.Fprintf(stdout, "Perceptron frontend listening on %s (platform %s)\n", url, *api)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: closing tunnels")
	m.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
