package client

import (
	"net"
	"sync"
	"time"
)

// bufferedConn gathers writes to the connection under a client's
// WebSocket. coder/websocket masks a client's frames in its 4 KiB write
// buffer and flushes that buffer whenever it fills, so one large frame
// would cost a system call per 4 KiB. Once holding, bufferedConn keeps
// writes until Flush (called after each tunnel frame), until it holds
// bufferedConnSize bytes, or until flushDelay has passed (for writes
// that no Flush follows: the library's own control frames).
type bufferedConn struct {
	net.Conn
	mu    sync.Mutex
	buf   []byte
	hold  bool
	timer *time.Timer
	err   error
}

const (
	bufferedConnSize = 256 << 10
	flushDelay       = 200 * time.Microsecond
)

func newBufferedConn(c net.Conn) *bufferedConn {
	b := &bufferedConn{Conn: c}
	b.timer = time.AfterFunc(time.Hour, func() { _ = b.Flush() })
	b.timer.Stop()
	return b
}

// Hold starts gathering writes (after the handshake).
func (b *bufferedConn) Hold() {
	b.mu.Lock()
	b.hold = true
	b.mu.Unlock()
}

func (b *bufferedConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.hold {
		return b.Conn.Write(p)
	}
	if len(b.buf)+len(p) > bufferedConnSize {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= bufferedConnSize {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = make([]byte, 0, bufferedConnSize)
	}
	b.buf = append(b.buf, p...)
	b.timer.Reset(flushDelay)
	return len(p), nil
}

// Flush writes what is gathered.
func (b *bufferedConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *bufferedConn) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	if cap(b.buf) > bufferedConnSize {
		b.buf = nil
	}
	if err != nil {
		b.err = err
	}
	return err
}

func (b *bufferedConn) Close() error {
	_ = b.Flush()
	b.timer.Stop()
	return b.Conn.Close()
}

// flushingConn flushes a bufferedConn after each write through it: the
// tunnel's frames, one WebSocket message each.
type flushingConn struct {
	net.Conn
	b *bufferedConn
}

func (f flushingConn) Write(p []byte) (int, error) {
	n, err := f.Conn.Write(p)
	if err == nil {
		err = f.b.Flush()
	}
	return n, err
}
