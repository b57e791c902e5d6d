package tunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/fault"
)

// IngressOptions configures [Service.Ingress].
type IngressOptions struct {
	// ResponseHeaderTimeout bounds the wait for the local service's
	// response headers (the error is then fault.Timeout); zero means 60
	// seconds.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerTunnel bounds the idle streams kept open to one
	// tunnel for reuse; zero means 64.
	MaxIdleConnsPerTunnel int
	// Error writes the answer to a request that could not be proxied:
	// err is fault.Invalid (a Host with an invalid port: 400),
	// fault.NotFound (no such domain), fault.Unavailable (no
	// tunnel, or the client could not reach its port), fault.Timeout or
	// fault.Canceled. Nil means plain text with 400, 404, 502 or 504.
	Error func(w http.ResponseWriter, r *http.Request, err error)
}

// tunnelHostSuffix marks the proxy's outgoing URLs: the Transport's pool
// is per host, so per subdomain, and its dialer reads the subdomain back.
const tunnelHostSuffix = ".tunnel.internal"

// Ingress returns the public handler: it routes each request by Host
// (SUBDOMAIN.BASE on any port) through the domain's tunnel with
// httputil.ReverseProxy: full HTTP/1.1 (the client's Host kept,
// X-Forwarded-For, -Host and -Proto set, hop-by-hop headers dropped),
// bodies streamed both ways, responses without a length or of type
// text/event-stream flushed as they come, WebSocket upgrades passed
// through. Streams to a tunnel are kept for reuse, so one connection to
// the local service serves many requests.
func (s *Service) Ingress(opts IngressOptions) http.Handler {
	if opts.ResponseHeaderTimeout <= 0 {
		opts.ResponseHeaderTimeout = 60 * time.Second
	}
	if opts.MaxIdleConnsPerTunnel <= 0 {
		opts.MaxIdleConnsPerTunnel = 64
	}
	if opts.Error == nil {
		opts.Error = plainError
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return s.broker.Dial(ctx, strings.TrimSuffix(host, tunnelHostSuffix))
		},
		MaxIdleConnsPerHost:   opts.MaxIdleConnsPerTunnel,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	type routed struct{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			sub, _ := pr.In.Context().Value(routed{}).(string)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = sub + tunnelHostSuffix
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			if pr.In.TLS == nil && pr.In.Header.Get("X-Forwarded-Proto") == "" {
				pr.Out.Header.Set("X-Forwarded-Proto", "http")
			}
		},
		Transport:  tr,
		BufferPool: &byteBuffers{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			sub, _ := r.Context().Value(routed{}).(string)
			switch {
			case r.Context().Err() != nil:
				err = fault.Wrap(err, fault.Canceled, "request canceled")
			case fault.CodeOf(err) != fault.Unknown && fault.MessageOf(err) != "":
			case isTimeout(err):
				err = fault.Wrap(err, fault.Timeout, "the local service did not answer in time")
			default:
				err = fault.Wrap(err, fault.Unavailable, "the local service closed the connection")
			}
			if fault.MessageOf(err) == MsgNoTunnel {
				// No tunnel: is there a domain at all?
				if _, derr := s.store.ActiveDomain(r.Context(), sub); fault.CodeOf(derr) == fault.NotFound {
					err = fault.New(fault.NotFound, "no such domain: "+r.Host)
				} else {
					err = fault.New(fault.Unavailable, "no tunnel is connected for "+s.FullDomain(sub))
				}
			}
			opts.Error(w, r, err)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Bodies stream both ways at once: without this the server
		// would discard up to 256 KB of a request body still unread
		// when the response starts.
		_ = http.NewResponseController(w).EnableFullDuplex()
		if !validHostPort(r.Host) {
			opts.Error(w, r, fault.New(fault.Invalid, MsgBadHostPort))
			return
		}
		sub, ok := s.subdomainOf(r.Host)
		if !ok {
			opts.Error(w, r, fault.New(fault.NotFound, "no such domain: "+r.Host))
			return
		}
		// The tunnel here must still be the name's active holder (see
		// close.go): a released name never reaches its previous owner.
		if err := s.checkRoute(r.Context(), sub, r.Host); err != nil {
			opts.Error(w, r, err)
			return
		}
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routed{}, sub)))
	})
}

// MsgBadHostPort is the ingress's answer (400) to a Host whose port is
// empty ("name:"), not a number or not in 1-65535: a front proxy may read
// such a Host differently (RFC 9112 section 3.2 has a server refuse an
// invalid Host).
const MsgBadHostPort = "invalid port in Host"

// validHostPort reports whether host has no port or a port of 1 to 65535
// written with one to five digits.
func validHostPort(host string) bool {
	var port string
	if strings.HasPrefix(host, "[") {
		i := strings.IndexByte(host, ']')
		if i < 0 {
			return false
		}
		rest := host[i+1:]
		if rest == "" {
			return true
		}
		if rest[0] != ':' {
			return false
		}
		port = rest[1:]
	} else {
		i := strings.IndexByte(host, ':')
		if i < 0 {
			return true
		}
		port = host[i+1:]
	}
	if len(port) == 0 || len(port) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
		n = n*10 + int(port[i]-'0')
	}
	return n >= 1 && n <= 65535
}

func isTimeout(err error) bool {
	var ne net.Error
	return fault.CodeOf(err) == fault.Timeout || errors.As(err, &ne) && ne.Timeout() ||
		strings.Contains(err.Error(), "timeout awaiting response headers")
}

// plainError answers in plain text: 400, 404, 502 or 504.
func plainError(w http.ResponseWriter, _ *http.Request, err error) {
	status := http.StatusBadGateway
	switch fault.CodeOf(err) {
	case fault.Invalid:
		status = http.StatusBadRequest
	case fault.NotFound:
		status = http.StatusNotFound
	case fault.Timeout:
		status = http.StatusGatewayTimeout
	case fault.Canceled:
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(http.StatusText(status) + ": " + fault.MessageOf(err) + "\n"))
}

// byteBuffers is the proxy's copy buffers (httputil.BufferPool).
type byteBuffers struct{ pool sync.Pool }

func (b *byteBuffers) Get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, 64<<10)
}

func (b *byteBuffers) Put(p []byte) { b.pool.Put(&p) }
