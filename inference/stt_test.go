package inference_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/audio/audiotest"
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
	usage    float64 // json's usage seconds, if > 0
	cueEnd   string  // a last srt/vtt cue ending then (srt's form), if set
	huge     bool    // answer 33 MiB
}

func (f *fakeWhisper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	require.Equal(f.t, "/v1/audio/transcriptions", r.URL.Path)
	require.NoError(f.t, r.ParseMultipartForm(32<<20))
	file, hdr, err := r.FormFile("file")
	require.NoError(f.t, err)
	data, _ := io.ReadAll(file)
	fields := map[string]string{"filename": hdr.Filename, "size": strconvI(len(data)), "auth": r.Header.Get("Authorization"), "x-title": r.Header.Get("X-Title")}
	for k, v := range r.MultipartForm.Value {
		fields[k] = v[0]
	}
	f.mu.Lock()
	f.got = append(f.got, fields)
	status, delay, dur, huge, usage, cueEnd := f.status, f.delay, f.duration, f.huge, f.usage, f.cueEnd
	f.mu.Unlock()
	if huge {
		io.WriteString(w, `{"text":"`+strings.Repeat("a", 33<<20)+`"}`)
		return
	}
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
		if cueEnd != "" {
			io.WriteString(w, "2\n00:00:02,500 --> "+cueEnd+"\n"+text+"\n\n")
		}
	case "vtt":
		io.WriteString(w, "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n"+text+"\n\n")
		if cueEnd != "" {
			io.WriteString(w, "00:02.500 --> "+strings.ReplaceAll(cueEnd, ",", ".")+" align:start\n"+text+"\n\n")
		}
	case "verbose_json":
		json.NewEncoder(w).Encode(map[string]any{"task": "transcribe", "language": "english", "duration": dur, "text": text,
			"segments": []map[string]any{{"id": 0, "start": 0, "end": dur, "text": text}}})
	default:
		if usage > 0 {
			json.NewEncoder(w).Encode(map[string]any{"text": text, "usage": map[string]any{"type": "duration", "seconds": usage}})
			return
		}
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
		res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), Filename: "speech.wav",
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
	require.Equal(t, "0.20", got["temperature"])
	require.Equal(t, "segment", got["timestamp_granularities[]"])
	require.Equal(t, "verbose_json", got["response_format"])
	es, err := billing.AllEntries(ctx, led, acct, billing.EntryFilter{Types: []billing.TxType{billing.SttInference}})
	require.NoError(t, err)
	require.Len(t, es, 6)
	require.Equal(t, billing.MicroCents(-50_000), es[5].Amount, "5 s at 10,000 micro-cents")

	// Refusals and failures cost nothing.
	before, _ := led.Balance(ctx, acct)
	f.status = 400
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav)})
	require.Equal(t, fault.Upstream, fault.CodeOf(err))
	f.status = 503
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav)})
	require.Equal(t, fault.Unavailable, fault.CodeOf(err))
	require.Equal(t, inference.MsgUnavailable, fault.MessageOf(err))
	f.status = 0
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav[:30])})
	require.Equal(t, fault.Invalid, fault.CodeOf(err))
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: strings.NewReader("not audio at all")})
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
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav)})
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
			_, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav)})
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

// sttFallbackService is a service over two fake whispers: the model's primary
// and its fallback, with a fast retry and a breaker that opens after 2
// failures; the primary also serves chat under the same name.
func sttFallbackService(t *testing.T, primary, fallback *fakeWhisper, clk *clock) (*inference.Service, billing.Ledger, *inference.Router) {
	mk := func(name string, f *fakeWhisper) inference.STTProvider {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: name, BaseURL: srv.URL + "/v1", APIKey: "sk-" + name})
		require.NoError(t, err)
		return p
	}
	chat := scripted("primary", never)
	r, err := inference.NewRouter([]inference.ModelProvider{chat}, inference.RouterOptions{
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond, FailureThreshold: 2, Cooldown: time.Minute, Now: clk.Now,
		STTProviders: []inference.STTProvider{mk("primary", primary), mk("fallback", fallback)},
	})
	require.NoError(t, err)
	st := memory.New()
	cat, err := inference.NewCatalog(inference.Model{ID: "chat-1", Name: "Chat", ContextLength: 1000, MaxOutputTokens: 100,
		InputCentsPer1M: 1, OutputCentsPer1M: 1, Providers: []string{"primary"}})
	require.NoError(t, err)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: st, Router: r,
		STTModels: []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"primary", "fallback"}}}})
	require.NoError(t, err)
	return svc, st, r
}

