package inference_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
)

// An agent framework embedding the SDK calls the inference service directly,
// with the same validation, holds and billing as the HTTP API.
func Example() {
	ctx := context.Background()
	const wallet = "0x00000000000000000000000000000000000000a1"

	// ledger is any billing.Ledger: a server passes its storage backend.
	ledger := newLedger()
	ledger.credit(wallet, billing.Dollar)

	catalog, err := inference.NewCatalog(inference.DevModel())
	if err != nil {
		log.Fatal(err)
	}
	svc, err := inference.NewService(inference.Options{
		Catalog:   catalog,
		Providers: []inference.ModelProvider{inference.NewDevProvider()},
		Ledger:    ledger,
	})
	if err != nil {
		log.Fatal(err)
	}

	req := &inference.ChatRequest{
		Model:     inference.DevModelID,
		Messages:  []inference.Message{{Role: inference.RoleUser, Content: "Say hello"}},
		MaxTokens: 6,
	}

	// A plain completion.
	resp, err := svc.Complete(ctx, wallet, req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Model, "|", resp.Choices[0].Message.Content, "|", resp.Choices[0].FinishReason)
	fmt.Printf("usage: %+v\n", resp.Usage)

	// The same, streamed.
	s, err := svc.Stream(ctx, wallet, req)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	for {
		chunk, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err) // a *inference.StreamError, e.g. credit exhausted
		}
		for _, c := range chunk.Choices {
			fmt.Printf("[%s]", c.Delta.Content)
		}
		if chunk.Usage != nil {
			fmt.Printf(" usage: %+v\n", *chunk.Usage)
		}
	}

	bal, _ := ledger.Balance(ctx, wallet)
	fmt.Println("spent micro-cents:", billing.Dollar-bal.Total)
	// Output:
	// perceptron/dev | Perceptron dev model (offline) here. You | length
	// usage: {PromptTokens:8 CompletionTokens:6 TotalTokens:14}
	// [Perceptron dev model (offline)][ here. You][] usage: {PromptTokens:8 CompletionTokens:6 TotalTokens:14}
	// spent micro-cents: 4000
}
