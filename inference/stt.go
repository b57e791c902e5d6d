package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/perceptron-cloud/perceptron/fault"
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
	Model    string
	Audio    []byte
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
	// Duration is the audio's length the provider reports, in seconds; 0
	// when it reports none.
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

// OpenAISTTProvider is an [STTProvider] on go-openai's CreateTranscription.
type OpenAISTTProvider struct {
	name    string
	client  *openai.Client
	timeout time.Duration
}

var _ STTProvider = (*OpenAISTTProvider)(nil)

// NewOpenAISTTProvider returns a provider for cfg (Name, BaseURL, APIKey,
// Timeout, HTTPClient as for chat).
func NewOpenAISTTProvider(cfg OpenAIConfig) (*OpenAISTTProvider, error) {
	if cfg.Name == "" || cfg.BaseURL == "" {
		return nil, errors.New("inference: an STT provider needs a Name and a BaseURL")
	}
	c := openai.DefaultConfig(cfg.APIKey)
	c.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.HTTPClient != nil {
		c.HTTPClient = cfg.HTTPClient
	}
	t := cfg.Timeout
	if t <= 0 {
		t = DefaultUpstreamTimeout
	}
	return &OpenAISTTProvider{name: cfg.Name, client: openai.NewClientWithConfig(c), timeout: t}, nil
}

// Name returns the configured name.
func (p *OpenAISTTProvider) Name() string { return p.name }

// Transcribe sends the multipart request through go-openai.
func (p *OpenAISTTProvider) Transcribe(ctx context.Context, req *TranscriptionRequest) (*Transcription, error) {
	cctx, cancel := context.WithTimeoutCause(ctx, p.timeout, errUpstreamTimeout)
	defer cancel()
	format := req.ResponseFormat
	if format == "" {
		format = FormatJSON
	}
	ar := openai.AudioRequest{Model: req.Model, FilePath: firstNonEmptyString(req.Filename, "audio"), Reader: bytes.NewReader(req.Audio),
		Prompt: req.Prompt, Language: req.Language, Format: openai.AudioResponseFormat(format)}
	if req.Temperature != nil {
		ar.Temperature = float32(*req.Temperature)
	}
	for _, g := range req.TimestampGranularities {
		ar.TimestampGranularities = append(ar.TimestampGranularities, openai.TranscriptionTimestampGranularity(g))
	}
	res, err := p.client.CreateTranscription(cctx, ar)
	if err != nil {
		return nil, classifySTT(ctx, cctx, err)
	}
	out := &Transcription{Text: res.Text, Language: res.Language, Duration: res.Duration}
	if ar.HasJSONResponse() {
		out.Body, _ = json.Marshal(res)
	} else {
		out.Body = []byte(res.Text)
	}
	return out, nil
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

// DevSTTProvider is the offline, deterministic dev transcription model:
// the transcript names the upload's size and a fingerprint of its bytes,
// so the same file always gives the same transcript. It reports no
// duration: the service bills the one it measured.
type DevSTTProvider struct{}

var _ STTProvider = DevSTTProvider{}

// Name returns DevSTTProviderName.
func (DevSTTProvider) Name() string { return DevSTTProviderName }

// Transcribe answers without network.
func (DevSTTProvider) Transcribe(ctx context.Context, req *TranscriptionRequest) (*Transcription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(err, fault.Canceled, MsgCanceled)
	}
	h := fnv.New32a()
	h.Write(req.Audio)
	text := fmt.Sprintf("Perceptron dev transcript (offline) of %d bytes of audio, fingerprint %08x.", len(req.Audio), h.Sum32())
	out := &Transcription{Text: text, Language: firstNonEmptyString(req.Language, "en")}
	switch req.ResponseFormat {
	case FormatText:
		out.Body = []byte(text + "\n")
	case FormatSRT:
		out.Body = []byte("1\n00:00:00,000 --> 00:00:01,000\n" + text + "\n\n")
	case FormatVTT:
		out.Body = []byte("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n" + text + "\n\n")
	case FormatVerboseJSON:
		out.Body, _ = json.Marshal(map[string]any{"task": "transcribe", "language": out.Language, "text": text,
			"segments": []map[string]any{{"id": 0, "start": 0, "end": 1, "text": text}}})
	default:
		out.Body, _ = json.Marshal(map[string]string{"text": text})
	}
	return out, nil
}
