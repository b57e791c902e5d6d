package httpserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/audio/audiotest"
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

// multipartBody is a transcription form: the file first (as go-openai
// and the openai npm client send it), then the fields.
func multipartBody(t *testing.T, file []byte, fields ...string) (*bytes.Buffer, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if file != nil {
		fw, err := mw.CreateFormFile("file", "speech.wav")
		require.NoError(t, err)
		_, _ = fw.Write(file)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		require.NoError(t, mw.WriteField(fields[i], fields[i+1]))
	}
	require.NoError(t, mw.Close())
	return &b, mw.FormDataContentType()
}

// postForm sends a transcription form and returns the status, the
// Content-Type and the body.
func (e *env) postForm(token string, body io.Reader, contentType string, size int64) (int, string, string) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.url+"/api/v1/audio/transcriptions", body)
	require.NoError(e.t, err)
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func errMessage(t *testing.T, body string) string {
	t.Helper()
	var out struct {
		Error struct{ Message, Type string }
	}
	require.NoError(t, json.Unmarshal([]byte(body), &out), body)
	return out.Error.Message
}

// Every refusal of the route, with its status and message, costs
// nothing: a form without a file or a model, an unknown model, a bad
// format or temperature, an empty, truncated or foreign file, one over
// the limit (declared, and streamed without a length), a wallet that
// cannot pay, an upstream that is down; then every response_format
// answered with its Content-Type.
func TestTranscriptionRefusals(t *testing.T) {
	whisper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
	}))
	t.Cleanup(whisper.Close)
	down, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "down", BaseURL: whisper.URL + "/v1", Timeout: 2 * time.Second})
	require.NoError(t, err)
	e := newEnv(t, perceptron.Config{Dev: true, Inference: perceptron.InferenceConfig{
		MaxAudioBytes: 1 << 20,
		STTModels:     []inference.STTModel{{ID: "down/whisper", Name: "Down", CentsPerHour: 36, Providers: []string{"down"}}},
		STTProviders:  []inference.STTProvider{down},
	}})
	a := e.newAgent(t, billing.FromCents(100))
	poor := e.newAgent(t, billing.FromCents(4))
	wav, err := os.ReadFile("../inference/audio/testdata/speech.wav")
	require.NoError(t, err)
	dev := inference.DevSTTModelID
	before := e.ledgerBalance(a.account)

	cases := []struct {
		name   string
		file   []byte
		fields []string
		status int
		msg    string
	}{
		{"no file", nil, []string{"model", dev}, 400, "file is required"},
		{"no model", wav, nil, 400, "model is required"},
		{"unknown model", wav, []string{"model", "whisper-9"}, 400, "invalid model 'whisper-9'. Available STT models: down/whisper, perceptron/dev-stt"},
		{"bad format", wav, []string{"model", dev, "response_format", "xml"}, 400, "response_format must be json, text, srt, vtt or verbose_json"},
		{"bad temperature", wav, []string{"model", dev, "temperature", "hot"}, 400, "temperature must be a number between 0 and 1"},
		{"bad granularity", wav, []string{"model", dev, "timestamp_granularities[]", "char"}, 400, "timestamp_granularities[] must be word or segment"},
		{"empty", []byte{}, []string{"model", dev}, 400, "file is empty"},
		{"truncated", wav[:60], []string{"model", dev}, 400, "could not read the audio file: the wav file is truncated or damaged"},
		{"not audio", []byte("%PDF-1.7\nnot audio"), []string{"model", dev}, 400, "could not read the audio file: unsupported audio format: send wav, mp3, flac, ogg (opus), webm or m4a"},
		{"too large", bytes.Repeat(wav, 14), []string{"model", dev}, 413, "audio file too large (max 1 MB)"},
		{"upstream down", wav, []string{"model", "down/whisper"}, 502, "inference service unavailable"},
	}
	for _, c := range cases {
		body, ct := multipartBody(t, c.file, c.fields...)
		st, _, out := e.postForm(a.key, body, ct, int64(body.Len()))
		require.Equal(t, c.status, st, "%s: %s", c.name, out)
		require.Equal(t, c.msg, errMessage(t, out), c.name)
	}
	// Over the limit without a declared length: cut as it streams.
	body, ct := multipartBody(t, bytes.Repeat(wav, 40), "model", dev)
	st, _, out := e.postForm(a.key, io.MultiReader(body), ct, -1)
	require.Equal(t, 413, st, out)
	// Not multipart at all.
	st, _, out = e.postForm(a.key, strings.NewReader(`{"model":"x"}`), "application/json", -1)
	require.Equal(t, 400, st, out)
	require.Equal(t, "the request must be multipart/form-data", errMessage(t, out))
	// A wallet with 4 cents.
	body, ct = multipartBody(t, wav, "model", dev)
	st, _, out = e.postForm(poor.key, body, ct, int64(body.Len()))
	require.Equal(t, 402, st, out)
	require.Equal(t, "insufficient credits (need at least $0.05 for this request)", errMessage(t, out))
	require.Equal(t, before, e.ledgerBalance(a.account), "refusals cost nothing and hold nothing")
	require.Empty(t, e.history(poor.key)[1:], "only the credit")

	// Each format with its Content-Type.
	for format, want := range map[string]string{"json": "application/json", "verbose_json": "application/json",
		"text": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8"} {
		body, ct := multipartBody(t, wav, "model", dev, "response_format", format, "language", "en", "temperature", "0")
		st, gotCT, out := e.postForm(a.key, body, ct, int64(body.Len()))
		require.Equal(t, 200, st, out)
		require.Equal(t, want, gotCT, format)
		require.Contains(t, out, "Perceptron dev transcript (offline)", format)
	}
	require.Len(t, e.history(a.key), 6, "five transcriptions and the credit")
	e.checkLedgerAddsUp(a)
}

