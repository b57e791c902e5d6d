package httpserver_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/httpserver"
)

// rawIngress is the ingress served as the reference server serves it
// (NewServer on IngressListener(LimitListener)), with a connected tunnel
// to an origin that echoes each request's body and records its paths.
type rawIngress struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func newRawIngress(t *testing.T) *rawIngress {
	t.Helper()
	ri := &rawIngress{}
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, b, err := c.Read(r.Context())
				if err != nil || c.Write(r.Context(), typ, append([]byte("echo: "), b...)) != nil {
					return
				}
			}
		}
		b, _ := io.ReadAll(r.Body)
		ri.mu.Lock()
		ri.seen = append(ri.seen, r.Method+" "+r.URL.Path)
		ri.mu.Unlock()
		_, _ = io.WriteString(w, r.URL.Path+" "+string(b))
	})
	te := newTunnelEnv(t, "raw", origin, perceptron.Config{})
	te.connect(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := httpserver.NewServer(httpserver.NewIngress(te.p, httpserver.IngressOptions{}), httpserver.ServerOptions{})
	go srv.Serve(httpserver.IngressListener(httpserver.LimitListener(ln, httpserver.ConnLimits{})))
	t.Cleanup(func() { srv.Close() })
	ri.addr = ln.Addr().String()
	return ri
}

// send writes raw bytes on a new connection and reads want responses (or
// as many as come before the server closes it).
func (ri *rawIngress) send(t *testing.T, raw string, want int) []*http.Response {
	t.Helper()
	res, _ := ri.sendConn(t, raw, want)
	return res
}

// sendConn is send, also returning whether the server closed the
// connection after the responses (within a second).
func (ri *rawIngress) sendConn(t *testing.T, raw string, want int) ([]*http.Response, bool) {
	t.Helper()
	c, err := net.Dial("tcp", ri.addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, raw)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	var out []*http.Response
	for range want {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, res)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	return out, err == io.EOF
}

func bodyOf(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func (ri *rawIngress) reached(path string) bool {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	for _, s := range ri.seen {
		if strings.HasSuffix(s, " "+path) {
			return true
		}
	}
	return false
}

// Requests a front proxy could frame differently than Go does are refused
// with 400 before they reach the tunnel, on raw connections: both
// Content-Length and Transfer-Encoding (a proxy framing by the length
// would read the rest as another request), an obs-folded
// Transfer-Encoding, and Hosts with port 99999 or an empty port.
func TestIngressRefusesAmbiguousFraming(t *testing.T) {
	ri := newRawIngress(t)
	const host = "raw.pct.site"
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	for name, raw := range map[string]string{ // the connection is closed
		"content-length and chunked": "POST /clte HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\n\r\n",
		"chunked then content-length, smuggling": "POST /tecl HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled),
		"obs-folded transfer-encoding": "POST /fold HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"obs-fold elsewhere":           "GET /fold2 HTTP/1.1\r\nHost: " + host + "\r\nX-A: b\r\n\tc\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			res, closed := ri.sendConn(t, raw, 1)
			require.Len(t, res, 1)
			require.Equal(t, 400, res[0].StatusCode, bodyOf(res[0]))
			require.True(t, closed, "the connection is closed")
		})
	}
	for name, raw := range map[string]string{
		"port 99999":        "GET /p1 HTTP/1.1\r\nHost: " + host + ":99999\r\n\r\n",
		"empty port":        "GET /p2 HTTP/1.1\r\nHost: " + host + ":\r\n\r\n",
		"port 0":            "GET /p3 HTTP/1.1\r\nHost: " + host + ":0\r\n\r\n",
		"port not a number": "GET /p4 HTTP/1.1\r\nHost: " + host + ":80a\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			res := ri.send(t, raw, 1)
			require.Len(t, res, 1)
			require.Equal(t, 400, res[0].StatusCode, bodyOf(res[0]))
		})
	}
	// An upgrade the local service refuses ends its connection: nothing
	// after an upgrade request is checked, so nothing after it is served.
	res, closed := ri.sendConn(t, "GET /noupgrade HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"+
		"POST /after HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 2)
	require.Len(t, res, 1)
	require.Equal(t, 200, res[0].StatusCode)
	require.True(t, closed, "the connection is closed after a refused upgrade")
	for _, p := range []string{"/clte", "/tecl", "/smuggled", "/fold", "/fold2", "/p1", "/p2", "/p3", "/p4", "/after"} {
		require.False(t, ri.reached(p), p+" reached the origin")
	}
}

// What is well framed still passes, on one connection: a body by length,
// a chunked body with an extension and a trailer, a port in Host, and a
// request after each (pipelined).
func TestIngressFramingPassesValidRequests(t *testing.T) {
	ri := newRawIngress(t)
	const host = "raw.pct.site"
	raw := "POST /a HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: " + host + ":8443\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n" + // not a domain: 404
		"GET /d HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	res := ri.send(t, raw, 4)
	require.Len(t, res, 4)
	require.Equal(t, 200, res[0].StatusCode)
	require.Equal(t, "/a hello", bodyOf(res[0]))
	require.Equal(t, 200, res[1].StatusCode)
	require.Equal(t, "/b abcde", bodyOf(res[1]))
	require.Equal(t, 404, res[2].StatusCode)
	require.Equal(t, 200, res[3].StatusCode)
	require.Equal(t, "/d ", bodyOf(res[3]))

	// A WebSocket upgrade after a request on the same connection: the
	// connection passes unchecked from the upgrade on.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+ri.addr+"/ws", &websocket.DialOptions{Host: host})
	require.NoError(t, err)
	defer ws.CloseNow()
	for i := range 3 {
		msg := strings.Repeat("x", 1+i*15000)
		require.NoError(t, ws.Write(ctx, websocket.MessageText, []byte(msg)))
		_, b, err := ws.Read(ctx)
		require.NoError(t, err)
		require.Equal(t, "echo: "+msg, string(b))
	}

	// Written a byte at a time, heads and bodies split anywhere.
	c, err := net.Dial("tcp", ri.addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		for i := range len(raw) {
			if _, err := c.Write([]byte{raw[i]}); err != nil {
				return
			}
		}
	}()
	br := bufio.NewReader(c)
	for _, want := range []int{200, 200, 404, 200} {
		r, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		require.Equal(t, want, r.StatusCode)
	}
}
