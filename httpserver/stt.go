package httpserver

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// transcriptions is OpenAI's POST /v1/audio/transcriptions: a multipart
// form with file, model, language, prompt, response_format, temperature
// and timestamp_granularities[]; billed per second of audio.
func (s *server) transcriptions(w http.ResponseWriter, r *http.Request) {
	limit := s.p.Inference.MaxAudioBytes()
	if r.ContentLength > limit+formMargin {
		s.writeError(w, r, fault.Wrap(inference.ErrAudioTooLarge, fault.TooLarge, s.p.Inference.MsgAudioTooLarge()))
		return
	}
	if b, ok := r.Body.(*deadlineBody); ok && !b.end.IsZero() && s.lim.upload > 0 {
		b.end = time.Now().Add(s.lim.upload) // an upload may take longer than other bodies
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit+formMargin)
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeError(w, r, fault.New(fault.Invalid, "the request must be multipart/form-data"))
		return
	}
	req := &inference.TranscriptionRequest{}
	var file *inference.AudioFile
	defer func() {
		if file != nil {
			file.Close()
		}
	}()
	fields := 0
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.writeError(w, r, s.uploadError(err))
			return
		}
		if fields++; fields > maxFormParts {
			s.writeError(w, r, fault.New(fault.Invalid, "too many form fields"))
			return
		}
		name := part.FormName()
		if name == "file" {
			if file != nil {
				s.writeError(w, r, fault.New(fault.Invalid, "send one file"))
				return
			}
			// The upload goes to memory, then a temporary file, as it
			// arrives; the form fields after it are read next.
			if file, err = s.p.Inference.ReadAudio(r.Context(), principal(r.Context()).Address, part); err != nil {
				s.writeError(w, r, s.uploadError(err))
				return
			}
			req.Audio, req.Filename = file, part.FileName()
			continue
		}
		data, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
		if err != nil {
			s.writeError(w, r, s.uploadError(err))
			return
		}
		if len(data) > maxFieldBytes {
			s.writeError(w, r, fault.Newf(fault.Invalid, "form field %q is too long (max %d bytes)", name, maxFieldBytes))
			return
		}
		v := string(data)
		switch name {
		case "model":
			req.Model = v
		case "language":
			req.Language = v
		case "prompt":
			req.Prompt = v
		case "response_format":
			req.ResponseFormat = v
		case "temperature":
			t, err := strconv.ParseFloat(v, 64)
			if err != nil || t < 0 || t > 1 {
				s.writeError(w, r, fault.New(fault.Invalid, "temperature must be a number between 0 and 1"))
				return
			}
			req.Temperature = &t
		case "timestamp_granularities[]", "timestamp_granularities":
			if v != "word" && v != "segment" {
				s.writeError(w, r, fault.New(fault.Invalid, "timestamp_granularities[] must be word or segment"))
				return
			}
			req.TimestampGranularities = append(req.TimestampGranularities, v)
		}
	}
	if file == nil {
		s.writeError(w, r, fault.New(fault.Invalid, "file is required"))
		return
	}
	if req.Model == "" {
		s.writeError(w, r, fault.New(fault.Invalid, "model is required"))
		return
	}
	res, err := s.p.Inference.Transcribe(r.Context(), principal(r.Context()).Address, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ct := "application/json"
	switch req.ResponseFormat {
	case inference.FormatText, inference.FormatSRT:
		ct = "text/plain; charset=utf-8"
	case inference.FormatVTT:
		ct = "text/vtt; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.Body)
}

// The multipart form of a transcription: its fields other than the file
// are small and few.
const (
	formMargin    = 1 << 20 // what the form may add to the file's bytes
	maxFieldBytes = 64 << 10
	maxFormParts  = 32
)

// uploadError classifies a failure to read the form: over the limit, a
// fault the service returned, or a malformed or interrupted body.
func (s *server) uploadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fault.Wrap(inference.ErrAudioTooLarge, fault.TooLarge, s.p.Inference.MsgAudioTooLarge())
	}
	if fault.CodeOf(err) != fault.Unknown {
		return err
	}
	return fault.Wrap(err, fault.Invalid, "invalid multipart body")
}