// Sixteen transcriptions at once over HTTP against a balance for three:
// the others are refused with 402, the balance never goes below zero,
// and the history adds up exactly.
func TestTranscriptionConcurrentOverHTTP(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, 3*inference.MinimumHold+inference.MinimumHold/2)
	wav, err := os.ReadFile("../inference/audio/testdata/speech.wav")
	require.NoError(t, err)
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			var b bytes.Buffer
			mw := multipart.NewWriter(&b)
			fw, _ := mw.CreateFormFile("file", "speech.wav")
			fw.Write(wav)
			mw.WriteField("model", inference.DevSTTModelID)
			mw.Close()
			req, _ := http.NewRequest("POST", e.url+"/api/audio/transcriptions", &b)
			req.Header.Set("Authorization", "Bearer "+a.key)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 402:
				refused.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(16), ok.Load()+refused.Load())
	require.GreaterOrEqual(t, ok.Load(), int64(3))
	h := e.checkLedgerAddsUp(a)
	stt := 0
	for _, tx := range h {
		if tx.TxType == "SttInference" {
			stt++
			require.Equal(t, int64(-30_000), tx.AmountMicroCents)
		}
	}
	require.Equal(t, int(ok.Load()), stt)
}

// openAudioFiles counts this process's open temporary upload files
// (unlinked, so seen only through /proc/self/fd).
func openAudioFiles(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("this test reads /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.Contains(l, "perceptron-audio-") {
			n++
		}
	}
	return n
}

// Twenty uploads that send 6 MB each and then stall hold about a MiB of
// memory each (the rest waits in unlinked temporary files), not their 120
// MB; the idle bound cuts them, their files are gone, and nothing is held
// or charged.
func TestStalledUploadsHoldLittleMemory(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.Dollar)
	// The idle bound is long enough for all twenty to be in flight at
	// once on a loaded machine (the race detector, CI).
	hs := serveHostile(t, e, httpserver.Options{BodyIdleTimeout: 6 * time.Second}, httpserver.ConnLimits{})
	wav, err := os.ReadFile("../inference/audio/testdata/speech.wav")
	require.NoError(t, err)
	chunk := bytes.Repeat(wav, 6<<20/len(wav))
	before := heapInUse()
	const n = 20
	var conns []net.Conn
	for range n {
		c := dialFrom(t, "127.0.0.1", hs.addr)
		defer c.Close()
		fmt.Fprintf(c, "POST /api/v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 25000000\r\n\r\n"+
			"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n", a.key)
		_, err := c.Write(chunk)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.Eventually(t, func() bool { return openAudioFiles(t) == n }, 20*time.Second, 20*time.Millisecond, "every upload past its first MiB is on disk")
	growth := int64(heapInUse()) - int64(before)
	t.Logf("heap growth with %d stalled 6 MB uploads: %d MB", n, growth>>20)
	require.Less(t, growth, int64(70<<20), "stalled uploads must not keep their bytes in memory")
	for _, c := range conns {
		require.True(t, closedWithin(c, 20*time.Second), "a stalled upload is cut at the idle bound")
	}
	require.Eventually(t, func() bool { return openAudioFiles(t) == 0 }, 5*time.Second, 20*time.Millisecond, "their files are closed")
	b := e.ledgerBalance(a.account)
	require.Equal(t, billing.Dollar, b.Total)
	require.Zero(t, b.Held)
}

