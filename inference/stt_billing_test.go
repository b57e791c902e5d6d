package inference_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/inference/audio/audiotest"
	"github.com/perceptron-cloud/perceptron/storage/memory"
)

// sttBillingService is a service over a fake whisper at 36 cents an hour
// (10,000 micro-cents a second) whose log is kept in logs.
func sttBillingService(t *testing.T, f *fakeWhisper, logs *bytes.Buffer) (*inference.Service, billing.Ledger) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	p, err := inference.NewOpenAISTTProvider(inference.OpenAIConfig{Name: "whisper", BaseURL: srv.URL + "/v1"})
	require.NoError(t, err)
	st := memory.New()
	cat, err := inference.NewCatalog()
	require.NoError(t, err)
	svc, err := inference.NewService(inference.Options{Catalog: cat, Ledger: st, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		STTModels:    []inference.STTModel{{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"whisper"}}},
		STTProviders: []inference.STTProvider{p}})
	require.NoError(t, err)
	return svc, st
}

// sttEntries returns the account's SttInference entries.
func sttEntries(t *testing.T, l billing.Ledger, acct string) []billing.Entry {
	t.Helper()
	es, err := billing.AllEntries(context.Background(), l, acct, billing.EntryFilter{Types: []billing.TxType{billing.SttInference}})
	require.NoError(t, err)
	return es
}

// A 1-second WAV whose provider reports 36,000 s is charged 36,000 s:
// 360 cents, not the 5-cent hold, in one SttInference entry. A provider
// reporting an absurd duration is billed at most 24 hours.
func TestTranscribeChargesTheReportedDurationBeyondTheHold(t *testing.T) {
	f := &fakeWhisper{t: t, duration: 36000}
	var logs bytes.Buffer
	svc, led := sttBillingService(t, f, &logs)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000f1"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.FromCents(1000), Description: "t"})
	require.NoError(t, err)
	wav, err := os.ReadFile(writeWAV(t, 1))
	require.NoError(t, err)

	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.NoError(t, err)
	require.Equal(t, int64(36000), res.Seconds)
	require.Equal(t, -billing.FromCents(360), res.Entry.Amount, "36,000 s at 36 cents an hour")
	bal, err := led.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.FromCents(640)}, bal)
	es := sttEntries(t, led, acct)
	require.Len(t, es, 1, "one entry")
	require.Equal(t, "STT: whisper-1 (36000 s of wav audio)", es[0].Description)
	require.Equal(t, -billing.FromCents(360), es[0].Amount)
	require.NotContains(t, logs.String(), "shortfall", "nothing to log when the wallet covers it")

	// 1e300 seconds is billed as 24 hours: 864 cents, were they there.
	f.mu.Lock()
	f.duration = 1e300
	f.mu.Unlock()
	res, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.NoError(t, err)
	require.Equal(t, int64(86400), res.Seconds)
	require.Equal(t, -billing.FromCents(640), res.Entry.Amount, "all the wallet has, not more")
	bal, err = led.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{}, bal)
}

// OpenAI's json answer reports the duration in its usage object: it is
// billed too, so the default format does not fall back to the file's
// declared duration.
func TestTranscribeChargesJSONUsageSeconds(t *testing.T) {
	f := &fakeWhisper{t: t, usage: 599.2}
	var logs bytes.Buffer
	svc, led := sttBillingService(t, f, &logs)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000f4"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, err := os.ReadFile(writeWAV(t, 1))
	require.NoError(t, err)
	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav)})
	require.NoError(t, err)
	require.Equal(t, int64(600), res.Seconds)
	require.Equal(t, -billing.FromCents(6), res.Entry.Amount, "600 s at 36 cents an hour")
	require.Contains(t, string(res.Body), `"usage"`, "the upstream's bytes, passed on")

	// A text answer is asked for as json, so its usage is billed too,
	// and answered as the transcript and a newline.
	res, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "text"})
	require.NoError(t, err)
	require.Equal(t, "hello from whisper\n", string(res.Body))
	require.Equal(t, int64(600), res.Seconds)
	require.Equal(t, "json", f.got[len(f.got)-1]["response_format"])
}