// A primary that is down: the request falls back to the next provider,
// after a retry; two such failures open the primary's breaker, which is
// the chat provider's too (one upstream), and requests go straight to
// the fallback until the cooldown passes. A provider that refuses the
// request (a 400) is not retried, nothing is charged, and the breaker
// stays closed.
func TestTranscribeFallbackAndSharedBreaker(t *testing.T) {
	primary, fallback := &fakeWhisper{t: t, status: 503}, &fakeWhisper{t: t}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	svc, led, r := sttFallbackService(t, primary, fallback, clk)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000e1"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, _ := os.ReadFile("audio/testdata/speech.wav")
	transcribe := func() (*inference.TranscriptionResult, error) {
		return svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), Filename: "a.wav"})
	}
	res, err := transcribe()
	require.NoError(t, err)
	require.Equal(t, "{\"text\":\"hello from whisper\"}\n", string(res.Body), "the upstream's bytes, passed on")
	require.Len(t, primary.got, 2, "the primary was tried twice")
	require.Len(t, fallback.got, 1)
	require.Equal(t, strconvI(len(wav)), fallback.got[0]["size"], "each attempt sends the whole file")
	require.Equal(t, "Bearer sk-fallback", fallback.got[0]["auth"])
	require.Equal(t, inference.BreakerOpen, r.BreakerState("primary"), "two failures opened it")
	_, err = svc.Complete(ctx, acct, &inference.ChatRequest{Model: "chat-1", Messages: []inference.Message{{Role: "user", Content: "hi"}}})
	require.Equal(t, fault.Unavailable, fault.CodeOf(err), "chat on the same upstream sees the open breaker: %v", err)

	_, err = transcribe()
	require.NoError(t, err)
	require.Len(t, primary.got, 2, "an open breaker skips the primary")
	require.Len(t, fallback.got, 2)

	clk.Advance(2 * time.Minute)
	primary.mu.Lock()
	primary.status = 0
	primary.mu.Unlock()
	_, err = transcribe()
	require.NoError(t, err)
	require.Len(t, primary.got, 3, "after the cooldown a probe goes to the primary and closes it")
	require.Equal(t, inference.BreakerClosed, r.BreakerState("primary"))

	// A refusal: not retried, not sent to the fallback, free.
	before, _ := led.Balance(ctx, acct)
	primary.mu.Lock()
	primary.status = 400
	primary.mu.Unlock()
	fallback.mu.Lock()
	fallback.status = 400
	fallback.mu.Unlock()
	_, err = transcribe()
	require.Equal(t, fault.Upstream, fault.CodeOf(err), "%v", err)
	require.Len(t, primary.got, 4)
	require.Equal(t, inference.BreakerClosed, r.BreakerState("primary"))
	after, _ := led.Balance(ctx, acct)
	require.Equal(t, before, after)
	es, err := billing.AllEntries(ctx, led, acct, billing.EntryFilter{Types: []billing.TxType{billing.SttInference}})
	require.NoError(t, err)
	require.Len(t, es, 3)
}

// A slow answer within the provider's timeout is waited for and billed.
func TestTranscribeSlowAnswer(t *testing.T) {
	f := &fakeWhisper{t: t, delay: 400 * time.Millisecond, duration: 2.5}
	svc, led := sttService(t, f, 5*time.Second)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000e2"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, _ := os.ReadFile("audio/testdata/speech.wav")
	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Seconds)
	require.Equal(t, billing.MicroCents(-30_000), res.Entry.Amount)
}

