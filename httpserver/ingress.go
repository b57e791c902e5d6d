package httpserver

import (
	"bytes"
	"html"
	"io"
	"net"
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
// local service that does not answer in time 504, a Host with an empty
// or invalid port ("name:", "name:99999") 400, each as a small HTML
// page. Serve it with [NewServer] on IngressListener(LimitListener(ln)):
// it is the listener anyone on the internet reaches, and
// [IngressListener] refuses requests whose framing a front proxy could
// read differently. Nil if p has no domains.
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
			proxy.ServeHTTP(&upgradeWriter{ResponseWriter: w}, r)
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

// upgradeWriter closes the connection after an upgrade the local service
// refused: [IngressListener] checks nothing after an upgrade request, so
// no other request may follow one on its connection.
type upgradeWriter struct {
	http.ResponseWriter
	wrote bool
}

func (u *upgradeWriter) WriteHeader(code int) {
	if !u.wrote && code >= 200 {
		u.wrote = true
		if code != http.StatusSwitchingProtocols {
			u.Header().Set("Connection", "close")
		}
	}
	u.ResponseWriter.WriteHeader(code)
}

func (u *upgradeWriter) Write(b []byte) (int, error) {
	if !u.wrote {
		u.WriteHeader(http.StatusOK)
	}
	return u.ResponseWriter.Write(b)
}

func (u *upgradeWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// ingressError answers a public request that could not be proxied.
func ingressError(w http.ResponseWriter, r *http.Request, err error) {
	status := ingressStatusOf(fault.CodeOf(err))
	if fault.CodeOf(err) == fault.Invalid {
		status = http.StatusBadRequest
	}
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

// IngressListener wraps the ingress's listener (after [LimitListener]) so
// that a request whose body a front proxy could frame differently than Go
// does is refused with 400 before Go's server parses it, as RFC 9112
// allows (sections 6.3 and 5.2): one with both Content-Length and
// Transfer-Encoding, and one with an obs-folded header line (a line
// beginning with a space or tab, continuing the previous one). Go's
// parser would take the first by its Transfer-Encoding and drop the
// Content-Length, and unfold the second, so a handler cannot tell; a
// proxy in front that framed by the Content-Length, or did not unfold,
// would read the body as another request (request smuggling).
//
// Each connection's request heads are gathered (up to
// DefaultMaxHeaderBytes + 4 KiB; a longer head is passed on unchecked for
// Go's server to refuse with 431) and checked before Go's server reads
// them; bodies pass as they come, followed only to find where the next
// request begins. A refused request's head is replaced with a malformed
// request line, which Go's server answers with "400 Bad Request" and
// "Connection: close"; nothing after it is read. After a request asking
// for an upgrade (a WebSocket) or a CONNECT, the connection is passed on
// unchecked.
func IngressListener(ln net.Listener) net.Listener { return framingListener{ln} }

type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c}, nil
}

// framingConn follows the requests on a connection (see IngressListener).
// Only the server's reading goroutine (one at a time) calls Read.
type framingConn struct {
	net.Conn
	state     framingState
	head      []byte // a head being gathered
	lineStart int    // where the head's scan goes on
	out       []byte // bytes checked, to hand out
	left      int64  // body bytes left (Content-Length) or of the chunk
	line      []byte // a chunk-size, chunk-end or trailer line being gathered
	upgrade   bool   // the current request asked for an upgrade
	scratch   []byte
}

type framingState int

const (
	framingHead    framingState = iota // gathering a head
	framingLength                      // a body of c.left bytes
	framingSize                        // a chunk-size line
	framingData                        // c.left bytes of a chunk
	framingDataEnd                     // the CRLF after a chunk's data
	framingTrailer                     // trailer lines, up to an empty one
	framingPass                        // everything passes unchecked
	framingRefused                     // a request was refused: EOF
)

const (
	maxFramingHead = DefaultMaxHeaderBytes + 4<<10
	maxFramingLine = 4 << 10
)

// refusedHead is what Go's server gets instead of a refused request's
// head: it answers 400 and closes the connection.
var refusedHead = []byte("REFUSED\r\n\r\n")

func (c *framingConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		switch c.state {
		case framingPass:
			return c.Conn.Read(p)
		case framingRefused:
			return 0, io.EOF
		case framingHead:
			if c.takeHead() {
				continue
			}
			if c.scratch == nil {
				c.scratch = make([]byte, 4<<10)
			}
			n, err := c.Conn.Read(c.scratch)
			c.head = append(c.head, c.scratch[:n]...)
			if c.takeHead() {
				continue
			}
			if len(c.head) > maxFramingHead || err == io.EOF {
				// Too long to check (Go's server refuses it), or cut
				// short: Go's server sees it as it came.
				c.out, c.head, c.state = c.head, nil, framingPass
				continue
			}
			if err != nil {
				return 0, err
			}
		default:
			n, err := c.Conn.Read(p)
			k := c.body(p[:n])
			if k < n {
				// The next request's head began; an error (the end of
				// the connection) comes again after it.
				c.head = append(c.head, p[k:n]...)
				err = nil
			}
			if k > 0 || err != nil {
				return k, err
			}
		}
	}
}

