// Command perceptron is the user's command-line program. This release has
// one command, the local frontend:
//
//	perceptron frontend [-api URL] [-addr HOST:PORT] [-key KEY] [-token-file PATH] [-allow-host HOST:PORT,...]
//
// The frontend serves, on -addr (default 127.0.0.1:9300), the three
// frontend-only routes of the API reference (POST
// /api/domains/{id}/connect, POST /api/domains/{id}/disconnect, GET
// /api/domains/tunnels/status) and passes every other /api/ request to
// the platform at -api (its base URL, without /api) with the key: -key,
// or $PERCEPTRON_API_KEY. A connected domain's public requests are
// forwarded to localhost on its assigned port. A domain the platform says
// is gone (released, lapsed, another wallet's, or the key revoked) is not
// retried: the status route shows it as "gone" with the platform's
// message. It stops on SIGINT or SIGTERM, closing its tunnels.
//
// The frontend holds the key, and every local user and every web page the
// user's browser opens can reach a loopback port, so it answers only its
// user (see package tunnel/client for the details):
//
//   - Each run makes a new secret. The command prints the frontend's URL
//     with it, http://127.0.0.1:9300/?token=SECRET: opening that URL in a
//     browser exchanges the token for a cookie (HttpOnly,
//     SameSite=Strict) and drops it from the address bar. Programs send
//     the secret in the Perceptron-Frontend-Token header; the command
//     writes it, with the URL, to -token-file (default
//     $XDG_CONFIG_HOME/perceptron/frontend-PORT.json, i.e. under
//     os.UserConfigDir; file mode 0600, directory 0700; "-" writes none)
//     as {"url":...,"token":...,"header":"Perceptron-Frontend-Token"},
//     and removes it when it stops.
//   - A request whose Host is not the frontend's address is refused (421:
//     DNS rebinding). On a loopback address, localhost, 127.0.0.1 and
//     [::1] with the same port are accepted; -allow-host names other
//     Host values, and is required when -addr is on all interfaces.
//   - A cross-site request (an Origin that is not the frontend's own, or
//     Sec-Fetch-Site other than same-origin or none) is refused (403).
//   - A request without the secret is refused (403).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
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

const usage = `usage: perceptron frontend [-api URL] [-addr HOST:PORT] [-key KEY] [-token-file PATH] [-allow-host HOST:PORT,...]`

const help = `
The frontend answers only its user. Each run makes a new secret and prints
the URL to open, http://HOST:PORT/?token=SECRET: the browser trades the
token for a cookie (HttpOnly, SameSite=Strict). Programs send the secret in
the Perceptron-Frontend-Token header, reading it from the token file
(default: frontend-PORT.json in the perceptron directory of the user's
config directory, mode 0600; removed at exit). Requests for another Host
than the frontend's address (DNS rebinding: 421), cross-site requests
(Origin, Sec-Fetch-Site: 403) and requests without the secret (403) are
refused before anything reaches the platform.

A domain the platform says is gone (released, lapsed, another wallet's, or
the key revoked) is not retried; the status route shows it as "gone".

Flags:
`

// tokenFile is what the token file holds.
type tokenFile struct {
	URL    string `json:"url"`
	Token  string `json:"token"`
	Header string `json:"header"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "frontend" {
		fmt.Fprintln(stderr, usage)
		return errors.New("unknown command")
	}
	fs := flag.NewFlagSet("perceptron frontend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage, "\n", help)
		fs.PrintDefaults()
	}
	api := fs.String("api", "http://127.0.0.1:8080", "the platform's base URL, without /api")
	addr := fs.String("addr", "127.0.0.1:9300", "listen address of the frontend")
	key := fs.String("key", "", "client or master key (default $PERCEPTRON_API_KEY)")
	tokenPath := fs.String("token-file", "", `where to write the frontend's URL and secret (mode 0600); default: frontend-PORT.json under the user's config directory's perceptron directory; "-" for none`)
	allow := fs.String("allow-host", "", "further Host values to accept, comma-separated host:port (required when -addr listens on all interfaces)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *key == "" {
		*key = os.Getenv("PERCEPTRON_API_KEY") // not the flag's default: -h would print it
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
	defer ln.Close()
	var hosts []string
	for h := range strings.SplitSeq(*allow, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	front, err := client.NewFrontend(m, client.FrontendOptions{Addr: ln.Addr().String(), Hosts: hosts, Logger: log})
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	base := front.Origin()
	path := *tokenPath
	if path == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			log.Warn("no token file: no config directory", "err", err)
			path = "-"
		} else {
			path = filepath.Join(dir, "perceptron", "frontend-"+port+".json")
		}
	}
	if path != "-" {
		tf := tokenFile{URL: base, Token: front.Secret(), Header: client.FrontendTokenHeader}
		if err := writeTokenFile(path, tf); err != nil {
			return fmt.Errorf("writing the token file: %w", err)
		}
		defer removeTokenFile(path, tf.Token)
	}
	srv := &http.Server{Handler: front, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("perceptron frontend listening", "url", base, "api", *api)
	fmt.Fprintf(stdout, "Perceptron frontend listening on %s (platform %s)\n", base, *api)
	fmt.Fprintf(stdout, "Open %s in your browser to use it (the secret changes at every run).\n", front.URL())
	if path != "-" {
		fmt.Fprintf(stdout, "Programs send the secret in the %s header; it is in %s.\n", client.FrontendTokenHeader, path)
	}
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

// writeTokenFile writes the token file readable by its owner only: a
// temporary file (created with mode 0600) renamed over the path, in a
// directory created with mode 0700.
func writeTokenFile(path string, tf tokenFile) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(tf, "", "  ")
	f, err := os.CreateTemp(dir, ".frontend-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// removeTokenFile removes the token file if it still holds this run's
// secret (another run on the same port may have replaced it).
func removeTokenFile(path, token string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var tf tokenFile
	if json.Unmarshal(bytes.TrimSpace(b), &tf) == nil && tf.Token == token {
		_ = os.Remove(path)
	}
}
