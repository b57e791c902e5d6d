package httpserver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// Config.Domains.Hub reaches the platform's own hub: with a 300 ms idle
// bound, a tunnel client that connects and then sends nothing is closed
// well before the default 60 s.
func TestPlatformHubOptions(t *testing.T) {
	cfg := perceptron.Config{}
	cfg.Domains.Hub = tunnel.HubOptions{IdleTimeout: 300 * time.Millisecond}
	e := newEnv(t, cfg)
	a := e.newAgent(t, 5*billing.Dollar)
	id := e.reserveOn(t, a, "silent", 10001)
	tok := e.tunnelToken(t, a.key, id)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(e.url, "http://", "ws://", 1)+"/api/domains/tunnel",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}, Subprotocols: []string{tunnel.Subprotocol}})
	require.NoError(t, err)
	defer ws.CloseNow()
	start := time.Now()
	require.Eventually(t, func() bool { return e.p.Domains.Connected(ctx, id) }, 10*time.Second, 5*time.Millisecond, "the tunnel never registered")
	gone := awaitDisconnected(t, e.p, id)
	require.Less(t, gone.Sub(start), 5*time.Second, "closed by the configured idle bound, not the default")
}
