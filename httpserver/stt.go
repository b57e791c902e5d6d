package httpserver

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// transcriptions is OpenAI's POST /v1/audio/transcriptions: a multipart
// form with file, model, language, prompt, response_format, temperature
// and timestamp_granularities[]; billed per second of audio.
func (s *server) transcriptions(w http.ResponseWriter, r *http.Request) {
	max := s.p.Inference.MaxAudioBytes()
	tooLarge := func() {
		s.writeErrorStatus(w, r, http.StatusRequestEntityTooLarge, "invalid_request_error", s.p.Inference.MsgAudioTooLarge())
	}
	if r.ContentLength > max+1<<20 {
		tooLarge()
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, max+1<<20) // the form's other fields fit in the margin
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeError(w, r, fault.New(fault.Invalid, "the request must be multipart/form-data"))
		return
	}
	req := &inference.TranscriptionRequest{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge()
			return
		}
		if err != nil {
			s.writeError(w, r, fault.Wrap(err, fault.Invalid, "invalid multipart body"))
			return
		}
		name := part.FormName()
		limit := int64(64 << 10)
		if name == "file" {
			limit = max + 1
		}
		data, err := io.ReadAll(io.LimitReader(part, limit))
		if errors.As(err, &mbe) || name == "file" && int64(len(data)) > max {
			tooLarge()
			return
		}
		if err != nil {
			s.writeError(w, r, fault.Wrap(err, fault.Invalid, "invalid multipart body"))
			return
		}
		v := string(data)
		switch name {
		case "file":
			req.Audio, req.Filename = data, part.FileName()
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
			req.TimestampGranularities = append(req.TimestampGranularities, v)
		}
	}
	if req.Audio == nil {
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
