package inference

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference/audio"
)

// DefaultMaxAudioBytes bounds a transcription upload (OpenAI's limit).
const DefaultMaxAudioBytes = 25 << 20

// sttState is the service's speech-to-text part.
type sttState struct {
	models   []STTModel
	byID     map[string]STTModel
	maxBytes int64
	tempDir  string
	spool    *semaphore.Weighted
}

// DefaultMaxAudioSpool is the default budget of the temporary files of
// the uploads in progress: 4 GiB.
const DefaultMaxAudioSpool = 4 << 30

func (st *sttState) init(opts Options, r *Router) error {
	st.byID = map[string]STTModel{}
	st.maxBytes = opts.MaxAudioBytes
	if st.maxBytes <= 0 {
		st.maxBytes = DefaultMaxAudioBytes
	}
	st.tempDir = opts.AudioTempDir
	spool := opts.MaxAudioSpool
	if spool <= 0 {
		spool = DefaultMaxAudioSpool
	}
	st.spool = semaphore.NewWeighted(spool)
	for _, m := range opts.STTModels {
		if m.ID == "" || m.CentsPerHour <= 0 || len(m.Providers) == 0 {
			return fmt.Errorf("inference: STT model %q needs a price and providers", m.ID)
		}
		for _, p := range m.Providers {
			if !r.HasSTT(p) {
				return fmt.Errorf("inference: STT model %q names provider %q, which is not configured", m.ID, p)
			}
		}
		if _, dup := st.byID[m.ID]; dup {
			return fmt.Errorf("inference: STT model %q twice", m.ID)
		}
		st.byID[m.ID] = m
		st.models = append(st.models, m)
	}
	return nil
}

// STTModels returns the speech-to-text models.
func (s *Service) STTModels() []STTModel { return slices.Clone(s.stt.models) }

// MaxAudioBytes is the largest upload.
func (s *Service) MaxAudioBytes() int64 { return s.stt.maxBytes }

// STTCost is what seconds of audio cost on m: the hourly price prorated
// per second, in micro-cents, rounded up. It is computed in 128 bits;
// a cost past the largest amount (no wallet could pay it) is that
// amount.
func STTCost(m STTModel, seconds int64) billing.MicroCents {
	if seconds <= 0 || m.CentsPerHour <= 0 {
		return 0
	}
	hi, perHour := bits.Mul64(uint64(m.CentsPerHour), uint64(billing.Cent))
	if hi != 0 {
		return math.MaxInt64
	}
	hi, lo := bits.Mul64(perHour, uint64(seconds))
	lo, carry := bits.Add64(lo, 3599, 0)
	hi += carry
	if hi >= 3600 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 3600)
	return billing.MicroCents(min(q, math.MaxInt64))
}

// billedSeconds is a duration as billed: whole seconds, rounded up.
func billedSeconds(d time.Duration) int64 { return int64(math.Ceil(d.Seconds() - 1e-9)) }

// maxBilledSeconds is the most seconds a transcription is billed: the
// longest audio read ([audio.MaxDuration]).
const maxBilledSeconds = int64(audio.MaxDuration / time.Second)

// reportedSeconds is the duration a provider reports, billed: whole
// seconds rounded up, at most maxBilledSeconds; ok is false when it
// reports none (0, negative or not a number).
func reportedSeconds(d float64) (seconds int64, ok bool) {
	if !(d > 0) {
		return 0, false
	}
	if d >= float64(maxBilledSeconds) {
		return maxBilledSeconds, true
	}
	return billedSeconds(time.Duration(d * float64(time.Second))), true
}

// MsgAudioTooLarge is the refusal of an upload over the limit.
func (s *Service) MsgAudioTooLarge() string {
	return fmt.Sprintf("audio file too large (max %d MB)", s.stt.maxBytes>>20)
}

// TranscriptionResult is a billed transcription.
type TranscriptionResult struct {
	*Transcription
	Model   STTModel
	Seconds int64 // billed
	Entry   billing.Entry
}