// Transcriptions count in the metrics: total_requests_24h, the stt line
// of cost_by_service, and stt_cost_cents in the history's buckets.
func TestTranscriptionMetrics(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.Dollar)
	wav, err := os.ReadFile("../inference/audio/testdata/speech.wav")
	require.NoError(t, err)
	for range 2 {
		body, ct := multipartBody(t, wav, "model", inference.DevSTTModelID)
		st, _, out := e.postForm(a.key, body, ct, int64(body.Len()))
		require.Equal(t, 200, st, out)
	}
	var sum struct {
		TotalRequests int64 `json:"total_requests_24h"`
		Cost          []struct {
			Service   string `json:"service"`
			CostCents int64  `json:"cost_cents"`
		} `json:"cost_by_service"`
	}
	e.getJSON("/api/metrics/summary", a.master, &sum)
	require.Equal(t, int64(2), sum.TotalRequests)
	found := false
	for _, c := range sum.Cost {
		if c.Service == "stt" {
			found = true
			require.Equal(t, int64(1), c.CostCents, "0.06 cents, rounded up once")
		}
	}
	require.True(t, found, "%+v", sum)
	var hist struct {
		Buckets []struct {
			STTCost int64 `json:"stt_cost_cents"`
		} `json:"buckets"`
	}
	e.getJSON("/api/metrics/history?period=24&bucket_minutes=60", a.master, &hist)
	var stt int64
	for _, b := range hist.Buckets {
		stt += b.STTCost
	}
	require.Equal(t, int64(1), stt)
}

// An upload is read only for a wallet that can pay: each upload in
// flight holds $0.05 of its wallet before a byte of its file is read, so
// a wallet with 12 cents has two uploads in flight and a third is
// answered 402 at once, its body unread; a wallet with nothing, too. The
// holds go back when the uploads end.
func TestUploadsInFlightAreBoundedByTheWallet(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true})
	a := e.newAgent(t, billing.FromCents(12))
	broke := e.newAgent(t, 0)
	hs := serveHostile(t, e, httpserver.Options{}, httpserver.ConnLimits{})
	start := func(key string) net.Conn {
		c := dialFrom(t, "127.0.0.1", hs.addr)
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST /api/v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 20000000\r\n\r\n"+
			"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF", key)
		return c
	}
	status := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(line)
	}
	first, second := start(a.key), start(a.key)
	require.Eventually(t, func() bool { return e.ledgerBalance(a.account).Held == 2*inference.MinimumHold }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "HTTP/1.1 402 Payment Required", status(start(a.key)), "a third upload is refused before its body")
	require.Equal(t, "HTTP/1.1 402 Payment Required", status(start(broke.key)))
	first.Close()
	second.Close()
	require.Eventually(t, func() bool { return e.ledgerBalance(a.account).Held == 0 }, 10*time.Second, 20*time.Millisecond, "the holds go back")
	require.Equal(t, billing.FromCents(12), e.ledgerBalance(a.account).Total)
}

// Past the temporary files' budget an upload is answered 429, and
// nothing is held or charged.
func TestTranscriptionSpoolFull(t *testing.T) {
	e := newEnv(t, perceptron.Config{Dev: true, Inference: perceptron.InferenceConfig{MaxAudioSpool: 1 << 20}})
	a := e.newAgent(t, billing.Dollar)
	body, ct := multipartBody(t, bytes.Repeat([]byte("RIFF"), 3<<18), "model", inference.DevSTTModelID) // 3 MiB
	st, _, out := e.postForm(a.key, body, ct, int64(body.Len()))
	require.Equal(t, 429, st, out)
	require.Equal(t, "too many audio uploads in progress: retry later", errMessage(t, out))
	b := e.ledgerBalance(a.account)
	require.Equal(t, billing.Dollar, b.Total)
	require.Zero(t, b.Held)
}

