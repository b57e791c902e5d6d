package httpserver_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/inference"
)

// go-openai's CreateTranscription, unmodified, against the platform's
// /api/v1 with the dev STT model: the transcript, and one SttInference
// entry for the file's 3 seconds (2.5 s rounded up) at 36 cents an hour.
func TestTranscriptionWithGoOpenAI(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.FromCents(100))
	wav, err := os.ReadFile("../inference/audio/testdata/speech.wav")
	require.NoError(t, err)
	client := e.openAI(a.key, "/api/v1")
	res, err := client.CreateTranscription(context.Background(), openai.AudioRequest{
		Model: inference.DevSTTModelID, FilePath: "speech.wav", Reader: bytes.NewReader(wav),
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(res.Text, "Perceptron dev transcript (offline)"), res.Text)
	for _, format := range []openai.AudioResponseFormat{openai.AudioResponseFormatText, openai.AudioResponseFormatSRT, openai.AudioResponseFormatVTT, openai.AudioResponseFormatVerboseJSON} {
		res, err := client.CreateTranscription(context.Background(), openai.AudioRequest{
			Model: inference.DevSTTModelID, FilePath: "speech.wav", Reader: bytes.NewReader(wav), Format: format,
		})
		require.NoError(t, err, format)
		require.Contains(t, res.Text, "dev transcript", format)
	}
	h := e.history(a.key)
	require.Equal(t, "SttInference", h[0].TxType)
	require.Equal(t, "STT: perceptron/dev-stt (3 s of wav audio)", h[0].Description)
	require.Equal(t, int64(-30_000), h[0].AmountMicroCents, "3 s at 10,000 micro-cents a second")

	// Refusals: an unknown model, not audio, nothing charged.
	_, err = client.CreateTranscription(context.Background(), openai.AudioRequest{Model: "nope", FilePath: "a.wav", Reader: bytes.NewReader(wav)})
	apiError(t, err, 400, "invalid model 'nope'. Available STT models: perceptron/dev-stt")
	_, err = client.CreateTranscription(context.Background(), openai.AudioRequest{Model: inference.DevSTTModelID, FilePath: "a.txt", Reader: strings.NewReader("hello, not audio")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "unsupported audio format")
	require.Len(t, e.history(a.key), len(h), "refusals cost nothing")
}
