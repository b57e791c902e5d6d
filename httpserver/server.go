// Package httpserver serves Perceptron's REST API, as documented in the
// API reference, as an http.Handler a host application can mount:
//
//	mux.Handle("/api/", httpserver.New(platform, httpserver.Options{}))
//
// Routes carry their full paths (/api/...), so the handler is mounted at the
// root of the host's path space, or under "/api/" as above. Every error
// response has one JSON shape, the one OpenAI clients parse:
//
//	{"error":{"message":"...","type":"...","request_id":"req_..."}}
//
// and every response carries the same request ID in an X-Request-Id header.
// Unknown routes get 404 and wrong methods 405, in the same shape.
package httpserver

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron"
)

// levelAccess is the level of the per-request access log line.
const levelAccess = slog.LevelInfo

// Options configures [New].
type Options struct {
	// Logger receives the access log and internal errors. Nil uses the
	// platform's logger.
	Logger *slog.Logger

	// BodyTimeout bounds reading a whole request body (zero:
	// [DefaultBodyTimeout]; negative: none), BodyIdleTimeout the wait
	// for its next bytes ([DefaultBodyIdleTimeout], met to within a
	// second: the deadline moves at most once a second). A client that drips
	// or stalls its body is cut off.
	BodyTimeout, BodyIdleTimeout time.Duration
	// UploadTimeout bounds reading the whole body of an audio upload
	// (POST .../audio/transcriptions) in place of BodyTimeout: zero means
	// [DefaultUploadTimeout] (25 MB at 85 KB/s), negative none. The
	// idle bound still applies.
	UploadTimeout time.Duration
	// WriteTimeout bounds each write of a response, not the whole
	// response: a stream lives as long as its client reads it (zero:
	// [DefaultWriteTimeout]; negative: none).
	WriteTimeout time.Duration

	// RateLimit, if set, limits the unauthenticated routes that cost the
	// server work (challenge, verify, the dev faucet) per client address.
	// Nil means [NewRateLimiter] with the default rate; use [NoRateLimit] to
	// turn it off.
	RateLimit RateLimiter
}

type server struct {
	p    *perceptron.Platform
	log  *slog.Logger
	lim  bounds
	rl   RateLimiter
	mux  *http.ServeMux
	bufs sync.Pool // *bytes.Buffer, see getBuf
}

// New returns the API handler for p.
func New(p *perceptron.Platform, opts Options) http.Handler {
	s := &server{p: p, log: opts.Logger, mux: http.NewServeMux(), rl: opts.RateLimit,
		lim: bounds{body: or(opts.BodyTimeout, DefaultBodyTimeout), bodyIdle: or(opts.BodyIdleTimeout, DefaultBodyIdleTimeout),
			write: or(opts.WriteTimeout, DefaultWriteTimeout), upload: or(opts.UploadTimeout, DefaultUploadTimeout)}}
	if s.rl == nil {
		s.rl = NewRateLimiter(Rate{})
	}
	if s.log == nil {
		s.log = p.Logger()
	}
	s.routes()
	return s.outer(s.mux)
}
