package httpserver_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/httpserver"
)

// hostileServer serves e's platform the way the reference server does
// (NewServer on a LimitListener) with opts, and counts the connections it
// holds open.
type hostileServer struct {
	addr string
	open atomic.Int64
}

func serveHostile(t *testing.T, e *env, opts httpserver.Options, lim httpserver.ConnLimits) *hostileServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &hostileServer{addr: ln.Addr().String()}
	srv := httpserver.NewServer(httpserver.New(e.p, opts), httpserver.ServerOptions{})
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			hs.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			hs.open.Add(-1)
		}
	}
	go srv.Serve(httpserver.LimitListener(ln, lim))
	t.Cleanup(func() { srv.Close() })
	return hs
}

// dialFrom opens a TCP connection to addr from the loopback address from
// (any 127.0.0.0/8 address is this machine).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	return c
}

// closedWithin reports whether the server ends c (closes it, after
// whatever answer it sends) within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A declared Content-Length reserves nothing: 50 chat requests that
// declare 16 MiB and send one byte grow the heap by far less than 50 x
// 16 MiB.
func TestDeclaredBodyLengthReservesNothing(t *testing.T) {
	e := newChatEnv(t, nil)
	a := e.newAgent(t, 10*billing.Dollar)
	hs := serveHostile(t, e, httpserver.Options{}, httpserver.ConnLimits{})
	before := heapInUse()
	var conns []net.Conn
	for i := 0; i < 50; i++ {
		c := dialFrom(t, "127.0.0.1", hs.addr)
		defer c.Close()
		fmt.Fprintf(c, "POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: 16777216\r\n\r\n{", a.key)
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // the handlers are reading now
	after := heapInUse()
	growth := int64(after) - int64(before)
	t.Logf("heap in use: %d MB before, %d MB with 50 stalled 16 MiB bodies", before>>20, after>>20)
	require.Less(t, growth, int64(250<<20), "50 declared bodies must not reserve their declared size")
}

// Bodies that stall or drip are cut off: the idle bound cuts a stall, the
// whole-body bound a drip that never stalls for long.
func TestStalledAndDrippingBodiesAreCut(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	hs := serveHostile(t, e, httpserver.Options{BodyTimeout: 3 * time.Second, BodyIdleTimeout: time.Second, RateLimit: httpserver.NoRateLimit{}},
		httpserver.ConnLimits{})

	stalled := dialFrom(t, "127.0.0.1", hs.addr)
	defer stalled.Close()
	fmt.Fprintf(stalled, "POST /api/auth/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	require.True(t, closedWithin(stalled, 5*time.Second), "a stalled body must be cut after the idle bound")

	drip := dialFrom(t, "127.0.0.1", hs.addr)
	defer drip.Close()
	fmt.Fprintf(drip, "POST /api/auth/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				if _, err := drip.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	require.True(t, closedWithin(drip, 10*time.Second), "a dripping body must be cut at the whole-body bound")
	t.Logf("drip cut after %v", time.Since(start).Round(100*time.Millisecond))

	// The defaults cut both within a minute.
	require.LessOrEqual(t, httpserver.DefaultBodyTimeout, time.Minute)
	require.LessOrEqual(t, httpserver.DefaultBodyIdleTimeout, time.Minute)
}

// A client that asks for a large answer and never reads it is cut off
// after the write bound, instead of holding the handler and its memory.
func TestSlowReaderIsCut(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	master := e.login(newWallet(t))
	hs := serveHostile(t, e, httpserver.Options{WriteTimeout: 2 * time.Second}, httpserver.ConnLimits{})
	c := dialFrom(t, "127.0.0.1", hs.addr)
	defer c.Close()
	require.NoError(t, c.(*net.TCPConn).SetReadBuffer(4096))
	fmt.Fprintf(c, "GET /api/metrics/history?period=720&bucket_minutes=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", master)
	// Read nothing: the server must give the connection up soon after the
	// write bound, instead of holding it (and the answer) for as long as
	// the client likes.
	start := time.Now()
	require.Eventually(t, func() bool { return hs.open.Load() == 0 }, 10*time.Second, 50*time.Millisecond,
		"a reader that stalls must be cut")
	t.Logf("stalled reader cut after %v", time.Since(start).Round(100*time.Millisecond))
}

// 1,000 connections from one hostile address hold at most its share of
// the listener; another client is still answered.
func TestHostileConnectionsLeaveRoomForOthers(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	hs := serveHostile(t, e, httpserver.Options{}, httpserver.ConnLimits{})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 1000; i++ {
		c := dialFrom(t, "127.0.0.2", hs.addr)
		fmt.Fprintf(c, "GET /api/health HTTP/1.1\r\nHost: x\r\n") // headers never end
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond)
	require.LessOrEqual(t, hs.open.Load(), int64(httpserver.DefaultMaxConnsPerAddr))

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + hs.addr + "/api/health")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "%s", body)
}

// The unauthenticated routes are rate limited per address, with
// Retry-After; another address is unaffected.
func TestChallengeRateLimit(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	hs := serveHostile(t, e, httpserver.Options{RateLimit: httpserver.NewRateLimiter(httpserver.Rate{PerSecond: 1, Burst: 5})},
		httpserver.ConnLimits{})
	get := func(from string) *http.Response {
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("http://" + hs.addr + "/api/auth/challenge")
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	limited := 0
	for i := 0; i < 20; i++ {
		resp := get("127.0.0.1")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			require.NotEmpty(t, resp.Header.Get("Retry-After"))
		} else {
			require.Equal(t, 200, resp.StatusCode)
		}
	}
	require.GreaterOrEqual(t, limited, 10)
	require.Equal(t, 200, get("127.0.0.3").StatusCode)

	st, body := e.call("GET", "/api/health", "", nil)
	require.Equal(t, 200, st, "%v", body)
}
