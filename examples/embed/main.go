// Command embed shows a host program that serves Perceptron's REST API next
// to its own routes, on a SQLite file of its own.
//
//	go run ./examples/embed -addr 127.0.0.1:9090
//	curl http://127.0.0.1:9090/api/health
//	curl http://127.0.0.1:9090/
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// The backend's own package: the program links SQLite and nothing
	// else (storage.Open would link every backend).
	store, err := sqlite.Open(ctx, filepath.Join(os.TempDir(), "perceptron-embed.db"), sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	p, err := perceptron.New(ctx, perceptron.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	mux := http.NewServeMux()
	// The API's routes carry their full /api/... paths: mount it under /api/.
	mux.Handle("/api/", httpserver.New(p, httpserver.Options{}))
	// The host's own routes. (A method pattern such as "GET /" would
	// conflict with "/api/" in net/http's mux; use "/" or more specific paths.)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host application; the API is under /api/\n")
	})

	srv := &http.Server{Addr: *addr, Handler: mux}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	log.Printf("listening on http://%s", *addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
