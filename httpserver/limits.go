package httpserver

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Defaults of the bounds a hostile or stalled peer meets; see [Options]
// and [ConnLimits].
const (
	// DefaultBodyTimeout bounds reading a whole request body.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultUploadTimeout bounds reading a whole audio upload.
	DefaultUploadTimeout = 5 * time.Minute
	// DefaultBodyIdleTimeout bounds the wait for the next bytes of a body.
	DefaultBodyIdleTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds each write of a response: a stream stays
	// open as long as the client keeps reading, a stalled reader is cut.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultReadHeaderTimeout bounds reading a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout bounds an idle keep-alive connection.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxHeaderBytes bounds a request's headers.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConns bounds the connections a listener holds open.
	DefaultMaxConns = 4096
	// DefaultMaxConnsPerAddr bounds the connections of one client address
	// (an IPv4 address, or an IPv6 /64).
	DefaultMaxConnsPerAddr = 256
)

// or returns d, or def when d is zero; a negative d means no bound (0).
func or(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return def
	}
	return d
}

// bounds are the per-request deadlines of a server.
type bounds struct {
	body, bodyIdle, write, upload time.Duration
}

// deadlineBody is a request body whose every read must make progress
// within bodyIdle, and whose whole read must end by end. When the body has
// been read to its end the read deadline is lifted, so that net/http's
// background read (which detects a client that hangs up) is not cut while
// the handler works.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time // zero: no bound on the whole body
	set  time.Time // the read deadline last set
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if !b.done && (b.idle > 0 || !b.end.IsZero()) {
		d := b.end
		if b.idle > 0 {
			if t := time.Now().Add(b.idle); d.IsZero() || t.Before(d) {
				d = t
			}
		}
		// Move the deadline only when it moves by a second or more: a
		// body read in many small reads sets it once, not per read.
		if b.set.IsZero() || d.Sub(b.set) >= time.Second {
			b.set = d
			_ = b.rc.SetReadDeadline(d)
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		// Read in full: lift the bound. After any other error (a deadline
		// passed) the bound stays, so that the server, which may try to
		// read the rest of the body, gives up too and closes.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter extends the connection's write deadline before each
// write and flush, so every write must complete within the timeout while a
// long stream that keeps being read stays open. To keep the cost off the
// hot path the deadline moves at most once a second.
type deadlineWriter struct {
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time
}

func (d *deadlineWriter) extend() {
	if d.timeout <= 0 {
		return
	}
	now := time.Now()
	if d.deadline.Sub(now) > d.timeout-time.Second {
		return
	}
	d.deadline = now.Add(d.timeout)
	_ = d.rc.SetWriteDeadline(d.deadline)
}

// ConnLimits bounds what one listener's peers may hold open; the zero
// value means the documented defaults, a negative field no bound.
type ConnLimits struct {
	// MaxConns is the most connections open at once; nil (0) means
	// [DefaultMaxConns]. Connections over it are closed as they are
	// accepted, so the listener never stops accepting.
	MaxConns int
	// MaxConnsPerAddr is the most connections of one client address (an
	// IPv4 address, an IPv6 /64); 0 means [DefaultMaxConnsPerAddr]. Behind
	// a reverse proxy every client has the proxy's address: raise it.
	MaxConnsPerAddr int
}

// LimitListener returns a listener that closes a newly accepted
// connection at once when the listener already holds lim.MaxConns, or its
// client address lim.MaxConnsPerAddr, so that one peer's connections
// cannot starve the others' (or the process's file descriptors).
func LimitListener(ln net.Listener, lim ConnLimits) net.Listener {
	if lim.MaxConns == 0 {
		lim.MaxConns = DefaultMaxConns
	}
	if lim.MaxConnsPerAddr == 0 {
		lim.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	return &limitListener{Listener: ln, lim: lim, perAddr: map[netip.Prefix]int{}}
}

type limitListener struct {
	net.Listener
	lim     ConnLimits
	mu      sync.Mutex
	total   int
	perAddr map[netip.Prefix]int
}

// clientKey is the address a connection counts against: the IPv4
// address, or the IPv6 /64.
func clientKey(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	return prefixOf(ap.Addr())
}

// prefixOf is the IPv4 address as a /32, or the IPv6 /64 holding ip.
func prefixOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientKey(c.RemoteAddr())
		l.mu.Lock()
		over := (l.lim.MaxConns > 0 && l.total >= l.lim.MaxConns) ||
			(l.lim.MaxConnsPerAddr > 0 && l.perAddr[key] >= l.lim.MaxConnsPerAddr)
		if !over {
			l.total++
			l.perAddr[key]++
		}
		l.mu.Unlock()
		if over {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *limitListener) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perAddr[key]--; l.perAddr[key] <= 0 {
		delete(l.perAddr, key)
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	key  netip.Prefix
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// ServerOptions configures [NewServer]; zero fields mean the documented
// defaults, negative durations no bound.
type ServerOptions struct {
	// ReadHeaderTimeout: [DefaultReadHeaderTimeout].
	ReadHeaderTimeout time.Duration
	// IdleTimeout: [DefaultIdleTimeout].
	IdleTimeout time.Duration
	// MaxHeaderBytes: [DefaultMaxHeaderBytes].
	MaxHeaderBytes int
}

// NewServer returns an http.Server for h with the connection-level bounds
// set: headers must arrive within ReadHeaderTimeout and idle keep-alive
// connections are closed after IdleTimeout. Bodies and writes are bounded
// per request by the handler [New] returns (see [Options]), so that long
// streams can live while stalled peers are cut; serve it on a
// [LimitListener].
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: or(o.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       or(o.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
}
