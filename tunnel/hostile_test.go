package tunnel_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/tunnel"
	"github.com/perceptron-cloud/perceptron/tunnel/client"
)

// hubEnv is a real Hub served over HTTP: GET /?sub=NAME connects a tunnel
// for the domain NAME of one owner (the token check is the Service's and
// is not under test here).
type hubEnv struct {
	hub *tunnel.Hub
	srv *httptest.Server
}

const owner = "0x00000000000000000000000000000000000000aa"

func newHubEnv(t *testing.T, opts tunnel.HubOptions) *hubEnv {
	t.Helper()
	e := &hubEnv{hub: tunnel.NewHub(opts)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub := r.URL.Query().Get("sub")
		port, _ := strconv.Atoi(r.URL.Query().Get("port"))
		_ = e.hub.Accept(w, r, tunnel.Domain{ID: "id-" + sub, Account: owner, Subdomain: sub, LocalPort: uint16(port), Active: true})
	}))
	t.Cleanup(func() {
		_ = e.hub.Close()
		e.srv.Close()
	})
	return e
}

func (e *hubEnv) url(sub string, port int) string {
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/?sub=" + sub + "&port=" + strconv.Itoa(port)
}

// dialRaw opens a tunnel WebSocket and nothing else.
func (e *hubEnv) dialRaw(t *testing.T, sub string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(context.Background(), e.url(sub, 1), &websocket.DialOptions{Subprotocols: []string{tunnel.Subprotocol}})
	require.NoError(t, err)
	ws.SetReadLimit(-1)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// connected waits until the hub holds sub's tunnel.
func (e *hubEnv) connected(t *testing.T, sub string) {
	t.Helper()
	require.Eventually(t, func() bool {
		ok, _ := e.hub.Connected(context.Background(), "id-"+sub)
		return ok
	}, 10*time.Second, 5*time.Millisecond, sub+" connects")
}

// closed waits until sub's tunnel is gone.
func (e *hubEnv) closed(t *testing.T, sub string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		ok, _ := e.hub.Connected(context.Background(), "id-"+sub)
		return !ok
	}, within, 10*time.Millisecond, sub+" is closed")
}