// srt and vtt answers report no duration, but their cues are the
// provider's timeline: a 1-second WAV whose last cue ends at one hour is
// billed an hour (36 cents); cues ending before the measured duration
// leave it billed.
func TestTranscribeChargesUntilTheLastCue(t *testing.T) {
	f := &fakeWhisper{t: t, cueEnd: "01:00:00,000"}
	var logs bytes.Buffer
	svc, led := sttBillingService(t, f, &logs)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000f5"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: 2 * billing.Dollar, Description: "t"})
	require.NoError(t, err)
	wav, err := os.ReadFile(writeWAV(t, 1))
	require.NoError(t, err)
	for _, format := range []string{"srt", "vtt"} {
		res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: format})
		require.NoError(t, err, format)
		require.Equal(t, int64(3600), res.Seconds, format)
		require.Equal(t, -billing.FromCents(36), res.Entry.Amount, format)
	}
	long, err := os.ReadFile(writeWAV(t, 10))
	require.NoError(t, err)
	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(long), ResponseFormat: "vtt"})
	require.NoError(t, err)
	require.Equal(t, int64(3600), res.Seconds)
	f.mu.Lock()
	f.cueEnd = ""
	f.mu.Unlock()
	res, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(long), ResponseFormat: "srt"})
	require.NoError(t, err)
	require.Equal(t, int64(10), res.Seconds, "cues ending at 2.5 s: the measured 10 s")
}

// A wallet that cannot cover what the provider reports pays everything
// it has, never more: its balance ends at zero, not below; the
// transcript is returned; the shortfall is logged. A hold of another
// request of the wallet is left alone.
func TestTranscribeBeyondTheBalanceChargesWhatIsAvailable(t *testing.T) {
	f := &fakeWhisper{t: t, duration: 36000}
	var logs bytes.Buffer
	svc, led := sttBillingService(t, f, &logs)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000f2"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.FromCents(100), Description: "t"})
	require.NoError(t, err)
	other, err := led.PlaceHold(ctx, billing.HoldRequest{Account: acct, Amount: billing.FromCents(30), ExpiresAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	wav, err := os.ReadFile(writeWAV(t, 1))
	require.NoError(t, err)

	res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.NoError(t, err, "the work is done: the transcript is returned")
	require.Contains(t, string(res.Body), "hello from whisper")
	require.Equal(t, int64(36000), res.Seconds)
	require.Equal(t, -billing.FromCents(70), res.Entry.Amount, "the 70 cents available, not the 30 held by another request")
	bal, err := led.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.FromCents(30), Held: billing.FromCents(30)}, bal)
	require.NoError(t, led.ReleaseHold(ctx, other.ID))
	require.Len(t, sttEntries(t, led, acct), 1)
	require.Contains(t, logs.String(), "charged its whole available balance")
	require.Contains(t, logs.String(), "shortfall_micro_cents=290000000")

	// The wallet now has 30 cents: a new transcription is still held
	// and charged within it; with nothing left it is refused up front.
	res, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.NoError(t, err)
	require.Equal(t, -billing.FromCents(30), res.Entry.Amount)
	_, err = svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(wav), ResponseFormat: "verbose_json"})
	require.Equal(t, fault.InsufficientFunds, fault.CodeOf(err))
	bal, err = led.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{}, bal)
	require.Len(t, f.got, 2, "the refused request never reached the provider")
}

// Files whose declared durations overflowed 64-bit nanoseconds (and were
// billed 1 to 2 s) are refused before anything is sent or charged.
func TestTranscribeRefusesOverflowingDurations(t *testing.T) {
	f := &fakeWhisper{t: t}
	var logs bytes.Buffer
	svc, led := sttBillingService(t, f, &logs)
	ctx := context.Background()
	const acct = "0x00000000000000000000000000000000000000f3"
	_, err := led.Credit(ctx, billing.Posting{Account: acct, Type: billing.Purchase, Amount: billing.Dollar, Description: "t"})
	require.NoError(t, err)
	read := func(name string) []byte {
		data, err := os.ReadFile("audio/testdata/" + name)
		require.NoError(t, err)
		return data
	}
	for format, data := range map[string][]byte{
		"flac": audiotest.FLACDeclaring(read("speech.flac"), audiotest.OverflowSamples, 1),
		"mp4":  audiotest.MP4Declaring(read("speech.m4a"), audiotest.OverflowSamples, 1),
		"ogg":  audiotest.OggDeclaring(read("speech.ogg"), audiotest.OverflowGranule),
	} {
		res, err := svc.Transcribe(ctx, acct, &inference.TranscriptionRequest{Model: "whisper-1", Audio: bytes.NewReader(data)})
		if err == nil {
			t.Fatalf("%s: billed %d s", format, res.Seconds)
		}
		require.Equal(t, fault.Invalid, fault.CodeOf(err), format)
		require.Equal(t, "could not read the audio file: the "+format+" file is longer than 24 hours", fault.MessageOf(err))
	}
	require.Empty(t, f.got, "nothing reached the provider")
	bal, err := led.Balance(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, billing.Balance{Total: billing.Dollar}, bal)
	require.False(t, strings.Contains(logs.String(), "level=ERROR"), logs.String())
}
