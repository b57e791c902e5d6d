package httpserver

import (
	"errors"
	"io"
	"net/http"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// chatBodyLimit bounds a chat request body.
const chatBodyLimit = 16 << 20

func (s *server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.p.Inference.Catalog().List())
}

func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, chatBodyLimit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, fault.New(fault.Invalid, "request body too large"))
			return
		}
		s.writeError(w, r, fault.Wrap(err, fault.Invalid, "could not read request body"))
		return
	}
	req, err := inference.ParseChatRequest(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	account := principal(r.Context()).Address
	if !req.Stream {
		resp, err := s.p.Inference.Complete(r.Context(), account, req)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	sess, err := s.p.Inference.Stream(r.Context(), account, req)
	if err != nil {
		// Refusals before the upstream is called are plain HTTP errors.
		s.writeError(w, r, err)
		return
	}
	// Close cancels the upstream and bills what was generated, also when
	// the client has gone away mid-stream.
	defer sess.Close()
	s.writeStream(w, sess)
}

// writeStream sends the session as server-sent events, flushing each event
// as it arrives.
func (s *server) writeStream(w http.ResponseWriter, sess *inference.StreamSession) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() bool { return rc.Flush() == nil }
	flush()
	buf := make([]byte, 0, 1024)
	for {
		chunk, err := sess.Recv()
		if errors.Is(err, io.EOF) {
			io.WriteString(w, inference.SSEDone)
			flush()
			return
		}
		var v any = chunk
		if err != nil {
			var se *inference.StreamError
			if !errors.As(err, &se) {
				se = nil
			}
			if se == nil || se.Type == inference.ErrorTypeCanceled {
				return // the client is gone; nothing to tell it
			}
			v = se
		}
		var merr error
		buf, merr = inference.AppendSSE(buf[:0], v)
		if merr != nil {
			s.log.Error("encoding stream event", "err", merr)
			return
		}
		if _, werr := w.Write(buf); werr != nil {
			return
		}
		if err != nil {
			io.WriteString(w, inference.SSEDone)
			flush()
			return
		}
		if !flush() {
			return
		}
	}
}
