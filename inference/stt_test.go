package inference_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

// fakeWhisper is an OpenAI-compatible transcription server: it parses the
// real multipart request and answers in the requested format, reporting
// a duration in verbose_json.
type fakeWhisper struct {
	t        *testing.T
	mu       sync.Mutex
	got      []map[string]string
	status   int
	delay    time.Duration
	duration float64
}

func (f *fakeWhisper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	require.Equal(f.t, "/v1/audio/transcriptions", r.URL.Path)
	require.NoError(f.t, r.ParseMultipartForm(32<<20))
	file, hdr, err := r.FormFile("file")
	require.NoError(f.t, err)
	data, _ := io.ReadAll(file)
	fields := map[string]string{"filename": hdr.Filename, "size": strconvI(len(data)), "auth": r.Header.Get("Authorization")}
	for k, v := range r.MultipartForm.Value {
		fields[k] = v[0]
	}
	f.mu.Lock()
	f.got = append(f.got, fields)
	status, delay, dur := f.status, f.delay, f.duration
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"message":"whisper refused","type":"invalid_request_error"}}`)
		return
	}
	text := "hello from whisper"
	switch fields["response_format"] {
	case "text":
		io.WriteString(w, text+"\n")
	case "srt":
		io.WriteString(w, "1\n00:00:00,000 --> 00:00:02,500\n"+text+"\n\n")
	case "vtt":
		io.WriteString(w, "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n"+text+"\n\n")
	case "verbose_json":
		json.NewEncoder(w).Encode(map[string]any{"task": "transcribe", "language": "english", "duration": dur, "text": text,
			"segments": []map[string]any{{"id": 0, "start": 0, "end": dur, "text": text}}})
	default:
		json.NewEncoder(w).Encode(map[string]any{"text": text})
	}
}

func strconvI(n int) string { b, _ := json.Marshal(n); return string(b) }

func sttService(t *testing.T, f *fakeWhisper, timeout time.Duration) (*inference.Service, billing.Ledger) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "whisper", BaseURL: srv.URL + "/v1", APIKey: "sk-w", Timeout: timeout})
	require.NoError(t, err)
	st := memory.New()
	cat, err := inference.NewCatalog()
	require.NoError(t, err)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: st,
		STTModels:    []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"whisper"}}},
		STTProviders: []inference.STTProvider{p}})
	require.NoError(t, err)
	return svc, st
}

func TestTranscribeThroughAFakeWhisper(t *testing.T) {
	f := &fakeWhisper{t: t, duration: 4.2}
	svc, led := sttService(t, f, 0)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000dd"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, err := os.ReadFile("audio/testdata/speech.wav")
	require.NoError(t, err)
	temp := 0.2
	for _, format := range []string{"", "json", "text", "srt", "vtt", "verbose_json"} {
		res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav, Filename: "speech.wav",
			Language: "en", Prompt: "names: Ada", ResponseFormat: format, Temperature: &temp, TimestampGranularities: []string{"segment"}})
		require.NoError(t, err, format)
		require.Contains(t, string(res.Body), "hello from whisper", format)
		if format == "verbose_json" {
			require.Equal(t, int64(5), res.Seconds, "billed by the provider's duration, rounded up")
		} else {
			require.Equal(t, int64(3), res.Seconds, "billed by the measured duration")
		}
	}
	got := f.got[len(f.got)-1]
	require.Equal(t, "speech.wav", got["filename"])
	require.Equal(t, strconvI(len(wav)), got["size"])
	require.Equal(t, "whisper-1", got["model"])
	require.Equal(t, "en", got["language"])
	require.Equal(t, "names: Ada", got["prompt"])
	require.Equal(t, "Bearer sk-w", got["auth"])
	es, err := billing.AllEntries(ctx, led, acct, billing.EntryFilter{Types: []billing.TxType{billing.SttInference}})
	require.NoError(t, err)
	require.Len(t, es, 6)
	require.Equal(t, billing.MicroCents(-50_000), es[5].Amount, "5 s at 10,000 micro-cents")

	// Refusals and failures cost nothing.
	before, _ := led.Balance(ctx, acct)
	f.status = 400
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav})
	require.Equal(t, fault.Upstream, fault.CodeOf(err))
	f.status = 503
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav})
	require.Equal(t, fault.Unavailable, fault.CodeOf(err))
	require.Equal(t, inference.MsgUnavailable, fault.MessageOf(err))
	f.status = 0
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav[:30]})
	require.Equal(t, fault.Invalid, fault.CodeOf(err))
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: []byte("not audio at all")})
	require.Equal(t, fault.Invalid, fault.CodeOf(err))
	after, _ := led.Balance(ctx, acct)
	require.Equal(t, before, after)
}

// A slow whisper past the provider's timeout is unavailable, and nothing
// is charged.
func TestTranscribeTimeout(t *testing.T) {
	f := &fakeWhisper{t: t, delay: 2 * time.Second}
	svc, led := sttService(t, f, 200*time.Millisecond)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000de"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, _ := os.ReadFile("audio/testdata/speech.wav")
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav})
	require.Equal(t, fault.Unavailable, fault.CodeOf(err), "%v", err)
	bal, _ := led.Balance(ctx, acct)
	require.Equal(t, billing.Dollar, bal.Total)
	require.Zero(t, bal.Held)
}

// 16 transcriptions at once against a balance for a few: none overdraws,
// the entries add up.
func TestTranscribeConcurrentNeverOverdraws(t *testing.T) {
	f := &fakeWhisper{t: t, delay: 50 * time.Millisecond, duration: 0}
	svc, led := sttService(t, f, 0)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000df"
	funds := 3 * inference.MinimumHold // holds of at least $0.05 each: three fit
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: funds, Description: "t"})
	require.NoError(t, err)
	wav, _ := os.ReadFile("audio/testdata/speech.wav")
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: wav})
			switch fault.CodeOf(err) {
			case fault.Unknown:
				if err == nil {
					ok.Add(1)
				}
			case fault.InsufficientFunds:
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(16), ok.Load()+refused.Load())
	require.Positive(t, ok.Load())
	require.Positive(t, refused.Load())
	bal, err := led.Balance(ctx, acct)
	require.NoError(t, err)
	require.GreaterOrEqual(t, int64(bal.Total), int64(0))
	require.Zero(t, bal.Held)
	es, err := billing.AllEntries(ctx, led, acct, billing.EntryFilter{})
	require.NoError(t, err)
	sum := billing.MicroCents(0)
	stt := 0
	for _, e := range es {
		sum += e.Amount
		if e.Type == billing.SttInference {
			stt++
			require.Equal(t, billing.MicroCents(-30_000), e.Amount)
		}
	}
	require.Equal(t, bal.Total, sum, "the entries add up to the balance")
	require.Equal(t, int(ok.Load()), stt)
}
