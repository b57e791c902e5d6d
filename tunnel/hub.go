package tunnel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/perceptron-cloud/perceptron/fault"
)

// The tunnel protocol, on a WebSocket of binary messages: a yamux session
// in which the platform opens, first, a control stream, on which it
// writes a [Hello] as one JSON line once the tunnel is registered (from
// then on public requests reach the client; the stream stays open for
// later control messages), then one stream per public connection. The
// client answers each of those with one status byte before any data:
// StatusOK once it has connected to its local port, or StatusRefused
// followed by a one-byte length and a message when it could not; then
// the stream carries the public connection's bytes both ways.
const (
	StatusOK      byte = 0
	StatusRefused byte = 1
)

// Subprotocol is the WebSocket subprotocol of a tunnel connection.
const Subprotocol = "perceptron-tunnel.v1"

// YamuxConfig is the multiplexer configuration both ends use: 4 MiB
// stream windows (small windows collapse throughput on long links, as
// frp found), keepalive every 15 seconds (below common 30-60 second idle
// timeouts of proxies and load balancers), no log output.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = 4 << 20
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.AcceptBacklog = 1024
	c.LogOutput = io.Discard
	return c
}

// Hello is what the platform tells a tunnel client on the control stream
// once its tunnel is registered.
type Hello struct {
	DomainID  string `json:"domain_id"`
	Subdomain string `json:"subdomain"`
	LocalPort uint16 `json:"local_port"`
}

// hello opens the control stream and writes the Hello.
func hello(mux *yamux.Session, d Domain) error {
	st, err := mux.OpenStream()
	if err != nil {
		return err
	}
	b, _ := json.Marshal(Hello{DomainID: d.ID, Subdomain: d.Subdomain, LocalPort: d.LocalPort})
	_, err = st.Write(append(b, '\n'))
	return err
}

// HubOptions configures a [Hub].
type HubOptions struct {
	// DialTimeout bounds opening a stream and the client's status byte;
	// zero means 10 seconds.
	DialTimeout time.Duration
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// IdleTimeout closes a tunnel from which nothing (not even a
	// keepalive ping) has been read for that long; zero means
	// [DefaultIdleTimeout], negative no bound.
	IdleTimeout time.Duration
	// MaxStreams bounds the streams open at once in one tunnel (the
	// control stream, public connections, and closed ones the client has
	// not closed yet): a public connection past it waits for one to
	// close, up to DialTimeout, then is refused (502); zero means
	// [DefaultMaxStreams].
	MaxStreams int
	// StreamWindow is the most bytes a client may send ahead on one
	// stream (yamux's receive window), which the platform buffers until
	// the public client takes them; zero means [DefaultStreamWindow],
	// at least 256 KiB.
	StreamWindow uint32
}

// Defaults of [HubOptions]: a tunnel's memory is bounded by
// DefaultMaxStreams × DefaultStreamWindow of buffered data (see the
// package doc).
const (
	DefaultIdleTimeout  = 60 * time.Second
	DefaultMaxStreams   = 256
	DefaultStreamWindow = 512 << 10
)

// Hub is the [TunnelBroker] of one process: it holds the tunnels
// connected to it, one per domain (a new connection replaces the old).
type Hub struct {
	dialTimeout time.Duration
	idle        time.Duration
	maxStreams  int
	window      uint32
	log         *slog.Logger
	bufs        FrameBuffers

	mu     sync.Mutex
	bySub  map[string]*session
	byID   map[string]*session
	closed bool
}

var _ TunnelBroker = (*Hub)(nil)

// session is one connected tunnel.
type session struct {
	d     Domain
	cred  string // the key that fetched the token (WithCredential)
	mux   *yamux.Session
	ws    *websocket.Conn
	guard *guard
	since time.Time
	// opening counts the Dials between their check of the stream bound
	// and their stream's registration.
	opening atomic.Int64
	done    chan struct{} // closed when the session has ended
	once    sync.Once
}

func (s *session) close() {
	s.once.Do(func() {
		// The mux first, then the socket (coder/websocket's advice).
		_ = s.mux.Close()
		_ = s.ws.Close(websocket.StatusGoingAway, "tunnel closed")
	})
}

