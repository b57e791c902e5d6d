package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/semaphore"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference/audio"
)

// Transcription response formats, as OpenAI names them.
const (
	FormatJSON        = "json"
	FormatText        = "text"
	FormatSRT         = "srt"
	FormatVTT         = "vtt"
	FormatVerboseJSON = "verbose_json"
)

// TranscriptionRequest is a speech-to-text request, as OpenAI's
// POST /v1/audio/transcriptions takes it.
type TranscriptionRequest struct {
	// Model is an STT model of the catalog (the upstream's name for it,
	// as providers receive it).
	Model string
	// Audio is the file: WAV, MP3, FLAC, Ogg Opus, WebM or M4A.
	// [Service.Transcribe] reads it to its end (at most
	// [Service.MaxAudioBytes]) unless it is an [*AudioFile] already read.
	// A provider receives, for each attempt, a copy of the request whose
	// Audio reads the whole file from its start.
	Audio io.Reader
	// Size is the file's length in bytes, as providers receive it; the
	// service ignores the caller's.
	Size int64
	// Filename is the upload's name, passed on (its extension helps some
	// upstreams); "" means "audio".
	Filename string
	Language string
	Prompt   string
	// ResponseFormat is one of the Format constants; "" means json.
	ResponseFormat         string
	Temperature            *float64
	TimestampGranularities []string // "word", "segment"
}

// Transcription is a provider's answer.
type Transcription struct {
	Text     string
	Language string
	// Duration is the audio's length the provider reports, in seconds:
	// verbose_json's duration, or json's usage seconds ({"usage": {"type":
	// "duration", "seconds": n}}, as OpenAI reports it); 0 when it
	// reports none (the text, srt and vtt formats carry no duration).
	Duration float64
	// Body is the answer as the provider wrote it in the requested
	// format (JSON for json and verbose_json, the text otherwise).
	Body []byte
}

// STTProvider transcribes audio: OpenAI, Groq and self-hosted whisper
// servers behind the same multipart API (OpenAISTTProvider), or the
// offline dev model (DevSTTProvider). Errors carry fault codes as
// ModelProvider's do.
type STTProvider interface {
	Name() string
	Transcribe(ctx context.Context, req *TranscriptionRequest) (*Transcription, error)
}

// STTModel is a speech-to-text model of the catalog: priced per hour of
// audio, charged per second.
type STTModel struct {
	ID   string
	Name string
	// CentsPerHour is the price of an hour of audio.
	CentsPerHour int64
	// Providers serve it, tried in order; UpstreamModel is the name they
	// know it by (empty: ID).
	Providers     []string
	UpstreamModel string
}

// OpenAISTTProvider is an [STTProvider] for any OpenAI-compatible
// transcription API (OpenAI, Groq, faster-whisper-server/speaches,
// whisper.cpp's server, vLLM), on go-openai's CreateTranscription: POST
// BaseURL + "/audio/transcriptions" as multipart/form-data. It is safe
// for concurrent use.
//
// go-openai writes the whole form into memory before sending it, so the
// provider bounds the bytes of audio it has in flight at once
// ([STTBufferBytes], waiting for room within the caller's context), and
// it bounds what it reads of an answer ([MaxAnswerBytes]) and of a
// refusal.
type OpenAISTTProvider struct {
	name     string
	client   *openai.Client
	timeout  time.Duration
	inFlight *semaphore.Weighted
}

var _ STTProvider = (*OpenAISTTProvider)(nil)

// STTBufferBytes bounds the audio an [OpenAISTTProvider] holds in memory
// for requests in flight; a request waits for room.
const STTBufferBytes = 256 << 20

