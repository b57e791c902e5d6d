package httpserver

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/perceptron-cloud/perceptron/fault"
)

// errorBody is the one JSON shape of every error response: the one OpenAI
// clients already parse.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message   string `json:"message"`
	Type      string `json:"type"`
	RequestID string `json:"request_id,omitempty"`
}

// statusOf maps an error code to an HTTP status and a stable machine-readable
// type. This is the only place codes become statuses.
func statusOf(c fault.Code) (int, string) {
	switch c {
	case fault.Invalid:
		return http.StatusBadRequest, "invalid_request_error"
	case fault.Unauthenticated:
		return http.StatusUnauthorized, "authentication_error"
	case fault.InsufficientFunds:
		return http.StatusPaymentRequired, "insufficient_credits"
	case fault.Forbidden:
		return http.StatusForbidden, "permission_error"
	case fault.NotFound:
		return http.StatusNotFound, "not_found_error"
	case fault.Conflict:
		return http.StatusConflict, "conflict_error"
	case fault.Unavailable:
		return http.StatusBadGateway, "service_unavailable"
	case fault.Upstream:
		return http.StatusInternalServerError, "upstream_error"
	case fault.Canceled:
		return 499, "canceled" // the client is gone; nobody reads this
	case fault.RateLimited:
		return http.StatusTooManyRequests, "rate_limit_error"
	case fault.Timeout:
		return http.StatusServiceUnavailable, "timeout_error"
	case fault.TooLarge:
		return http.StatusRequestEntityTooLarge, "invalid_request_error"
	}
	return http.StatusInternalServerError, "internal_error"
}

// ingressStatusOf is statusOf for the public ingress, where the statuses
// are a proxy's: unknown hosts 404, an unreachable tunnel or local service
// 502, a local service too slow 504, a flood 429; 0 when the client is
// gone.
func ingressStatusOf(c fault.Code) int {
	switch c {
	case fault.NotFound:
		return http.StatusNotFound
	case fault.Timeout:
		return http.StatusGatewayTimeout
	case fault.RateLimited:
		return http.StatusTooManyRequests
	case fault.Canceled:
		return 0
	}
	return http.StatusBadGateway
}

// writeError writes err as the JSON error shape. Errors without a code are
// internal: they are logged with the request ID and shown only as
// "internal server error".
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := fault.CodeOf(err)
	status, typ := statusOf(code)
	msg := fault.MessageOf(err)
	if code == fault.Timeout && msg == "" {
		// A server-side deadline (a store or upstream call) passed.
		msg = "request timed out"
		s.log.WarnContext(r.Context(), "request timed out", "request_id", requestID(r.Context()),
			"method", r.Method, "path", r.URL.Path, "err", err)
	} else if code == fault.Unknown || code == fault.Internal || msg == "" {
		msg = "internal server error"
		s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()),
			"method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeErrorStatus(w, r, status, typ, msg)
}

// writeErrorStatus writes an error with an explicit status.
func (s *server) writeErrorStatus(w http.ResponseWriter, r *http.Request, status int, typ, msg string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Message: msg, Type: typ, RequestID: requestID(r.Context())}})
}

// writeJSON writes v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"message":"internal server error","type":"internal_error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeJSON reads a JSON request body of at most limit bytes into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fault.New(fault.Invalid, "request body too large")
		}
		return fault.Wrap(err, fault.Invalid, "invalid JSON body")
	}
	if dec.More() {
		return fault.New(fault.Invalid, "invalid JSON body: trailing data")
	}
	return nil
}