// NewHub returns an empty hub.
func NewHub(opts HubOptions) *Hub {
	h := &Hub{dialTimeout: opts.DialTimeout, idle: opts.IdleTimeout, maxStreams: opts.MaxStreams, window: opts.StreamWindow,
		log: opts.Logger, bySub: map[string]*session{}, byID: map[string]*session{}}
	if h.dialTimeout <= 0 {
		h.dialTimeout = 10 * time.Second
	}
	if h.idle == 0 {
		h.idle = DefaultIdleTimeout
	}
	if h.maxStreams <= 0 {
		h.maxStreams = DefaultMaxStreams
	}
	if h.window == 0 {
		h.window = DefaultStreamWindow
	}
	h.window = max(h.window, 256<<10) // yamux's initial window
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h
}

// Accept upgrades the request to a tunnel WebSocket for d, whose token the
// caller has checked, and serves it until it ends: the client goes away,
// a newer connection for d replaces it, Disconnect or Close. It returns
// when the tunnel has ended.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, d Domain) error {
	// The server's per-request deadlines would outlive the upgrade on the
	// hijacked connection and cut the tunnel; a tunnel has none (yamux's
	// keepalive finds a dead peer).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		return err
	}
	// The session's life is bounded by the hub, not by the request's
	// context, which ends when the handler returns.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	s := &session{d: d, cred: credentialOf(r.Context()), ws: ws, since: time.Now(), done: make(chan struct{})}
	s.guard = newGuard(websocket.NetConn(ctx, ws, websocket.MessageBinary), h.window, func() { _ = ws.CloseNow() })
	defer s.guard.stop()
	mux, err := yamux.Client(NewCoalescer(s.guard, &h.bufs), h.yamuxConfig())
	if err != nil {
		_ = ws.Close(websocket.StatusInternalError, "tunnel setup failed")
		return err
	}
	s.mux = mux
	s.guard.watchIdle(h.idle, s.close)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		s.close()
		return errors.New("tunnel: hub closed")
	}
	old := h.byID[d.ID]
	if o := h.bySub[d.Subdomain]; o != nil && o != old {
		// A previous owner's tunnel for the same name (its domain
		// lapsed or was released, this one is new).
		o.close()
	}
	h.byID[d.ID] = s
	h.bySub[d.Subdomain] = s
	h.mu.Unlock()
	if err := hello(mux, d); err != nil {
		h.log.Info("tunnel hello failed", "domain", d.ID, "err", err)
		s.close()
	}
	if old != nil {
		old.close()
		h.log.Info("tunnel replaced", "domain", d.ID, "subdomain", d.Subdomain)
	} else {
		h.log.Info("tunnel connected", "domain", d.ID, "subdomain", d.Subdomain)
	}
	<-mux.CloseChan()
	s.close()
	if err := s.guard.Reason(); err != nil {
		h.log.Warn("tunnel closed", "domain", d.ID, "subdomain", d.Subdomain, "err", err)
	}
	h.mu.Lock()
	if h.byID[d.ID] == s {
		delete(h.byID, d.ID)
	}
	if h.bySub[d.Subdomain] == s {
		delete(h.bySub, d.Subdomain)
	}
	h.mu.Unlock()
	close(s.done)
	h.log.Info("tunnel disconnected", "domain", d.ID, "subdomain", d.Subdomain)
	return nil
}

// Dial opens a stream to the subdomain's tunnel and waits for the
// client's status byte.
func (h *Hub) Dial(ctx context.Context, subdomain string) (net.Conn, error) {
	h.mu.Lock()
	s := h.bySub[subdomain]
	h.mu.Unlock()
	if s == nil {
		return nil, fault.New(fault.Unavailable, MsgNoTunnel)
	}
	ctx, cancel := context.WithTimeout(ctx, h.dialTimeout)
	defer cancel()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	if err := h.slot(ctx, s); err != nil {
		return nil, err
	}
	go func() {
		st, err := s.mux.OpenStream()
		s.opening.Add(-1)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		var b [1]byte
		if _, err := io.ReadFull(st, b[:]); err != nil {
			_ = st.Close()
			ch <- result{nil, err}
			return
		}
		if b[0] != StatusOK {
			msg := "the tunnel client could not connect to its local port"
			if _, err := io.ReadFull(st, b[:]); err == nil {
				buf := make([]byte, b[0])
				if _, err := io.ReadFull(st, buf); err == nil {
					msg = string(buf)
				}
			}
			_ = st.Close()
			ch <- result{nil, fault.New(fault.Unavailable, msg)}
			return
		}
		ch <- result{st, nil}
	}()
	select {
	case r := <-ch:
		if r.err != nil && fault.CodeOf(r.err) == fault.Unknown {
			r.err = fault.Wrap(r.err, fault.Unavailable, MsgNoTunnel)
		}
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				_ = r.c.Close()
			}
		}()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fault.Wrap(ctx.Err(), fault.Timeout, "the tunnel client did not answer")
		}
		return nil, fault.Wrap(ctx.Err(), fault.Canceled, "request canceled")
	}
}