// writeWAV writes seconds of a tone as a WAV file and returns its path.
func writeWAV(t testing.TB, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "long.wav")
	require.NoError(t, audiotest.WriteWAV(path, seconds))
	return path
}

// An upload past its first MiB is kept in a temporary file, unlinked
// while it is read, and the provider receives every byte; one over the
// limit is refused as TooLarge before anything is sent, and nothing is
// charged. A caller's io.Reader is read once, to its end.
func TestTranscribeLargeUploads(t *testing.T) {
	f := &fakeWhisper{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "whisper", BaseURL: srv.URL + "/v1"})
	require.NoError(t, err)
	tmp := t.TempDir()
	cat, _ := inference.NewCatalog()
	st := memory.New()
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: st, MaxAudioBytes: 4 << 20, AudioTempDir: tmp,
		STTModels:    []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"whisper"}}},
		STTProviders: []inference.STTProvider{p}})
	require.NoError(t, err)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000e3"
	_, err = st.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)

	path := writeWAV(t, 100) // 3.2 MB
	file, err := os.Open(path)
	require.NoError(t, err)
	defer file.Close()
	fi, _ := file.Stat()
	af, err := svc.ReadAudio(ctx, "", file)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), af.Size())
	left, _ := os.ReadDir(tmp)
	require.Empty(t, left, "the temporary file is unlinked while in use")
	want, _ := os.ReadFile(path)
	got, err := io.ReadAll(io.NewSectionReader(af, 0, af.Size()))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "ReadAt across memory and file")
	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: af, Filename: "long.wav"})
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Seconds)
	require.Equal(t, strconvI(len(want)), f.got[0]["size"])
	require.NoError(t, af.Close())

	// From a plain io.Reader (not seekable), without a name: the same,
	// named for its format upstream.
	res, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: io.MultiReader(bytes.NewReader(want))})
	require.NoError(t, err)
	require.Equal(t, int64(100), res.Seconds)
	require.Equal(t, "audio.wav", f.got[1]["filename"])

	before, _ := st.Balance(ctx, acct)
	big := writeWAV(t, 140) // 4.5 MB: over the 4 MiB limit
	bf, _ := os.Open(big)
	defer bf.Close()
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bf})
	require.ErrorIs(t, err, inference.ErrAudioTooLarge)
	require.Equal(t, fault.TooLarge, fault.CodeOf(err))
	require.Equal(t, "audio file too large (max 4 MB)", fault.MessageOf(err))
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: strings.NewReader("")})
	require.Equal(t, "file is empty", fault.MessageOf(err))
	after, _ := st.Balance(ctx, acct)
	require.Equal(t, before, after, "refusals cost nothing and hold nothing")
	require.Len(t, f.got, 2, "nothing refused reached the provider")
	left, _ = os.ReadDir(tmp)
	require.Empty(t, left)
}

