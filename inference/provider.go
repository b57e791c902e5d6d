package inference

import (
	"context"
	"errors"
)

// ModelProvider serves chat completions for the models routed to it.
//
// Providers receive the upstream request: Model is the upstream model name,
// defaults are applied, max tokens are clamped, and streaming requests ask
// for usage. A provider must not modify the request: the router reuses it
// for retries and fallbacks.
//
// Errors should carry a fault code: fault.Unavailable when the provider
// could not be reached or is overloaded (connection refused, timeouts, 5xx,
// 429), which the router retries and counts against the provider's circuit
// breaker; fault.Upstream when it answered but refused or failed the
// request; the context's error when ctx ended.
type ModelProvider interface {
	// Name identifies the provider in catalog routes and logs.
	Name() string
	// ChatCompletion returns a whole completion.
	ChatCompletion(ctx context.Context, req *ChatRequest) (*ChatResponse, error)
	// ChatCompletionStream starts a streamed completion. The stream lives
	// until ctx ends or Close is called.
	ChatCompletionStream(ctx context.Context, req *ChatRequest) (Stream, error)
}

// Stream is a streamed completion.
type Stream interface {
	// Recv returns the next chunk, or io.EOF after the last one. An
	// upstream that ends a stream before finishing every choice is an
	// error, not io.EOF. Errors after at least one chunk was returned are
	// a *[MidStreamError].
	Recv() (*ChatChunk, error)
	// Close releases the stream and cancels the upstream request. It may
	// be called at any time, also concurrently with Recv.
	Close() error
}

// MidStreamError is a stream failure after at least one chunk reached the
// caller. Such a failure is never retried: the caller already holds part of
// an answer.
type MidStreamError struct {
	// Provider is the provider whose stream failed.
	Provider string
	// Err is the failure, usually a *fault.Error.
	Err error
}

// Error describes the failure.
func (e *MidStreamError) Error() string {
	return "inference: stream from " + e.Provider + " failed after the first chunk: " + e.Err.Error()
}

// Unwrap returns the failure.
func (e *MidStreamError) Unwrap() error { return e.Err }

// AfterFirstByte reports whether err happened after part of the answer
// reached the caller, so that retrying would duplicate output.
func AfterFirstByte(err error) bool {
	var m *MidStreamError
	return errors.As(err, &m)
}

// midStream wraps err as a [MidStreamError] unless it is one already.
func midStream(provider string, err error) error {
	if err == nil || AfterFirstByte(err) {
		return err
	}
	return &MidStreamError{Provider: provider, Err: err}
}