// takeHead checks a whole head in c.head, if there is one: it moves it to
// c.out (or the refused head) and the bytes after it through c.body.
func (c *framingConn) takeHead() bool {
	end := c.headEnd()
	if end < 0 {
		return false
	}
	hd, rest := c.head[:end], c.head[end:]
	refuse, state, length, upgrade := checkHead(hd)
	if refuse {
		c.out, c.head, c.state = refusedHead, nil, framingRefused
		return true
	}
	c.state, c.left, c.upgrade = state, length, upgrade
	if c.state == framingHead && c.upgrade {
		c.state = framingPass
	}
	k := c.body(rest)
	c.out = append(append([]byte(nil), hd...), rest[:k]...)
	c.head = append(c.head[:0:0], rest[k:]...)
	return true
}

// headEnd is the length of the head at the start of c.head (through its
// empty line), or -1. It goes on from the line it stopped at, so a head
// that arrives a byte at a time is scanned once.
func (c *framingConn) headEnd() int {
	b := c.head
	for c.lineStart < len(b) {
		j := bytes.IndexByte(b[c.lineStart:], '\n')
		if j < 0 {
			return -1
		}
		line := b[c.lineStart : c.lineStart+j]
		first := c.lineStart == 0
		c.lineStart += j + 1
		if !first && (len(line) == 0 || len(line) == 1 && line[0] == '\r') {
			end := c.lineStart
			c.lineStart = 0
			return end
		}
	}
	return -1
}

// checkHead reads a request head: whether to refuse it, and how its body
// is framed.
func checkHead(hd []byte) (refuse bool, state framingState, length int64, upgrade bool) {
	lines := bytes.Split(hd, []byte("\n"))
	reqLine := string(bytes.TrimSuffix(lines[0], []byte("\r")))
	var te, cl []string
	var connUpgrade, hasUpgrade bool
	for _, l := range lines[1:] {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) == 0 {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return true, 0, 0, false // obs-fold
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue // Go's server refuses it
		}
		v := strings.TrimSpace(string(value))
		switch strings.ToLower(string(name)) {
		case "transfer-encoding":
			te = append(te, v)
		case "content-length":
			cl = append(cl, v)
		case "connection":
			for _, t := range strings.Split(v, ",") {
				connUpgrade = connUpgrade || strings.EqualFold(strings.TrimSpace(t), "upgrade")
			}
		case "upgrade":
			hasUpgrade = true
		}
	}
	if len(te) > 0 && len(cl) > 0 {
		return true, 0, 0, false
	}
	upgrade = connUpgrade && hasUpgrade || strings.HasPrefix(reqLine, "CONNECT ")
	switch {
	case len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			// Go's server answers 501 and closes.
			return false, framingPass, 0, upgrade
		}
		return false, framingSize, 0, upgrade
	case len(cl) > 0:
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 {
			return false, framingPass, 0, upgrade // Go's server refuses it
		}
		if n > 0 {
			return false, framingLength, n, upgrade
		}
	}
	return false, framingHead, 0, upgrade
}

// body follows b through the current body and returns how many of its
// bytes belong to it; the rest begin the next head.
func (c *framingConn) body(b []byte) int {
	done := 0
	for done < len(b) {
		switch c.state {
		case framingHead:
			return done
		case framingPass, framingRefused:
			return len(b)
		case framingLength, framingData:
			k := int(min(c.left, int64(len(b)-done)))
			c.left -= int64(k)
			done += k
			if c.left == 0 {
				if c.state == framingData {
					c.state = framingDataEnd
				} else {
					c.endBody()
				}
			}
		default: // a line
			j := bytes.IndexByte(b[done:], '\n')
			if j < 0 {
				c.line = append(c.line, b[done:]...)
				done = len(b)
				if len(c.line) > maxFramingLine {
					c.state = framingPass // Go's server refuses it
				}
				continue
			}
			c.line = append(c.line, b[done:done+j]...)
			done += j + 1
			line := bytes.TrimSuffix(c.line, []byte("\r"))
			c.line = c.line[:0]
			switch c.state {
			case framingSize:
				size, _, _ := bytes.Cut(line, []byte(";"))
				n, err := strconv.ParseInt(strings.TrimSpace(string(size)), 16, 64)
				switch {
				case err != nil || n < 0:
					c.state = framingPass // Go's server refuses it
				case n == 0:
					c.state = framingTrailer
				default:
					c.state, c.left = framingData, n
				}
			case framingDataEnd:
				c.state = framingSize
			case framingTrailer:
				if len(line) == 0 {
					c.endBody()
				}
			}
		}
	}
	return done
}

// CloseWrite half-closes the connection (Go's server does before closing
// after an error, so that the client reads the answer).
func (c *framingConn) CloseWrite() error {
	inner := c.Conn
	if lc, ok := inner.(*limitConn); ok {
		inner = lc.Conn
	}
	if cw, ok := inner.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// endBody moves on after a request's body.
func (c *framingConn) endBody() {
	c.state = framingHead
	if c.upgrade {
		c.state = framingPass
	}
}