// honest connects the real tunnel client for sub to a local origin that
// answers "ok SUB".
func (e *hubEnv) honest(t *testing.T, sub string) {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+sub)
	}))
	t.Cleanup(origin.Close)
	port, _ := strconv.Atoi(origin.URL[strings.LastIndexByte(origin.URL, ':')+1:])
	c, err := client.New(client.Options{
		URL: e.url(sub, port),
		Tokens: func(context.Context) (client.Token, error) {
			return client.Token{Token: "t", Subdomain: sub, LocalPort: uint16(port), ExpiresAt: time.Now().Add(time.Hour).Unix()}, nil
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	e.connected(t, sub)
}

// get sends a request through sub's tunnel, as the ingress does.
func (e *hubEnv) get(t *testing.T, sub string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.hub.Dial(ctx, sub)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+sub+".pct.site\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

// memInUse is the heap and the goroutine stacks in use after a GC.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

// frame is a yamux frame header.
func frame(typ byte, flags uint16, stream, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// A client that floods pings (SYN) in 60 KB messages and reads nothing
// made yamux start a goroutine per ping, each waiting up to 30 s to
// write its answer: 100,000 pings held hundreds of MB. The guard ends the
// tunnel past MaxPendingPings unanswered pings (or PingBurst at once);
// the owner's other tunnel keeps serving.
func TestTunnelPingFloodIsBounded(t *testing.T) {
	e := newHubEnv(t, tunnel.HubOptions{})
	e.honest(t, "other")
	require.Equal(t, "ok other", e.get(t, "other"))

	before := memInUse()
	g0 := runtime.NumGoroutine()
	ws := e.dialRaw(t, "flood")
	e.connected(t, "flood")
	const perMsg = 5000 // 60 KB
	msg := make([]byte, 0, perMsg*12)
	for i := range perMsg {
		msg = append(msg, frame(2, 1, 0, uint32(i))...)
	}
	sent := 0
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 20 { // 100,000 pings
		if ws.Write(ctx, websocket.MessageBinary, msg) != nil {
			break
		}
		sent += perMsg
	}
	time.Sleep(500 * time.Millisecond)
	grown := memInUse() - before
	t.Logf("%d pings sent; heap and stacks grown by %d KiB; goroutines %d -> %d", sent, grown>>10, g0, runtime.NumGoroutine())
	require.Less(t, grown, int64(64<<20), "memory stays bounded")
	e.closed(t, "flood", 10*time.Second)
	require.Equal(t, "ok other", e.get(t, "other"), "the owner's other tunnel still serves")
}

// A client that opens streams (yamux never Accepted them: up to 1,024
// sat in its backlog, each with 256 KiB of data) has its tunnel closed
// at the first; the owner's other tunnel keeps serving.
func TestTunnelClientOpenedStreamsAreRefused(t *testing.T) {
	e := newHubEnv(t, tunnel.HubOptions{})
	e.honest(t, "other")

	before := memInUse()
	ws := e.dialRaw(t, "opener")
	cfg := tunnel.YamuxConfig()
	cfg.StreamOpenTimeout = 0
	cfg.EnableKeepAlive = false
	mux, err := yamux.Server(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), cfg)
	require.NoError(t, err)
	defer mux.Close()
	control, err := mux.AcceptStream() // the platform's Hello
	require.NoError(t, err)
	defer control.Close()
	e.connected(t, "opener")

	data := make([]byte, 256<<10) // yamux's initial window
	opened := 0
	for range 1024 {
		st, err := mux.OpenStream()
		if err != nil {
			break
		}
		_ = st.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write(data); err != nil {
			break
		}
		opened++
	}
	time.Sleep(500 * time.Millisecond)
	grown := memInUse() - before
	t.Logf("%d streams opened and filled; heap and stacks grown by %d KiB", opened, grown>>10)
	require.Less(t, grown, int64(64<<20), "memory stays bounded")
	e.closed(t, "opener", 10*time.Second)
	require.Equal(t, "ok other", e.get(t, "other"), "the owner's other tunnel still serves")
}

// A tunnel that sends nothing, not even keepalive pings, is closed after
// HubOptions.IdleTimeout; an honest client's keepalive keeps its own.
func TestTunnelIdleIsClosed(t *testing.T) {
	e := newHubEnv(t, tunnel.HubOptions{IdleTimeout: 300 * time.Millisecond})
	_ = e.dialRaw(t, "silent")
	e.connected(t, "silent")
	e.closed(t, "silent", 10*time.Second)

	// An honest client pings every 15 s: with a bound above that it
	// stays.
	e2 := newHubEnv(t, tunnel.HubOptions{IdleTimeout: 20 * time.Second})
	e2.honest(t, "talker")
	time.Sleep(time.Second)
	require.Equal(t, "ok talker", e2.get(t, "talker"))
}

// Other frames the protocol never has a client send end its tunnel: a
// GoAway, an unknown type or version, a data frame longer than the
// stream window.
func TestTunnelMalformedFramesClose(t *testing.T) {
	e := newHubEnv(t, tunnel.HubOptions{})
	for name, f := range map[string][]byte{
		"goaway":  frame(3, 0, 0, 0),
		"type":    frame(9, 0, 0, 0),
		"version": append([]byte{1}, frame(2, 1, 0, 0)[1:]...),
		"long":    frame(0, 0, 1, tunnel.DefaultStreamWindow+1),
		"window":  frame(1, 1, 2, 0), // a window update opening stream 2
	} {
		ws := e.dialRaw(t, name)
		e.connected(t, name)
		require.NoError(t, ws.Write(context.Background(), websocket.MessageBinary, f), name)
		e.closed(t, name, 10*time.Second)
	}
}

// A tunnel holds at most HubOptions.MaxStreams streams, each buffering
// at most its window of what the client sends before the public client
// reads it: a client that fills every window of every stream the platform
// opens grows the heap by about MaxStreams × StreamWindow, and a
// connection past the bound is refused.
func TestTunnelStreamsAndWindowsBoundMemory(t *testing.T) {
	const streams, window = 32, 1 << 20
	e := newHubEnv(t, tunnel.HubOptions{MaxStreams: streams, StreamWindow: window, DialTimeout: 3 * time.Second})
	before := memInUse()
	ws := e.dialRaw(t, "filler")
	cfg := tunnel.YamuxConfig()
	mux, err := yamux.Server(websocket.NetConn(context.Background(), ws, websocket.MessageBinary), cfg)
	require.NoError(t, err)
	defer mux.Close()
	go func() {
		// The client answers each stream and sends more than the window
		// in 64 KiB writes (a write blocks once the window is full).
		chunk := make([]byte, 64<<10)
		first := true
		for {
			st, err := mux.AcceptStream()
			if err != nil {
				return
			}
			if first {
				first = false
				continue // the control stream
			}
			go func() {
				_, _ = st.Write([]byte{tunnel.StatusOK})
				for {
					if _, err := st.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	e.connected(t, "filler")
	ctx := context.Background()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := 0; i < streams-1; i++ { // the control stream is one
		c, err := e.hub.Dial(ctx, "filler")
		require.NoError(t, err, "stream %d", i)
		conns = append(conns, c)
	}
	_, err = e.hub.Dial(ctx, "filler")
	require.Error(t, err, "a stream past MaxStreams waits DialTimeout, then is refused")
	require.Contains(t, err.Error(), tunnel.MsgTooManyStreams)
	time.Sleep(time.Second) // the windows fill
	grown := memInUse() - before
	perStream := grown / (streams - 1)
	t.Logf("%d streams with full %d KiB windows: heap grown by %d KiB, %d KiB per stream", streams-1, window>>10, grown>>10, perStream>>10)
	require.Less(t, grown, int64(streams*window*5/2+(8<<20)), "at most 2.5 windows per stream")
}
