package inference_test

import (
	"context"
	"testing"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/inferencetest"
)

// BenchmarkServiceOverhead measures the service's own work (validation,
// hold, routing, settlement) around the offline dev model.
func BenchmarkServiceOverhead(b *testing.B) {
	cat, _ := inference.NewCatalog(inference.DevModel())
	ledger := newLedger()
	ledger.credit(acct, 1000*billing.Dollar)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: ledger,
		Providers: []inference.ModelProvider{inference.NewDevProvider()}})
	if err != nil {
		b.Fatal(err)
	}
	req := userRequest(inference.DevModelID, "What is the capital of France? Answer briefly, please.")
	ctx := context.Background()
	b.Run("complete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := svc.Complete(ctx, acct, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, err := svc.Stream(ctx, acct, req)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := readAll(s); err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
}

// BenchmarkOpenAIStream streams from the fake upstream over loopback.
func BenchmarkOpenAIStream(b *testing.B) {
	fake := inferencetest.New(inferencetest.Config{CompletionTokens: 64, Chunks: 16, NoRecord: true})
	srv := newServer(b, fake)
	p, _ := inference.NewOpenAIProvider(inference.OpenAIConfig{Name: "fake", BaseURL: srv + "/v1"})
	req := upstreamReq()
	b.ReportAllocs()
	for b.Loop() {
		s, err := p.ChatCompletionStream(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		s.Close()
	}
}
