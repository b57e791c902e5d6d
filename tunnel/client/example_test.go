package client_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

// A program keeps one domain's tunnel connected: public requests for the
// domain reach localhost on the domain's assigned port. Tokens come from
// the platform's API with a client key.
func Example() {
	const api = "http://127.0.0.1:8080"
	key, domainID := os.Getenv("PERCEPTRON_API_KEY"), os.Getenv("DOMAIN_ID")
	c, err := client.New(client.Options{URL: api, Tokens: client.APITokens(api, key, domainID, nil)})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-c.Connected()
		log.Printf("connected: %+v", c.Status())
	}()
	_ = c.Run(ctx) // reconnects with backoff until ctx ends
}
