// Command inference shows an agent framework embedding the Perceptron SDK
// and calling the inference service from Go, without HTTP: a completion and
// a stream from the offline dev model, billed to a wallet in an in-memory
// ledger, with the same validation, holds and billing as the HTTP API.
//
//	go run ./examples/inference
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	const wallet = "0x00000000000000000000000000000000000000a1"
	store := memory.New()
	defer store.Close()
	if _, err := store.Credit(ctx, billing.Posting{Account: wallet, Type: billing.Purchase,
		Amount: billing.Dollar, Description: "example credits"}); err != nil {
		return err
	}

	catalog, err := inference.NewCatalog(inference.DevModel())
	if err != nil {
		return err
	}
	svc, err := inference.NewService(inference.Options{
		Catalog:   catalog,
		Providers: []inference.ModelProvider{inference.NewDevProvider()},
		Ledger:    store,
	})
	if err != nil {
		return err
	}
	req := &inference.ChatRequest{
		Model:    inference.DevModelID,
		Messages: []inference.Message{{Role: inference.RoleUser, Content: "What is the capital of France?"}},
	}

	resp, err := svc.Complete(ctx, wallet, req)
	if err != nil {
		return err
	}
	fmt.Println("completion:", resp.Choices[0].Message.Content)
	fmt.Printf("usage: %+v\n\n", resp.Usage)

	s, err := svc.Stream(ctx, wallet, req)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Print("stream: ")
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // a *inference.StreamError, e.g. credit exhausted
		}
		for _, c := range chunk.Choices {
			fmt.Print(c.Delta.Content)
		}
		if chunk.Usage != nil {
			fmt.Printf("\nusage: %+v\n\n", *chunk.Usage)
		}
	}

	entries, err := billing.AllEntries(ctx, store, wallet, billing.EntryFilter{})
	if err != nil {
		return err
	}
	for _, e := range entries {
		fmt.Fprintf(os.Stdout, "%-13s %+12d micro-cents  %s\n", e.Type, e.Amount, e.Description)
	}
	return nil
}
