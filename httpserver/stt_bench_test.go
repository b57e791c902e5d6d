package httpserver_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/crypto"
	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/audio/audiotest"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// benchWAV is a WAV file of about size bytes (16 kHz mono 16-bit).
func benchWAV(b *testing.B, size int) []byte {
	path := filepath.Join(b.TempDir(), "bench.wav")
	require.NoError(b, audiotest.WriteWAV(path, size/32000))
	data, err := os.ReadFile(path)
	require.NoError(b, err)
	return data
}

// benchWhisper is a fake OpenAI-compatible transcription server: it
// reads the whole multipart upload as it streams in, as a real one
// must, and answers json.
func benchWhisper(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		n := int64(0)
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			m, _ := io.Copy(io.Discard, p)
			if p.FormName() == "file" {
				n += m
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"text": fmt.Sprintf("heard %d bytes", n)})
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkTranscription is the latency a transcription through the
// platform adds to calling the transcription server directly, for a 1 MB
// and a 20 MB upload: the same go-openai client sends the same file to
// the fake server (direct), or to the platform's /api/v1 on loopback,
// which reads the upload, measures it, holds its cost, sends it to the
// same fake server and settles in SQLite (sync=full, as the reference
// server runs). Run alternately in one process:
//
//	go test ./httpserver -run '^$' -bench Transcription -benchtime 40x -count 3
func BenchmarkTranscription(b *testing.B) {
	ctx := context.Background()
	whisper := benchWhisper(b)
	prov, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "whisper", BaseURL: whisper.URL + "/v1"})
	require.NoError(b, err)
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	require.NoError(b, err)
	b.Cleanup(func() { store.Close() })
	p, err := perceptron.New(ctx, perceptron.Config{Store: store, Inference: perceptron.InferenceConfig{
		STTModels:    []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"whisper"}}},
		STTProviders: []inference.STTProvider{prov}, AudioTempDir: b.TempDir(),
	}})
	require.NoError(b, err)
	b.Cleanup(func() { p.Close() })
	api := httptest.NewServer(httpserver.New(p, httpserver.Options{}))
	b.Cleanup(api.Close)
	// A wallet logs in as over HTTP (a personal_sign of the nonce).
	key, err := crypto.GenerateKey()
	require.NoError(b, err)
	ch, err := p.Auth.Challenge(ctx)
	require.NoError(b, err)
	sig, err := crypto.Sign(accounts.TextHash([]byte(ch.Nonce)), key)
	require.NoError(b, err)
	sig[64] += 27
	login, err := p.Auth.Verify(ctx, crypto.PubkeyToAddress(key.PublicKey).Hex(), "0x"+hex.EncodeToString(sig), ch.Nonce)
	require.NoError(b, err)
	_, err = p.Billing.Ledger().Credit(ctx, billing.Posting{Account: login.Address, Type: billing.Purchase, Amount: 10_000 * billing.Dollar, Description: "bench"})
	require.NoError(b, err)
	master := login.MasterKey

	client := func(base, key string) *openai.Client {
		cfg := openai.DefaultConfig(key)
		cfg.BaseURL = base
		return openai.NewClientWithConfig(cfg)
	}
	direct := client(whisper.URL+"/v1", "sk-direct")
	platform := client(api.URL+"/api/v1", master)
	for _, size := range []int{1 << 20, 20 << 20} {
		data := benchWAV(b, size)
		for _, target := range []struct {
			name   string
			client *openai.Client
		}{{"direct", direct}, {"platform", platform}} {
			b.Run(fmt.Sprintf("%dMB/%s", size>>20, target.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					res, err := target.client.CreateTranscription(ctx, openai.AudioRequest{Model: "whisper-1", FilePath: "bench.wav", Reader: bytes.NewReader(data)})
					if err != nil {
						b.Fatal(err)
					}
					if res.Text != fmt.Sprintf("heard %d bytes", len(data)) {
						b.Fatalf("answer %q", res.Text)
					}
				}
			})
		}
	}
}