// A wallet that cannot pay $0.05 is refused before its audio is read.
func TestTranscribeRefusesAnEmptyWalletFirst(t *testing.T) {
	svc, _ := sttService(t, &fakeWhisper{t: t}, 0)
	r := &countingReader{r: strings.NewReader("RIFF....WAVE")}
	_, err := svc.Transcribe(context.Background(), "0x00000000000000000000000000000000000000e4", &inference.TranscriptionRequest{Model: "whisper-1", Audio: r})
	require.Equal(t, fault.InsufficientFunds, fault.CodeOf(err))
	require.Equal(t, inference.MsgInsufficientCredits, fault.MessageOf(err))
	require.Zero(t, r.n, "not a byte read")
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// The dev STT model describes the audio it read: the same file gives the
// same transcript, another file another one, and verbose_json reports
// the duration as a whisper server does.
func TestDevSTTIsDeterministicAndReadsTheAudio(t *testing.T) {
	ctx := context.Background()
	run := func(name, format string) *inference.Transcription {
		data, err := os.ReadFile("audio/testdata/" + name)
		require.NoError(t, err)
		tr, err := inference.DevSTTProvider{}.Transcribe(ctx, &inference.TranscriptionRequest{Audio: bytes.NewReader(data), Size: int64(len(data)), ResponseFormat: format})
		require.NoError(t, err)
		return tr
	}
	a, b, c := run("speech.wav", ""), run("speech.wav", ""), run("speech.flac", "")
	require.Equal(t, a.Text, b.Text)
	require.NotEqual(t, a.Text, c.Text)
	require.Contains(t, a.Text, "2.50 s of wav audio")
	require.Contains(t, c.Text, "of flac audio")
	var v struct {
		Duration float64 `json:"duration"`
		Text     string  `json:"text"`
		Segments []struct {
			End float64 `json:"end"`
		} `json:"segments"`
	}
	require.NoError(t, json.Unmarshal(run("speech.ogg", "verbose_json").Body, &v))
	require.InDelta(t, 2.5, v.Duration, 0.01)
	require.InDelta(t, v.Duration, v.Segments[0].End, 1e-9)
	require.Contains(t, string(run("speech.mp3", "vtt").Body), "WEBVTT\n\n00:00:00.000 --> 00:00:02.628\n")
	_, err := inference.DevSTTProvider{}.Transcribe(ctx, &inference.TranscriptionRequest{Audio: strings.NewReader("not audio"), Size: 9})
	require.Equal(t, fault.Invalid, fault.CodeOf(err))
}

// The provider sends the configured extra headers, and an answer past
// MaxAnswerBytes is cut, not read whole: the request fails, and nothing
// is charged.
func TestOpenAISTTProviderHeadersAndBoundedAnswer(t *testing.T) {
	f := &fakeWhisper{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "w", BaseURL: srv.URL + "/v1", Header: http.Header{"X-Title": {"Perceptron"}}})
	require.NoError(t, err)
	wav, _ := os.ReadFile("audio/testdata/speech.wav")
	tr, err := p.Transcribe(context.Background(), &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), Size: int64(len(wav))})
	require.NoError(t, err)
	require.Equal(t, "hello from whisper", tr.Text)
	require.Equal(t, "Perceptron", f.got[0]["x-title"])

	f.huge = true
	_, err = p.Transcribe(context.Background(), &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), Size: int64(len(wav))})
	require.Error(t, err)
	require.NotEqual(t, fault.Unknown, fault.CodeOf(err), "%v", err)
	require.Contains(t, err.Error(), "answer larger than")
}

// The temporary files of the uploads in progress share one budget: past
// it an upload is refused (RateLimited, 429 over HTTP), and a finished
// upload gives its bytes back.
func TestAudioSpoolBudget(t *testing.T) {
	cat, _ := inference.NewCatalog()
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: memory.New(), MaxAudioSpool: 3 << 20,
		STTModels: []inference.STTModel{inference.DevSTTModel()}, STTProviders: []inference.STTProvider{inference.DevSTTProvider{}}})
	require.NoError(t, err)
	ctx := context.Background()
	upload := bytes.Repeat([]byte{1}, 5<<19) // 2.5 MiB: 1.5 MiB to disk
	first, err := svc.ReadAudio(ctx, "", bytes.NewReader(upload))
	require.NoError(t, err)
	second, err := svc.ReadAudio(ctx, "", bytes.NewReader(upload))
	require.NoError(t, err)
	_, err = svc.ReadAudio(ctx, "", bytes.NewReader(upload))
	require.ErrorIs(t, err, inference.ErrAudioSpoolFull)
	require.Equal(t, fault.RateLimited, fault.CodeOf(err))
	require.Equal(t, inference.MsgAudioSpoolFull, fault.MessageOf(err))
	small, err := svc.ReadAudio(ctx, "", bytes.NewReader(upload[:1<<19]))
	require.NoError(t, err, "an upload that fits in memory needs no room")
	small.Close()
	require.NoError(t, first.Close())
	third, err := svc.ReadAudio(ctx, "", bytes.NewReader(upload))
	require.NoError(t, err, "a closed upload gave its bytes back")
	third.Close()
	second.Close()
}
