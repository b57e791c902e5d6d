// Command transcribe shows an agent framework embedding the Perceptron SDK
// to transcribe voice notes from Go, billed per second of audio to a
// wallet, without HTTP: the same checks, holds and billing as
// POST /api/v1/audio/transcriptions.
//
// With no flags it uses the offline dev STT model (no network); with
// -base-url it sends the audio to any OpenAI-compatible transcription API
// (OpenAI, Groq, a self-hosted whisper server), with the key in
// $OPENAI_API_KEY:
//
//	go run ./examples/transcribe inference/audio/testdata/speech.wav
//	go run ./examples/transcribe -base-url https://api.groq.com/openai/v1 -model whisper-large-v3 note.m4a
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

func main() {
	baseURL := flag.String("base-url", "", "an OpenAI-compatible API root (empty: the offline dev STT model)")
	model := flag.String("model", "whisper-1", "the upstream's model, with -base-url")
	format := flag.String("format", "text", "response format: json, text, srt, vtt or verbose_json")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: transcribe [-base-url URL -model NAME] [-format F] FILE")
	}
	if err := run(context.Background(), flag.Arg(0), *baseURL, *model, *format); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, path, baseURL, model, format string) error {
	const wallet = "0x00000000000000000000000000000000000000a2"
	store := memory.New()
	defer store.Close()
	if _, err := store.Credit(ctx, billing.Posting{Account: wallet, Type: billing.Purchase,
		Amount: billing.Dollar, Description: "example credits"}); err != nil {
		return err
	}

	// The catalog: one STT model, priced per hour of audio, and the
	// provider that serves it.
	sttModel := inference.DevSTTModel()
	var provider inference.STTProvider = inference.DevSTTProvider{}
	if baseURL != "" {
		p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "upstream", BaseURL: baseURL, APIKey: os.Getenv("OPENAI_API_KEY")})
		if err != nil {
			return err
		}
		provider = p
		sttModel = inference.STTModel{ID: model, Name: model, CentsPerHour: 36, Providers: []string{"upstream"}}
	}
	catalog, err := inference.NewCatalog()
	if err != nil {
		return err
	}
	svc, err := inference.NewService(inference.Options{
		Catalog:      catalog,
		Ledger:       store,
		STTModels:    []inference.STTModel{sttModel},
		STTProviders: []inference.STTProvider{provider},
	})
	if err != nil {
		return err
	}

	note, err := os.Open(path)
	if err != nil {
		return err
	}
	defer note.Close()
	res, err := svc.Transcribe(ctx, wallet, &inference.TranscriptionRequest{
		Model: sttModel.ID, Audio: note, Filename: path, ResponseFormat: format,
	})
	if err != nil {
		return err // a fault.Error: errors.Is(err, fault.InsufficientFunds), fault.Invalid...
	}
	fmt.Printf("%s\n", res.Body)
	bal, err := store.Balance(ctx, wallet)
	if err != nil {
		return err
	}
	fmt.Printf("billed %d s of audio: %s (%d micro-cents); balance %d micro-cents\n",
		res.Seconds, res.Entry.Description, -res.Entry.Amount, bal.Total)
	return nil
}