// MsgTooManyStreams is the error of a public connection that waited
// DialTimeout for one of its tunnel's HubOptions.MaxStreams to close.
const MsgTooManyStreams = "too many connections through this tunnel"

// slot waits until s has room for one more stream and reserves it (in
// s.opening, until the stream is registered). A stream stays in yamux's
// table, with its window of data, until both ends have closed it or
// StreamCloseTimeout has passed, so the table is what is counted; yamux
// says nothing when it removes one, so a waiting Dial looks again every
// 10 ms.
func (h *Hub) slot(ctx context.Context, s *session) error {
	var tick *time.Ticker
	for {
		if s.opening.Add(1)+int64(s.mux.NumStreams()) <= int64(h.maxStreams) {
			return nil
		}
		s.opening.Add(-1)
		if tick == nil {
			tick = time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
		}
		select {
		case <-tick.C:
		case <-s.mux.CloseChan():
			return fault.New(fault.Unavailable, MsgNoTunnel)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fault.Wrap(ctx.Err(), fault.Unavailable, MsgTooManyStreams)
			}
			return fault.Wrap(ctx.Err(), fault.Canceled, "request canceled")
		}
	}
}

// yamuxConfig is the platform's end of [YamuxConfig]: its receive window
// is the hub's, and its accept backlog is small (clients open no
// streams: the guard ends a tunnel whose client tries).
func (h *Hub) yamuxConfig() *yamux.Config {
	c := YamuxConfig()
	c.MaxStreamWindowSize = h.window
	c.AcceptBacklog = h.maxStreams
	return c
}

// Connected reports whether a tunnel is connected for the domain.
func (h *Hub) Connected(_ context.Context, domainID string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.byID[domainID]
	return s != nil && !s.mux.IsClosed(), nil
}

// Since returns when the domain's tunnel connected, if one is.
func (h *Hub) Since(domainID string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.byID[domainID]; s != nil {
		return s.since, true
	}
	return time.Time{}, false
}

// Disconnect closes the domain's tunnel and waits for it to end.
func (h *Hub) Disconnect(ctx context.Context, domainID string) error {
	h.mu.Lock()
	s := h.byID[domainID]
	h.mu.Unlock()
	if s == nil {
		return nil
	}
	s.close()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Len is the number of connected tunnels.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID)
}

// Close closes every tunnel and refuses new ones.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	all := make([]*session, 0, len(h.byID))
	for _, s := range h.byID {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.close()
	}
	for _, s := range all {
		<-s.done
	}
	return nil
}

// coalescer joins each yamux data frame's 12-byte header with its body
// into one write, so a frame is one WebSocket message instead of two
// (yamux's send loop writes them separately).
type coalescer struct {
	net.Conn
	bufs *FrameBuffers
	hdr  [12]byte
	held bool
}

// FrameBuffers holds the buffers in which tunnels join frames, shared by
// every tunnel of its owner (a hub, a client), so an idle tunnel keeps
// none. The zero value is ready to use.
type FrameBuffers struct{ pool sync.Pool }

func (f *FrameBuffers) get() *[]byte {
	if b, ok := f.pool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

// NewCoalescer wraps c for yamux (both ends of a tunnel use it), joining
// frames in buffers from bufs.
func NewCoalescer(c net.Conn, bufs *FrameBuffers) net.Conn { return &coalescer{Conn: c, bufs: bufs} }

func (c *coalescer) Write(p []byte) (int, error) {
	if !c.held && len(p) == 12 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if !c.held {
		return c.Conn.Write(p)
	}
	c.held = false
	bp := c.bufs.get()
	buf := append(append((*bp)[:0], c.hdr[:]...), p...)
	_, err := c.Conn.Write(buf)
	*bp = buf[:0]
	c.bufs.pool.Put(bp)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Tunnels returns the domains whose tunnels are connected here, as they
// were when each connected.
func (h *Hub) Tunnels() []Domain {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Domain, 0, len(h.byID))
	for _, s := range h.byID {
		out = append(out, s.d)
	}
	return out
}
