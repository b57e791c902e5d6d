package httpserver

import (
	"html"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/fault"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// IngressOptions configures [NewIngress]. Zero durations mean the
// defaults of [Options]; negative ones no bound.
type IngressOptions struct {
	// BodyIdleTimeout bounds the wait for the next bytes of a request
	// body (a body may be long: there is no bound on the whole of it).
	BodyIdleTimeout time.Duration
	// WriteTimeout bounds each write of a response to the public client.
	WriteTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the local service's
	// response headers, answered 504; zero means 60 seconds.
	ResponseHeaderTimeout time.Duration
	// RateLimit bounds each client address's requests (429 with
	// Retry-After past it); nil means [DefaultIngressRate] in process
	// memory, NoRateLimit{} none.
	RateLimit RateLimiter
}

// DefaultIngressRate is the ingress's default per-address request rate:
// generous for a browser or an API client, a bound for a flood.
var DefaultIngressRate = Rate{PerSecond: 500, Burst: 1000}

// NewIngress returns the public handler of p's domains: every request is
// routed by its Host (SUBDOMAIN.BASE_DOMAIN, any port) through the
// domain's tunnel (see tunnel.Service.Ingress). Unknown hosts get 404, a
// domain without a connected tunnel or whose local port refuses 502, a
// local service that does not answer in time 504, each as a small HTML
// page. Serve it with [NewServer] on a [LimitListener]: it is the
// listener anyone on the internet reaches. Nil if p has no domains.
func NewIngress(p *perceptron.Platform, opts IngressOptions) http.Handler {
	if p.Domains == nil {
		return nil
	}
	idle := or(opts.BodyIdleTimeout, DefaultBodyIdleTimeout)
	write := or(opts.WriteTimeout, DefaultWriteTimeout)
	proxy := p.Domains.Ingress(tunnel.IngressOptions{
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		Error:                 ingressError,
	})
	rl := opts.RateLimit
	if rl == nil {
		rl = NewRateLimiter(DefaultIngressRate)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, after, err := rl.Allow(r.Context(), "ingress:"+clientAddr(r)); err == nil && !ok {
			secs := int64((after + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			ingressError(w, r, fault.New(fault.RateLimited, "too many requests, retry later"))
			return
		}
		rc := http.NewResponseController(w)
		if isUpgrade(r) {
			// A WebSocket through the tunnel lives as long as its peers
			// do; the server's deadlines would outlive the hijack.
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
			proxy.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, dw: deadlineWriter{rc: rc, timeout: write}}
		sw.dw.extend()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, idle: idle}
		}
		proxy.ServeHTTP(sw, r)
	})
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return r.Header.Get("Upgrade") != ""
			}
		}
	}
	return false
}

// ingressError answers a public request that could not be proxied.
func ingressError(w http.ResponseWriter, r *http.Request, err error) {
	status := ingressStatusOf(fault.CodeOf(err))
	if status == 0 {
		return // the client went away
	}
	title := http.StatusText(status)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte("<!doctype html>\n<title>" + title + "</title>\n<h1>" + title + "</h1>\n<p>" +
		html.EscapeString(fault.MessageOf(err)) + "</p>\n"))
}