// NewOpenAISTTProvider returns a provider for cfg (Name, BaseURL, APIKey,
// Timeout, HTTPClient and Header as for chat). One provider may serve
// chat and speech-to-text: give both the same Name, and they share a
// circuit breaker.
func NewOpenAISTTProvider(cfg OpenAIConfig) (*OpenAISTTProvider, error) {
	if cfg.Name == "" {
		return nil, errors.New("inference: OpenAIConfig.Name is required")
	}
	if u, err := url.Parse(cfg.BaseURL); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("inference: provider %s: BaseURL %q is not an absolute URL", cfg.Name, cfg.BaseURL)
	}
	c := openai.DefaultConfig(cfg.APIKey)
	c.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	base := http.DefaultTransport
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		base = cfg.HTTPClient.Transport
	}
	hc := &http.Client{}
	if cfg.HTTPClient != nil {
		*hc = *cfg.HTTPClient
	}
	hc.Transport = &boundedTransport{base: base, header: cfg.Header, max: MaxAnswerBytes}
	c.HTTPClient = hc
	t := cfg.Timeout
	if t <= 0 {
		t = DefaultUpstreamTimeout
	}
	return &OpenAISTTProvider{name: cfg.Name, client: openai.NewClientWithConfig(c), timeout: t, inFlight: semaphore.NewWeighted(STTBufferBytes)}, nil
}

// boundedTransport adds the configured headers to each request and cuts
// an answer's body past max bytes, which go-openai would read whole.
type boundedTransport struct {
	base   http.RoundTripper
	header http.Header
	max    int64
}

func (t *boundedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(t.header) > 0 {
		r = r.Clone(r.Context())
		for k, v := range t.header {
			r.Header[http.CanonicalHeaderKey(k)] = slices.Clone(v)
		}
	}
	res, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b := &boundedBody{ReadCloser: res.Body, left: t.max}
	if c, ok := r.Context().Value(captureKey{}).(*bytes.Buffer); ok && res.StatusCode/100 == 2 {
		b.copy = c
	}
	res.Body = b
	return res, nil
}

// captureKey marks a request context whose successful answer's bytes are
// kept (in a *bytes.Buffer), so that the answer is passed on as the
// upstream wrote it rather than as go-openai's types re-encode it.
type captureKey struct{}

// boundedBody fails a read past its bound, and copies what it reads when
// asked to.
type boundedBody struct {
	io.ReadCloser
	left int64
	copy *bytes.Buffer
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.copy != nil {
		b.copy.Write(p[:n])
	}
	return n, err
}

// Name returns the configured name.
func (p *OpenAISTTProvider) Name() string { return p.name }

// Transcribe sends the multipart request through go-openai.
func (p *OpenAISTTProvider) Transcribe(ctx context.Context, req *TranscriptionRequest) (*Transcription, error) {
	cctx, cancel := context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
	defer cancel()
	weight := min(max(req.Size, 1), STTBufferBytes)
	if err := p.inFlight.Acquire(cctx, weight); err != nil {
		return nil, classify(ctx, cctx, err)
	}
	defer p.inFlight.Release(weight)
	format := req.ResponseFormat
	if format == "" {
		format = FormatJSON
	}
	ar := openai.AudioRequest{Model: req.Model, FilePath: firstNonEmptyString(req.Filename, "audio"), Reader: req.Audio,
		Prompt: req.Prompt, Language: req.Language, Format: openai.AudioResponseFormat(format)}
	if req.Temperature != nil {
		ar.Temperature = float32(*req.Temperature)
	}
	for _, g := range req.TimestampGranularities {
		ar.TimestampGranularities = append(ar.TimestampGranularities, openai.TranscriptionTimestampGranularity(g))
	}
	var raw bytes.Buffer
	res, err := p.client.CreateTranscription(context.WithValue(cctx, captureKey{}, &raw), ar)
	if err != nil {
		return nil, classifySTT(ctx, cctx, err)
	}
	// The answer as the upstream wrote it: json's {"text"} (with whatever
	// else it adds, such as usage), verbose_json's segments and words, the
	// text formats' bytes.
	dur := res.Duration
	if dur == 0 && (format == FormatJSON || format == FormatVerboseJSON) {
		dur = usageSeconds(raw.Bytes())
	}
	return &Transcription{Text: res.Text, Language: res.Language, Duration: dur, Body: raw.Bytes()}, nil
}

