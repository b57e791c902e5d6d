package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// yamux's frame header: version, type, flags, stream ID, length (12
// bytes, big endian), as its spec.md describes.
const (
	frameHeaderSize = 12

	frameData         = 0
	frameWindowUpdate = 1
	framePing         = 2
	frameGoAway       = 3

	flagSYN = 1 << 0
	flagACK = 1 << 1
)

// Bounds a [Hub] puts on the frames a tunnel client sends (see the
// package doc, "Bounds of a tunnel").
const (
	// MaxPendingPings is the most pings of a client the platform has not
	// answered yet: each answer waits in a goroutine until it is written.
	MaxPendingPings = 16
	// PingBurst and PingInterval bound a client's ping rate: PingBurst
	// at once, then one per PingInterval. An honest client pings once
	// per keepalive interval (15 s).
	PingBurst    = 32
	PingInterval = time.Second
)

// errViolation is the error of a tunnel closed because its client broke
// the protocol or a bound.
var errViolation = errors.New("tunnel: protocol violation")

// guard sits between a tunnel's WebSocket connection and the platform's
// yamux session. It reads the client's frame headers as they pass and
// ends the tunnel (its reads fail, so yamux's receive loop ends the
// session) when the client:
//   - opens a stream (a SYN on a data or window-update frame: only the
//     platform opens streams, and yamux would queue the client's in its
//     accept backlog, each with a 256 KiB window of data);
//   - sends a data frame longer than the platform's stream window;
//   - has more than MaxPendingPings pings unanswered, or pings faster
//     than PingBurst then one per PingInterval (yamux answers each from
//     a goroutine of its own that waits until the answer is written);
//   - sends a GoAway, an unknown frame type or version;
//   - sends nothing for the idle bound (onIdle is called).
//
// Its writes count the ping answers that went out. Only yamux's receive
// loop reads and only its send loop writes, so the read-side state needs
// no lock.
type guard struct {
	net.Conn
	maxData uint32
	abort   func() // ends the connection at once

	// Read side.
	hdr    [frameHeaderSize]byte
	hn     int    // bytes of hdr filled
	body   uint32 // bytes left of the current frame's body
	tokens float64
	refill time.Time

	pending  atomic.Int64 // client pings not answered yet
	lastRead atomic.Int64 // unix nanoseconds of the last read

	mu     sync.Mutex
	reason error
	idle   *time.Timer
}

// newGuard wraps c. maxData is the longest data frame accepted (the
// platform's stream window); abort ends the connection at once, without
// waiting for a closing handshake the client may never answer.
func newGuard(c net.Conn, maxData uint32, abort func()) *guard {
	g := &guard{Conn: c, maxData: maxData, abort: abort, tokens: PingBurst, refill: time.Now()}
	g.lastRead.Store(time.Now().UnixNano())
	return g
}

// watchIdle calls onIdle once nothing has been read for idle; idle <= 0
// means never.
func (g *guard) watchIdle(idle time.Duration, onIdle func()) {
	if idle <= 0 {
		return
	}
	var check func()
	check = func() {
		since := time.Since(time.Unix(0, g.lastRead.Load()))
		if since >= idle {
			g.fail(fmt.Errorf("%w: nothing received for %s", errViolation, idle))
			g.abort()
			onIdle()
			return
		}
		g.mu.Lock()
		if g.idle != nil {
			g.idle.Reset(idle - since)
		}
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.idle = time.AfterFunc(idle, check)
	g.mu.Unlock()
}

// fail records the first reason the tunnel is ended for.
func (g *guard) fail(err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reason == nil {
		g.reason = err
	}
	return g.reason
}

// Reason is why the guard ended the tunnel, or nil.
func (g *guard) Reason() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reason
}

// stop releases the idle timer.
func (g *guard) stop() {
	g.mu.Lock()
	if g.idle != nil {
		g.idle.Stop()
		g.idle = nil
	}
	g.mu.Unlock()
}

func (g *guard) Read(p []byte) (int, error) {
	if err := g.Reason(); err != nil {
		return 0, err
	}
	n, err := g.Conn.Read(p)
	if n > 0 {
		g.lastRead.Store(time.Now().UnixNano())
		if verr := g.scan(p[:n]); verr != nil {
			err = g.fail(verr)
			g.abort()
			return 0, err
		}
	}
	return n, err
}

// scan follows the frames in b, checking each header once it is whole.
func (g *guard) scan(b []byte) error {
	for len(b) > 0 {
		if g.body > 0 {
			k := min(uint32(len(b)), g.body)
			g.body -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.hn:], b)
		g.hn += k
		b = b[k:]
		if g.hn < frameHeaderSize {
			return nil
		}
		g.hn = 0
		if err := g.check(); err != nil {
			return err
		}
	}
	return nil
}

// check checks the header in g.hdr.
func (g *guard) check() error {
	h := g.hdr[:]
	version, typ := h[0], h[1]
	flags := binary.BigEndian.Uint16(h[2:4])
	length := binary.BigEndian.Uint32(h[8:12])
	if version != 0 {
		return fmt.Errorf("%w: yamux version %d", errViolation, version)
	}
	switch typ {
	case frameData, frameWindowUpdate:
		if flags&flagSYN != 0 {
			return fmt.Errorf("%w: the client opened a stream (only the platform opens streams)", errViolation)
		}
		if typ == frameData {
			if length > g.maxData {
				return fmt.Errorf("%w: a data frame of %d bytes, past the stream window (%d)", errViolation, length, g.maxData)
			}
			g.body = length
		}
	case framePing:
		if flags&flagSYN == 0 {
			return nil // an answer to the platform's ping
		}
		now := time.Now()
		g.tokens = min(PingBurst, g.tokens+now.Sub(g.refill).Seconds()/PingInterval.Seconds())
		g.refill = now
		if g.tokens < 1 {
			return fmt.Errorf("%w: pings faster than %d then one per %s", errViolation, PingBurst, PingInterval)
		}
		g.tokens--
		if g.pending.Add(1) > MaxPendingPings {
			return fmt.Errorf("%w: more than %d pings unanswered (the client does not read)", errViolation, MaxPendingPings)
		}
	case frameGoAway:
		return fmt.Errorf("%w: the client sent a GoAway", errViolation)
	default:
		return fmt.Errorf("%w: frame type %d", errViolation, typ)
	}
	return nil
}

// Write passes p on; each write is one whole frame (the coalescer above
// joins a data frame's header and body), so a ping answer is seen here.
func (g *guard) Write(p []byte) (int, error) {
	n, err := g.Conn.Write(p)
	if err == nil && len(p) >= frameHeaderSize && p[1] == framePing &&
		binary.BigEndian.Uint16(p[2:4])&flagACK != 0 {
		g.pending.Add(-1)
	}
	return n, err
}