// reportingWhisper is a fake OpenAI-compatible transcription server that
// reads the whole upload and reports seconds of audio, whatever the file
// holds: as verbose_json's duration, or as json's usage seconds (as
// OpenAI answers json).
func reportingWhisper(t *testing.T, seconds float64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.FormValue("response_format") == "verbose_json" {
			json.NewEncoder(w).Encode(map[string]any{"task": "transcribe", "language": "english", "duration": seconds, "text": "a long speech"})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"text": "a long speech", "usage": map[string]any{"type": "duration", "seconds": seconds}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A provider that reports 36,000 s for a 1-second WAV, over HTTP: the
// wallet is charged 360 cents (36,000 s at 36 cents an hour), not the
// 5-cent hold, in one SttInference entry, whether the duration comes in
// verbose_json or in json's usage. A wallet with one dollar pays its
// dollar and gets its transcript; its balance is zero, never below.
// Files whose declared durations overflowed are refused with 400.
func TestTranscriptionChargesTheReportedDuration(t *testing.T) {
	whisper := reportingWhisper(t, 36000)
	prov, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "whisper", BaseURL: whisper.URL + "/v1"})
	require.NoError(t, err)
	e := newEnv(t, perceptron.Config{Dev: true, Inference: perceptron.InferenceConfig{
		STTModels:    []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"whisper"}}},
		STTProviders: []inference.STTProvider{prov},
	}})
	rich := e.newAgent(t, billing.FromCents(1000))
	poor := e.newAgent(t, billing.FromCents(100))
	path := t.TempDir() + "/one.wav"
	require.NoError(t, audiotest.WriteWAV(path, 1))
	wav, err := os.ReadFile(path)
	require.NoError(t, err)

	res, err := e.openAI(rich.key, "/api/v1").CreateTranscription(context.Background(), openai.AudioRequest{
		Model: "whisper-1", FilePath: "one.wav", Reader: bytes.NewReader(wav), Format: openai.AudioResponseFormatVerboseJSON,
	})
	require.NoError(t, err)
	require.Equal(t, 36000.0, res.Duration)
	h := e.history(rich.key)
	require.Equal(t, "SttInference", h[0].TxType)
	require.Equal(t, "STT: whisper-1 (36000 s of wav audio)", h[0].Description)
	require.Equal(t, int64(-360_000_000), h[0].AmountMicroCents, "360 cents, not the 5-cent hold")
	require.Equal(t, int64(640), e.balanceCents(rich.key))

	body, ct := multipartBody(t, wav, "model", "whisper-1")
	st, _, out := e.postForm(rich.key, body, ct, int64(body.Len()))
	require.Equal(t, 200, st, out)
	require.Contains(t, out, `"usage"`)
	h = e.checkLedgerAddsUp(rich)
	require.Len(t, h, 3, "the credit and one entry per transcription")
	require.Equal(t, int64(-360_000_000), h[0].AmountMicroCents, "json's usage seconds are billed too")
	require.Equal(t, int64(280), e.balanceCents(rich.key))

	// One dollar for 3.60 dollars of work: the dollar, no more.
	body, ct = multipartBody(t, wav, "model", "whisper-1", "response_format", "verbose_json")
	st, _, out = e.postForm(poor.key, body, ct, int64(body.Len()))
	require.Equal(t, 200, st, out)
	require.Contains(t, out, "a long speech")
	h = e.checkLedgerAddsUp(poor)
	require.Equal(t, int64(-100_000_000), h[0].AmountMicroCents)
	require.Equal(t, billing.Balance{}, e.ledgerBalance(poor.account))
	body, ct = multipartBody(t, wav, "model", "whisper-1", "response_format", "verbose_json")
	st, _, out = e.postForm(poor.key, body, ct, int64(body.Len()))
	require.Equal(t, 402, st, out)

	// The overflowing files: refused, free.
	read := func(name string) []byte {
		data, err := os.ReadFile("../inference/audio/testdata/" + name)
		require.NoError(t, err)
		return data
	}
	for format, data := range map[string][]byte{
		"flac": audiotest.FLACDeclaring(read("speech.flac"), audiotest.OverflowSamples, 1),
		"mp4":  audiotest.MP4Declaring(read("speech.m4a"), audiotest.OverflowSamples, 1),
		"ogg":  audiotest.OggDeclaring(read("speech.ogg"), audiotest.OverflowGranule),
	} {
		body, ct := multipartBody(t, data, "model", "whisper-1")
		st, _, out := e.postForm(rich.key, body, ct, int64(body.Len()))
		require.Equal(t, 400, st, "%s: %s", format, out)
		require.Equal(t, "could not read the audio file: the "+format+" file is longer than 24 hours", errMessage(t, out))
	}
	require.Len(t, e.checkLedgerAddsUp(rich), 3, "refusals cost nothing")
}
