package perceptron_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/inference"
)

// A host program mounts the REST API next to its own routes.
func Example_mount() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{Version: "1.2.6"}) // Store nil: in memory
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	mux := http.NewServeMux()
	mux.Handle("/api/", httpserver.New(p, httpserver.Options{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "host app") })

	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/health")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output: 200 application/json
}

// An agent framework uses the billing ledger directly from Go: credit a
// wallet, hold money for work in flight, settle the actual cost.
func Example_ledger() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ledger := p.Billing.Ledger()
	const wallet = "0x00000000000000000000000000000000000000aa"

	if _, err := ledger.Credit(ctx, billing.Posting{
		Account: wallet, Type: billing.Purchase, Amount: 10 * billing.Dollar, Description: "grant",
	}); err != nil {
		log.Fatal(err)
	}
	hold, err := ledger.PlaceHold(ctx, billing.HoldRequest{
		Account: wallet, Amount: 50 * billing.Cent, ExpiresAt: p.Now().Add(15 * 60e9),
	})
	if err != nil {
		log.Fatal(err)
	}
	// The work cost 1234 tokens at 380 cents per million: exactly 468,920 micro-cents.
	if _, err := ledger.SettleHold(ctx, billing.Settlement{
		HoldID: hold.ID, Amount: 1234 * 380, Type: billing.ChatInference, Description: "agent step",
	}); err != nil {
		log.Fatal(err)
	}
	bal, err := ledger.Balance(ctx, wallet)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(int64(bal.Total), bal.Total.FloorCents(), int64(bal.Held))
	// Output: 999531080 999 0
}

// A host program reserves a subdomain for a wallet from Go, points it at a
// local port and issues the token a tunnel client connects with.
func Example_domains() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{
		Domains: perceptron.DomainsConfig{BaseDomain: "agents.example", HourlyCostCents: 5},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	const wallet = "0x00000000000000000000000000000000000000bb"
	if _, err := p.Billing.Ledger().Credit(ctx, billing.Posting{
		Account: wallet, Type: billing.Purchase, Amount: billing.Dollar, Description: "grant",
	}); err != nil {
		log.Fatal(err)
	}
	d, err := p.Domains.Reserve(ctx, wallet, "myagent")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Domains.Assign(ctx, wallet, d.ID, 10001); err != nil {
		log.Fatal(err)
	}
	tok, err := p.Domains.Token(ctx, wallet, d.ID)
	if err != nil {
		log.Fatal(err)
	}
	bal, _ := p.Billing.Balance(ctx, wallet)
	fmt.Println(p.Domains.FullDomain(d.Subdomain), tok.Domain.LocalPort, tok.ExpiresAt.Sub(p.Now()).Round(60e9), bal.Total.FloorCents())
	// Output: myagent.agents.example 10001 5m0s 95
}

// An agent framework talks to a persona from Go: the reply is written in
// the background, billed to the wallet, and awaited.
func Example_personas() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{Dev: true}) // the offline dev model replies
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	const wallet = "0x00000000000000000000000000000000000000cc"
	if _, err := p.Billing.Ledger().Credit(ctx, billing.Posting{
		Account: wallet, Type: billing.Purchase, Amount: billing.Dollar, Description: "grant",
	}); err != nil {
		log.Fatal(err)
	}
	persona, err := p.Personas.CreatePersona(ctx, wallet, "mentor", "Code reviewer")
	if err != nil {
		log.Fatal(err)
	}
	session, err := p.Personas.CreateSession(ctx, wallet, persona.ID, "Design review")
	if err != nil {
		log.Fatal(err)
	}
	_, pending, err := p.Personas.Send(ctx, wallet, persona.ID, session.ID, "Should this cache be per process?")
	if err != nil {
		log.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reply, err := p.Personas.Await(actx, session.ID, pending.ID)
	if err != nil {
		log.Fatal(err)
	}
	bal, _ := p.Billing.Balance(ctx, wallet)
	fmt.Println(reply.Role, reply.Status, bal.Total < billing.Dollar)
	// Output: assistant complete true
}

// An agent transcribes a voice note from Go: any io.Reader, billed per
// second of audio with the same checks, holds and billing as
// POST /api/v1/audio/transcriptions.
func Example_transcribe() {
	ctx := context.Background()
	p, err := perceptron.New(ctx, perceptron.Config{Dev: true}) // the offline dev STT model
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	const wallet = "0x00000000000000000000000000000000000000dd"
	if _, err := p.Billing.Ledger().Credit(ctx, billing.Posting{
		Account: wallet, Type: billing.Purchase, Amount: billing.Dollar, Description: "grant",
	}); err != nil {
		log.Fatal(err)
	}
	note, err := os.Open("inference/audio/testdata/speech.wav") // 2.5 s
	if err != nil {
		log.Fatal(err)
	}
	defer note.Close()
	res, err := p.Inference.Transcribe(ctx, wallet, &inference.TranscriptionRequest{
		Model: inference.DevSTTModelID, Audio: note, Filename: "speech.wav", ResponseFormat: inference.FormatText,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.HasPrefix(res.Text, "Perceptron dev transcript"), res.Seconds, res.Entry.Type, res.Entry.Amount)
	// Output: true 3 SttInference -30000
}
