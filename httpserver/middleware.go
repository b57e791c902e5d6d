package httpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/fault"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	principalKey
)

// requestID returns the request's ID, set by the outermost middleware.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// principal returns who the request acts for; only handlers behind an
// auth wrapper call it.
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey).(auth.Principal)
	return p
}

// newRequestID returns "req_" and 24 random hex digits.
func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	var s [4 + 2*len(b)]byte
	copy(s[:], "req_")
	hex.Encode(s[4:], b[:])
	return string(s[:])
}

// statusWriter remembers the status for the access log, and passes
// Flush through for streaming responses.
type statusWriter struct {
	http.ResponseWriter
	status int
	dw     deadlineWriter
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.dw.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.dw.extend()
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	w.dw.extend()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// outer is the outermost middleware: request ID, panic recovery, JSON
// 404/405 for unmatched routes, and the access log. Query strings are never
// logged (WebSocket routes carry tokens there).
func (s *server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := newRequestID()
		w.Header()["X-Request-Id"] = []string{id}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		rc := http.NewResponseController(w)
		sw := &statusWriter{ResponseWriter: w, dw: deadlineWriter{rc: rc, timeout: s.lim.write}}
		sw.dw.extend()
		if r.Body != nil && r.Body != http.NoBody {
			b := &deadlineBody{ReadCloser: r.Body, rc: rc, idle: s.lim.bodyIdle}
			if s.lim.body > 0 {
				b.end = start.Add(s.lim.body)
			}
			r.Body = b
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "panic", "request_id", id, "panic", v)
				if sw.status == 0 {
					s.writeErrorStatus(sw, r, http.StatusInternalServerError, "internal_error", "internal server error")
				}
			}
			if s.log.Enabled(r.Context(), levelAccess) {
				s.log.Log(r.Context(), levelAccess, "request", "request_id", id, "method", r.Method,
					"path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
			}
		}()
		h, pattern := s.mux.Handler(r)
		if pattern == "" {
			s.unmatched(sw, r, h)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// unmatched turns the mux's plain-text 404 and 405 into the JSON shape,
// keeping its Allow header.
func (s *server) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	switch probe.status {
	case http.StatusMethodNotAllowed:
		if allow := probe.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		s.writeErrorStatus(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		for k, v := range probe.header {
			w.Header()[k] = v
		}
		w.WriteHeader(probe.status)
	default:
		s.writeErrorStatus(w, r, http.StatusNotFound, "not_found_error", "not found")
	}
}

// probeWriter records what the mux's fallback handler would have written.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *probeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}

// access says which keys a route accepts.
type access int

const (
	anyKey     access = iota // client or master key
	masterOnly               // master key; client keys get 403
	clientOnly               // client key; master keys get 403
)

// msgMasterKeyForbidden is clientOnly's refusal of a master key, in the
// style of auth.MsgClientKeyForbidden.
const msgMasterKeyForbidden = "master API keys are not authorized for this operation; use a client API key"

func errMasterKeyForbidden() error { return fault.New(fault.Forbidden, msgMasterKeyForbidden) }

// authed wraps h so it runs only for a valid bearer token of the allowed kind.
func (s *server) authed(a access, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			s.writeError(w, r, fault.New(fault.Unauthenticated, auth.MsgMissingToken))
			return
		}
		p, err := s.p.Auth.Authenticate(r.Context(), token)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if a == masterOnly && !p.IsMaster() {
			s.writeError(w, r, auth.ErrClientKeyForbidden())
			return
		}
		if a == clientOnly && p.IsMaster() {
			s.writeError(w, r, errMasterKeyForbidden())
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})
}

// bearer extracts the token from "Authorization: Bearer TOKEN".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