// Transcribe validates req, holds [MinimumHold] (so a wallet that
// cannot pay is refused before its audio is read), reads the audio
// (unless req.Audio is an [*AudioFile] already read) and its duration,
// holds its cost, sends it along the model's providers through the
// router (retries, fallbacks, breakers) and settles by the duration the
// provider reports, else the measured one: one SttInference entry. The
// settlement may exceed the hold (a provider reporting more than the
// file declared): the excess is taken from the wallet's available
// balance, never beyond it; when the balance cannot cover it all, the
// wallet is charged what it has, the transcript is still returned and
// the shortfall is logged (see the package doc). A text answer is asked
// of the providers as json (which may report the duration) and written
// as its text and a newline. Nothing is charged when it fails.
//
// Errors: fault.Invalid (unknown model, a bad response format, empty,
// unreadable or unsupported audio), fault.TooLarge ([ErrAudioTooLarge],
// [Service.MsgAudioTooLarge]), fault.InsufficientFunds
// ([MsgInsufficientCredits]), fault.Unavailable, fault.Upstream; an
// error of reading req.Audio is returned as it is.
func (s *Service) Transcribe(ctx context.Context, account string, req *TranscriptionRequest) (*TranscriptionResult, error) {
	m, ok := s.stt.byID[req.Model]
	if !ok {
		ids := make([]string, 0, len(s.stt.models))
		for _, x := range s.stt.models {
			ids = append(ids, x.ID)
		}
		return nil, fault.New(fault.Invalid, fmt.Sprintf("invalid model '%s'. Available STT models: %s", req.Model, strings.Join(ids, ", ")))
	}
	switch req.ResponseFormat {
	case "", FormatJSON, FormatText, FormatSRT, FormatVTT, FormatVerboseJSON:
	default:
		return nil, fault.New(fault.Invalid, "response_format must be json, text, srt, vtt or verbose_json")
	}
	if req.Audio == nil {
		return nil, fault.New(fault.Invalid, "file is required")
	}
	af, read := req.Audio.(*AudioFile)
	hold, held := billing.Hold{}, false
	if read {
		hold, held = af.takeHold(account)
	}
	if !held {
		h, err := s.holdMinimum(ctx, account)
		if err != nil {
			return nil, err
		}
		hold = h
	}
	settled := false
	defer func() {
		if !settled {
			s.releaseHold(ctx, account, hold.ID)
		}
	}()
	if !read {
		var err error
		if af, err = s.stt.read(req.Audio, s.MsgAudioTooLarge()); err != nil {
			return nil, err
		}
		defer af.Close()
	}
	if af.Size() == 0 {
		return nil, fault.New(fault.Invalid, "file is empty")
	}
	if af.Size() > s.stt.maxBytes {
		return nil, fault.Wrap(ErrAudioTooLarge, fault.TooLarge, s.MsgAudioTooLarge())
	}
	info, err := audio.Probe(af, af.Size())
	if errors.Is(err, audio.ErrUnreadable) {
		// The decoder's words stay in the log's cause.
		return nil, fault.Wrap(err, fault.Invalid, fmt.Sprintf("could not read the audio file: the %s file is truncated or damaged", info.Format))
	}
	if errors.Is(err, audio.ErrTooLong) {
		return nil, fault.Wrap(err, fault.Invalid, fmt.Sprintf("could not read the audio file: the %s file is longer than 24 hours", info.Format))
	}
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "could not read the audio file: "+err.Error())
	}
	measured := billedSeconds(info.Duration)
	// Hold the measured cost, allowing for a provider that reports up to
	// a tenth more: the probe hold when it covers that, else a new hold
	// (the probe released first, so the wallet need not cover both).
	if want := STTCost(m, measured+measured/10+1); want > hold.Amount {
		s.releaseHold(ctx, account, hold.ID)
		now := s.now()
		hold, err = s.ledger.PlaceHold(ctx, billing.HoldRequest{
			Account: account, Amount: want, MinAmount: max(STTCost(m, measured), MinimumHold),
			ExpiresAt: now.Add(s.holdTTL), At: now,
		})
		if fault.CodeOf(err) == fault.InsufficientFunds {
			settled = true // nothing held
			return nil, fault.New(fault.InsufficientFunds, MsgInsufficientCredits)
		}
		if err != nil {
			settled = true
			return nil, ledgerError(ctx, err)
		}
	}
	up := *req
	up.Filename = uploadName(req.Filename, info.Format)
	if m.UpstreamModel != "" {
		up.Model = m.UpstreamModel
	}
	if req.ResponseFormat == FormatText {
		// A text answer carries no duration; json, which every
		// OpenAI-compatible server speaks, may (OpenAI's usage), and its
		// text is the same transcript.
		up.ResponseFormat = FormatJSON
	}
	tr, err := s.router.Transcribe(ctx, m.Providers, &up, af, af.Size())
	if err != nil {
		return nil, publicError(err)
	}
	if req.ResponseFormat == FormatText {
		tr.Body = []byte(tr.Text + "\n")
	}
	seconds := measured
	if reported, ok := reportedSeconds(tr.Duration); ok {
		seconds = reported
	} else if end, ok := reportedSeconds(cuesEnd(tr.Body, req.ResponseFormat)); ok {
		// srt and vtt carry no duration, but their cues are the
		// provider's timeline: the audio lasts at least until the last
		// cue ends, whatever the file declared.
		seconds = max(seconds, end)
	}
	// The cost of what the provider transcribed, beyond the hold if need
	// be (the file may declare less than it holds), from the available
	// balance and never past it.
	cost := STTCost(m, seconds)
	settled = true
	e, err := s.ledger.SettleHold(context.WithoutCancel(ctx), billing.Settlement{
		HoldID: hold.ID, Amount: cost, Type: billing.SttInference, ExceedHold: true,
		Description: fmt.Sprintf("STT: %s (%d s of %s audio)", m.ID, seconds, info.Format),
		Usage:       &billing.Usage{Model: m.ID}, At: s.now(),
	})
	if err != nil {
		return nil, ledgerError(ctx, err)
	}
	if charged := -e.Amount; charged < cost {
		s.log.WarnContext(ctx, "inference: a transcription cost more than the wallet had; charged its whole available balance",
			"account", account, "model", m.ID, "format", info.Format, "measured_seconds", measured, "billed_seconds", seconds,
			"cost_micro_cents", int64(cost), "charged_micro_cents", int64(charged), "shortfall_micro_cents", int64(cost-charged), "entry", e.ID)
	}
	return &TranscriptionResult{Transcription: tr, Model: m, Seconds: seconds, Entry: e}, nil
}

