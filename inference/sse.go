package inference

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// sseReader reads the server-sent events of a chat completions stream
// (the WHATWG event stream format, as OpenAI-compatible servers send it):
//   - a "data:" line is an event, its data what follows the colon and any
//     whitespace; "data: [DONE]" ends the stream;
//   - comments (": keep-alive"), blank lines and other fields ("event:",
//     "id:", "retry:") are skipped, at most MaxSkippedLines of them
//     between two events;
//   - a data line holding an error object ({"error": ...}) is an
//     [*UpstreamError];
//   - a body that ends without a data line but whose skipped lines form an
//     error object (a server answering a stream request with a JSON
//     error and a success status) is an [*UpstreamError] too;
//   - a line longer than MaxEventBytes fails the stream.
//
// It reads lines from a bufio.Reader it owns, so it knows whether the next
// event is already buffered (see buffered).
type sseReader struct {
	br      *bufio.Reader
	line    []byte       // the line being read, when longer than the buffer
	skipped bytes.Buffer // non-data lines before the first event, bounded
	events  int          // data lines read
	done    bool
}

var (
	errSSEOverlong = fmt.Errorf("stream line longer than %d bytes", MaxEventBytes)
	errSSESkipped  = fmt.Errorf("more than %d stream lines without an event", MaxSkippedLines)
)

// maxSkippedKept bounds the skipped lines kept to decode an error body.
const maxSkippedKept = MaxErrorBodyBytes

// readLine returns the next line without its line ending ("\n" or
// "\r\n"; a lone "\r" is not one). The slice is valid until the next call.
func (r *sseReader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		frag, err := r.br.ReadSlice('\n')
		if err == nil && len(r.line) == 0 {
			return trimEOL(frag), nil
		}
		if len(r.line)+len(frag) > MaxEventBytes {
			return nil, errSSEOverlong
		}
		r.line = append(r.line, frag...)
		switch {
		case err == nil:
			return trimEOL(r.line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(r.line) > 0:
			return r.line, nil // a last line without a line ending
		default:
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// next returns the next event's data (valid until the next call), io.EOF
// after "[DONE]" or at the end of the body, or the stream's error.
func (r *sseReader) next() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	for skipped := 0; ; skipped++ {
		if skipped > MaxSkippedLines {
			return nil, errSSESkipped
		}
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && r.events == 0 {
				if e := (&UpstreamError{}); e.parse(r.skipped.Bytes()) {
					return nil, e
				}
			}
			return nil, err
		}
		data, ok := sseData(line)
		if !ok {
			if r.events == 0 && r.skipped.Len()+len(line) <= maxSkippedKept {
				r.skipped.Write(line)
				r.skipped.WriteByte('\n')
			}
			continue
		}
		r.events++
		data = bytes.TrimRight(data, " \t\r\n\f")
		switch {
		case string(data) == "[DONE]":
			r.done = true
			return nil, io.EOF
		case bytes.HasPrefix(data, []byte(`{"error"`)):
			if e := (&UpstreamError{}); e.parse(data) {
				return nil, e
			}
		}
		return data, nil
	}
}

// sseData returns what follows "data:" and any whitespace after it, if
// line is a data line.
func sseData(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil, false
	}
	return bytes.TrimLeft(rest, " \t\n\f\r"), true
}

// buffered reports whether a complete data line is in the buffer, so that
// next returns without reading from the connection.
func (r *sseReader) buffered() bool {
	if r.done {
		return true
	}
	b, _ := r.br.Peek(r.br.Buffered())
	for {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			return false
		}
		if _, isData := sseData(trimEOL(line)); isData {
			return true
		}
		b = rest
	}
}
