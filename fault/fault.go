// Package fault defines the error codes shared by every Perceptron package.
//
// Domain packages return errors built with [New] or [Wrap]. Each carries a
// [Code] that says what kind of failure it is, and a public message: the
// exact text the API reference documents for that case. Callers check the
// kind with errors.Is(err, fault.NotFound) or read it with [CodeOf]. The
// wrapped cause, if any, is for logs only and never reaches an API client.
//
// Only the httpserver package maps codes to HTTP statuses.
package fault

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Code classifies an error. The zero value, [Unknown], means the error
// carries no code and must be treated as an internal failure.
//
// A Code is itself an error so that errors.Is(err, fault.NotFound) works.
type Code int

// The codes. Their numeric values are not stable; compare names only.
const (
	Unknown           Code = iota // no code: an internal failure
	Invalid                       // the request is malformed or violates a rule
	Unauthenticated               // no credential, or one that is unknown, malformed, expired or revoked
	Forbidden                     // the credential is valid but may not do this
	NotFound                      // the thing does not exist, or is not the caller's
	Conflict                      // the request clashes with existing state (duplicate, taken)
	InsufficientFunds             // the balance cannot cover the operation
	Unavailable                   // a dependency is down or refused the work
	Upstream                      // a dependency answered but failed the request
	Canceled                      // the caller went away
	Internal                      // a bug or an unexpected failure
	RateLimited                   // the caller sent too much too fast; try again later
	Timeout                       // the server's own deadline passed (not the caller's)
	TooLarge                      // the request, or a file in it, is over a size limit
)

// String returns the code's name.
func (c Code) String() string {
	switch c {
	case Unknown:
		return "unknown"
	case Invalid:
		return "invalid"
	case Unauthenticated:
		return "unauthenticated"
	case Forbidden:
		return "forbidden"
	case NotFound:
		return "not found"
	case Conflict:
		return "conflict"
	case InsufficientFunds:
		return "insufficient funds"
	case Unavailable:
		return "unavailable"
	case Upstream:
		return "upstream failure"
	case Canceled:
		return "canceled"
	case Internal:
		return "internal"
	case RateLimited:
		return "rate limited"
	case Timeout:
		return "timeout"
	case TooLarge:
		return "too large"
	}
	return fmt.Sprintf("code(%d)", int(c))
}

// Error makes a Code usable as an errors.Is target.
func (c Code) Error() string { return c.String() }

// Error is an error with a code and a public message.
type Error struct {
	// Code classifies the error.
	Code Code
	// Message is safe to show to an API client: the documented text.
	Message string
	// Err is the underlying cause, for logs. It may be nil.
	Err error
}

// New returns an error with code c and public message msg.
func New(c Code, msg string) *Error { return &Error{Code: c, Message: msg} }

// Newf is [New] with a formatted message.
func Newf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with code c and public message msg whose cause is
// err. The cause is kept for logs and for errors.Is/As; it is not shown.
func Wrap(err error, c Code, msg string) *Error { return &Error{Code: c, Message: msg, Err: err} }

// Error returns the public message followed by the cause, if any.
func (e *Error) Error() string {
	if e.Err != nil && !strings.HasSuffix(e.Message, e.Err.Error()) {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's code, so errors.Is(err, fault.NotFound)
// works through any wrapping.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// CodeOf returns the code of the outermost *Error in err's chain, Canceled
// for context cancellation (the caller went away), Timeout for a context
// deadline (the server's own bound passed), and Unknown otherwise. It is
// Unknown for nil too: test err == nil for success, never the code.
func CodeOf(err error) Code {
	if err == nil {
		return Unknown
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	if errors.Is(err, context.Canceled) {
		return Canceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	return Unknown
}

// MessageOf returns the public message of the outermost *Error in err's
// chain, or "" when there is none.
func MessageOf(err error) string {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return ""
}