// cuesEnd is when the last cue of an srt or vtt answer ends, in
// seconds ("00:59:58,120 --> 01:00:02,480" ends at 3602.48; vtt may
// leave the hours out); 0 for other formats, or if no cue parses.
func cuesEnd(body []byte, format string) float64 {
	if format != FormatSRT && format != FormatVTT {
		return 0
	}
	end := 0.0
	for line := range strings.Lines(string(body)) {
		_, to, ok := strings.Cut(line, "-->")
		if !ok {
			continue
		}
		if f := strings.Fields(to); len(f) > 0 {
			end = max(end, cueSeconds(f[0]))
		}
	}
	return end
}

// cueSeconds parses a cue timestamp, [hh:]mm:ss(,|.)mmm, in seconds; 0
// if it does not parse.
func cueSeconds(ts string) float64 {
	parts := strings.Split(strings.ReplaceAll(ts, ",", "."), ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0
	}
	total := 0.0
	for i, p := range parts {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || !(v >= 0) || math.IsInf(v, 0) || i > 0 && v >= 60 {
			return 0
		}
		total = total*60 + v
	}
	return total
}

// uploadName is the file name sent upstream: the client's, with an
// extension of the format the file was read as. OpenAI's API tells the
// format by the name's extension and refuses a name without a known one
// (browsers send "blob"), so "blob" goes up as "blob.webm" and "" as
// "audio.wav"; a name whose extension already fits is kept.
func uploadName(name, format string) string {
	name = path.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "." || name == "/" {
		name = ""
	}
	exts := map[string][]string{
		audio.WAV: {"wav"}, audio.MP3: {"mp3", "mpga", "mpeg"}, audio.FLAC: {"flac"},
		audio.OGG: {"ogg", "oga", "opus"}, audio.WebM: {"webm"}, audio.MP4: {"m4a", "mp4"},
	}[format]
	if len(exts) == 0 {
		return firstNonEmptyString(name, "audio")
	}
	if ext := strings.ToLower(path.Ext(name)); ext != "" && slices.Contains(exts, ext[1:]) {
		return name
	}
	return firstNonEmptyString(name, "audio") + "." + exts[0]
}

// Models is GET /api/models: the chat catalog, then the speech-to-text
// models (Type "stt", priced per hour of audio).
func (s *Service) Models() ModelList {
	l := s.catalog.List()
	for _, m := range s.stt.models {
		l.Data = append(l.Data, ModelInfo{ID: m.ID, Name: m.Name, Object: "model", OwnedBy: "perceptron",
			Pricing: Pricing{CentsPerHour: m.CentsPerHour}, Type: "stt"})
	}
	return l
}
