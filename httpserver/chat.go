package httpserver

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/inference"
)

// chatBodyLimit bounds a chat request body.
const chatBodyLimit = 16 << 20

func (s *server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.p.Inference.Models())
}

// maxPooledBuf is the largest buffer the server keeps for reuse.
const maxPooledBuf = 1 << 20

// getBuf returns a buffer for a request body or a JSON answer.
func (s *server) getBuf() *bytes.Buffer {
	if b, ok := s.bufs.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

// putBuf gives b back for reuse, unless it grew past maxPooledBuf.
func (s *server) putBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuf {
		b.Reset()
		s.bufs.Put(b)
	}
}

func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	buf := s.getBuf()
	defer s.putBuf(buf)
	// The buffer grows with what arrives, never with what the client
	// declares: a Content-Length alone reserves nothing.
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, chatBodyLimit))
	body := buf.Bytes()
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
		// The answer's JSON, written by hand: the same bytes as writeJSON.
		// The request body's buffer is free again (ParseChatRequest copies).
		buf.Reset()
		out := append(resp.AppendJSON(buf.AvailableBuffer()), '\n')
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(out)
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
// as it arrives; after the first, events that arrived together share one
// flush. The headers go out with the first event (the session exists only
// once the upstream's first chunk has arrived), in one write.
func (s *server) writeStream(w http.ResponseWriter, sess *inference.StreamSession) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() bool { return rc.Flush() == nil }
	bp := s.getBuf()
	defer s.putBuf(bp)
	bp.Grow(1024)
	buf := bp.AvailableBuffer()
	first := true
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
		if !first && sess.Buffered() {
			// The next event is already here: send both in one flush.
			// Nothing is held back while the handler waits upstream, and
			// the first event (the time to first byte) always goes at once.
			continue
		}
		first = false
		if !flush() {
			return
		}
	}
}