// usageSeconds is the duration a JSON answer reports in its usage
// object, {"usage": {"type": "duration", "seconds": 9.2}}, as OpenAI's
// json format does for models billed by duration (verbose_json has a
// duration of its own); 0 if it reports none.
func usageSeconds(body []byte) float64 {
	var a struct {
		Usage *struct {
			Type    string  `json:"type"`
			Seconds float64 `json:"seconds"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &a) != nil || a.Usage == nil || a.Usage.Type != "duration" {
		return 0
	}
	return a.Usage.Seconds
}

// classifySTT maps go-openai's errors to fault codes, as classify does
// for chat.
func classifySTT(parent, ctx context.Context, err error) error {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status := 0
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	}
	if status != 0 && parent.Err() == nil && ctx.Err() == nil {
		if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
			return fault.Wrap(err, fault.Unavailable, MsgUnavailable)
		}
		return fault.Wrap(err, fault.Upstream, MsgFailed)
	}
	return classify(parent, ctx, err)
}

func firstNonEmptyString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Dev STT model identity.
const (
	DevSTTModelID      = "perceptron/dev-stt"
	DevSTTProviderName = "dev-stt"
)

// DevSTTModel is the offline dev transcription model: 36 cents an hour
// (10,000 micro-cents a second).
func DevSTTModel() STTModel {
	return STTModel{ID: DevSTTModelID, Name: "Perceptron Dev STT (offline)", CentsPerHour: 36, Providers: []string{DevSTTProviderName}}
}

// DevSTTProvider is the offline, deterministic dev transcription model.
// It does not recognize speech: its transcript describes the audio it
// read (format, duration, size and a fingerprint of its bytes), as one
// segment, so the same file always gives the same transcript
// and another file another one. It reports the duration it read, as a
// whisper server does in verbose_json.
type DevSTTProvider struct{}

var _ STTProvider = DevSTTProvider{}

// Name returns DevSTTProviderName.
func (DevSTTProvider) Name() string { return DevSTTProviderName }

// Transcribe answers without network.
func (DevSTTProvider) Transcribe(ctx context.Context, req *TranscriptionRequest) (*Transcription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(err, fault.Canceled, MsgCanceled)
	}
	ra, ok := req.Audio.(io.ReaderAt)
	if !ok { // a caller of the provider itself, not the service
		b, err := io.ReadAll(req.Audio)
		if err != nil {
			return nil, fault.Wrap(err, fault.Internal, "internal error")
		}
		ra, req = bytes.NewReader(b), &TranscriptionRequest{Size: int64(len(b)), Language: req.Language, ResponseFormat: req.ResponseFormat}
	}
	info, err := audio.Probe(ra, req.Size)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "could not read the audio file")
	}
	h := fnv.New32a()
	if _, err := io.Copy(h, io.NewSectionReader(ra, 0, req.Size)); err != nil {
		return nil, fault.Wrap(err, fault.Internal, "internal error")
	}
	secs := info.Duration.Seconds()
	text := fmt.Sprintf("Perceptron dev transcript (offline) of %.2f s of %s audio, %d bytes, fingerprint %08x.", secs, info.Format, req.Size, h.Sum32())
	out := &Transcription{Text: text, Language: firstNonEmptyString(req.Language, "en"), Duration: secs}
	type segment struct {
		ID    int     `json:"id"`
		Start float64 `json:"start"`
		End   float64 `json:"end"`
		Text  string  `json:"text"`
	}
	segs := []segment{{ID: 0, Start: 0, End: secs, Text: text}}
	stamp := func(sec float64, sep string) string {
		ms := int64(sec*1000 + 0.5)
		return fmt.Sprintf("%02d:%02d:%02d%s%03d", ms/3_600_000, ms/60_000%60, ms/1000%60, sep, ms%1000)
	}
	switch req.ResponseFormat {
	case FormatText:
		out.Body = []byte(text + "\n")
	case FormatSRT:
		out.Body = fmt.Appendf(nil, "1\n%s --> %s\n%s\n\n", stamp(0, ","), stamp(segs[0].End, ","), text)
	case FormatVTT:
		out.Body = fmt.Appendf(nil, "WEBVTT\n\n%s --> %s\n%s\n\n", stamp(0, "."), stamp(segs[0].End, "."), text)
	case FormatVerboseJSON:
		out.Body, _ = json.Marshal(map[string]any{"task": "transcribe", "language": out.Language, "duration": secs, "text": text, "segments": segs})
	default:
		out.Body, _ = json.Marshal(map[string]string{"text": text})
	}
	return out, nil
}
