package httpserver_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/dev"
	"github.com/perceptron-cloud/perceptron/httpserver"
	"github.com/perceptron-cloud/perceptron/release"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tWriter sends log lines to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// env is a platform served over real HTTP on loopback.
type env struct {
	t     *testing.T
	url   string
	clock *clock
	p     *perceptron.Platform
}

func newEnv(t *testing.T, cfg perceptron.Config) *env {
	t.Helper()
	c := &clock{t: time.Unix(1_748_000_000, 0)}
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	p, err := perceptron.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	srv := httptest.NewServer(httpserver.New(p, httpserver.Options{}))
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, clock: c, p: p}
}

// call sends a request and decodes a JSON object response.
func (e *env) call(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		require.NoError(e.t, err)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	require.NoError(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	require.Equal(e.t, "application/json", resp.Header.Get("Content-Type"), "body: %s", raw)
	var out map[string]any
	require.NoError(e.t, json.Unmarshal(raw, &out), "body: %s", raw)
	if resp.StatusCode >= 400 {
		// Every error has the one shape, with the request ID of the header.
		errObj, ok := out["error"].(map[string]any)
		require.True(e.t, ok, "error shape: %s", raw)
		require.NotEmpty(e.t, errObj["type"])
		require.Equal(e.t, resp.Header.Get("X-Request-Id"), errObj["request_id"])
	}
	require.NotEmpty(e.t, resp.Header.Get("X-Request-Id"))
	return resp.StatusCode, out
}

// expectError asserts an error status and the spec's exact message.
func (e *env) expectError(status int, msg string, method, path, token string, body any) {
	e.t.Helper()
	got, out := e.call(method, path, token, body)
	require.Equal(e.t, status, got, "%s %s: %v", method, path, out)
	require.Equal(e.t, msg, out["error"].(map[string]any)["message"], "%s %s", method, path)
}

// wallet is a real secp256k1 key that signs like personal_sign in a wallet.
type wallet struct {
	key  *ecdsa.PrivateKey
	addr string
}

func newWallet(t *testing.T) wallet {
	k, err := crypto.GenerateKey()
	require.NoError(t, err)
	return wallet{key: k, addr: crypto.PubkeyToAddress(k.PublicKey).Hex()}
}

// sign returns a 0x-hex personal_sign signature with v = 27/28, as wallets send.
func (w wallet) sign(t *testing.T, msg string) string {
	sig, err := crypto.Sign(accounts.TextHash([]byte(msg)), w.key)
	require.NoError(t, err)
	sig[64] += 27
	return "0x" + hex.EncodeToString(sig)
}

func (e *env) login(w wallet) string {
	e.t.Helper()
	st, ch := e.call("GET", "/api/auth/challenge", "", nil)
	require.Equal(e.t, 200, st)
	nonce := ch["nonce"].(string)
	st, out := e.call("POST", "/api/auth/verify", "", map[string]string{
		"address": w.addr, "signature": w.sign(e.t, nonce), "nonce": nonce,
	})
	require.Equal(e.t, 200, st, "%v", out)
	return out["master_key"].(string)
}

func TestLoginAndKeysFlow(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	w := newWallet(t)

	// Challenge: a UUID valid five minutes.
	st, ch := e.call("GET", "/api/auth/challenge", "", nil)
	require.Equal(t, 200, st)
	nonce := ch["nonce"].(string)
	require.Len(t, nonce, 36)
	require.Equal(t, float64(e.clock.Now().Add(5*time.Minute).Unix()), ch["expires_at"])

	// Verify: a master key and the lowercase address.
	st, out := e.call("POST", "/api/auth/verify", "", map[string]string{
		"address": w.addr, "signature": w.sign(t, nonce), "nonce": nonce,
	})
	require.Equal(t, 200, st, "%v", out)
	master := out["master_key"].(string)
	require.Len(t, master, 70)
	require.Regexp(t, `^pct-m-[0-9a-f]{64}$`, master)
	require.Equal(t, strings.ToLower(w.addr), out["address"])

	// The nonce is used up.
	e.expectError(401, "invalid or expired nonce", "POST", "/api/auth/verify", "", map[string]string{
		"address": w.addr, "signature": w.sign(t, nonce), "nonce": nonce,
	})

	// Generate a client key.
	st, key := e.call("POST", "/api/keys/generate", master, map[string]string{"label": "OpenClaw agent"})
	require.Equal(t, 200, st, "%v", key)
	client := key["key"].(string)
	require.Regexp(t, `^pct-[0-9a-f]{64}$`, client)
	require.Len(t, client, 68)
	require.Equal(t, client[:8], key["key_prefix"])
	require.Equal(t, "OpenClaw agent", key["label"])
	require.Equal(t, float64(e.clock.Now().Unix()), key["created_at"])
	keyID := key["id"].(string)

	// Listed, never used yet.
	st, list := e.call("GET", "/api/keys", master, nil)
	require.Equal(t, 200, st)
	keys := list["keys"].([]any)
	require.Len(t, keys, 1)
	k0 := keys[0].(map[string]any)
	require.Equal(t, keyID, k0["id"])
	require.Equal(t, client[:8], k0["key_prefix"])
	require.Nil(t, k0["last_used_at"])
	require.NotContains(t, k0, "key")

	// The client key works where any key does, and is then seen as used.
	e.clock.Advance(time.Minute)
	st, addr := e.call("GET", "/api/wallet/addresses", client, nil)
	require.Equal(t, 200, st)
	require.Equal(t, strings.ToLower(w.addr), addr["address"])
	st, metrics := e.call("GET", "/api/metrics/keys", master, nil)
	require.Equal(t, 200, st)
	m0 := metrics["keys"].([]any)[0].(map[string]any)
	require.Equal(t, float64(e.clock.Now().Unix()), m0["last_used_at"])
	require.Equal(t, "OpenClaw agent", m0["label"])
	require.NotContains(t, m0, "id")

	// Client keys are refused on every master-only route.
	const forbidden = "client API keys are not authorized for this operation"
	e.expectError(403, forbidden, "POST", "/api/keys/generate", client, map[string]string{"label": "x"})
	e.expectError(403, forbidden, "GET", "/api/keys", client, nil)
	e.expectError(403, forbidden, "DELETE", "/api/keys/"+keyID, client, nil)
	e.expectError(403, forbidden, "GET", "/api/metrics/keys", client, nil)
	e.expectError(403, forbidden, "POST", "/api/auth/regenerate-master-key", client, nil)

	// Revoke: the key is refused on the very next request.
	st, rev := e.call("DELETE", "/api/keys/"+keyID, master, nil)
	require.Equal(t, 200, st)
	require.Equal(t, "revoked", rev["status"])
	st, _ = e.call("GET", "/api/wallet/addresses", client, nil)
	require.Equal(t, 401, st)
	e.expectError(404, "API key not found", "DELETE", "/api/keys/"+keyID, master, nil)
	st, list = e.call("GET", "/api/keys", master, nil)
	require.Equal(t, 200, st)
	require.Empty(t, list["keys"])
}

func TestVerifyErrors(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	w, other := newWallet(t), newWallet(t)
	challenge := func() string {
		_, ch := e.call("GET", "/api/auth/challenge", "", nil)
		return ch["nonce"].(string)
	}
	verify := func(addr, sig, nonce string) map[string]string {
		return map[string]string{"address": addr, "signature": sig, "nonce": nonce}
	}

	// Unknown nonce.
	e.expectError(401, "invalid or expired nonce", "POST", "/api/auth/verify", "",
		verify(w.addr, w.sign(t, "a3f2e1d0-0000-4000-8000-000000000000"), "a3f2e1d0-0000-4000-8000-000000000000"))

	// Expired nonce.
	n := challenge()
	e.clock.Advance(5*time.Minute + time.Second)
	e.expectError(401, "challenge expired", "POST", "/api/auth/verify", "", verify(w.addr, w.sign(t, n), n))

	// Signed by another key.
	n = challenge()
	e.expectError(401, "signature does not match claimed address", "POST", "/api/auth/verify", "",
		verify(w.addr, other.sign(t, n), n))

	// Signature of a different text.
	n = challenge()
	e.expectError(401, "signature does not match claimed address", "POST", "/api/auth/verify", "",
		verify(w.addr, w.sign(t, "something else"), n))

	// Malformed signatures: not hex, wrong lengths, bad v, high s.
	good := w.sign(t, "x")
	raw, _ := hex.DecodeString(good[2:])
	badV := append([]byte(nil), raw...)
	badV[64] = 29
	highS := append([]byte(nil), raw...)
	sv := new(big.Int).SetBytes(highS[32:64])
	sv.Sub(crypto.S256().Params().N, sv)
	sv.FillBytes(highS[32:64])
	highS[64] ^= 1 // the twin signature flips the recovery bit
	for name, sig := range map[string]string{
		"not hex":  "0xzz",
		"64 bytes": "0x" + hex.EncodeToString(raw[:64]),
		"66 bytes": "0x" + hex.EncodeToString(append(raw, 0)),
		"v=29":     "0x" + hex.EncodeToString(badV),
		"high s":   "0x" + hex.EncodeToString(highS),
		"empty":    "",
	} {
		t.Run(name, func(t *testing.T) {
			n := challenge()
			e.expectError(401, "signature verification failed", "POST", "/api/auth/verify", "", verify(w.addr, sig, n))
		})
	}

	// v as 0/1 and without 0x are accepted.
	n = challenge()
	sig, err := crypto.Sign(accounts.TextHash([]byte(n)), w.key)
	require.NoError(t, err)
	st, out := e.call("POST", "/api/auth/verify", "", verify(strings.ToLower(w.addr), hex.EncodeToString(sig), n))
	require.Equal(t, 200, st, "%v", out)

	// Bad bodies.
	e.expectError(400, "invalid JSON body", "POST", "/api/auth/verify", "", "{")
	e.expectError(400, "invalid wallet address", "POST", "/api/auth/verify", "", verify("0x123", good, challenge()))
}

func TestMasterKeyLifecycle(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	w := newWallet(t)
	m1 := e.login(w)
	_, k := e.call("POST", "/api/keys/generate", m1, map[string]string{"label": "agent"})
	client := k["key"].(string)

	// Regenerate: the old master key is dead at once, client keys live on.
	st, out := e.call("POST", "/api/auth/regenerate-master-key", m1, nil)
	require.Equal(t, 200, st)
	m2 := out["master_key"].(string)
	require.NotEqual(t, m1, m2)
	require.Equal(t, strings.ToLower(w.addr), out["address"])
	st, _ = e.call("GET", "/api/keys", m1, nil)
	require.Equal(t, 401, st)
	st, _ = e.call("GET", "/api/keys", m2, nil)
	require.Equal(t, 200, st)
	st, _ = e.call("GET", "/api/wallet/addresses", client, nil)
	require.Equal(t, 200, st)

	// A second login also replaces the master key (one live master key per
	// wallet); client keys live on.
	m3 := e.login(w)
	st, _ = e.call("GET", "/api/keys", m2, nil)
	require.Equal(t, 401, st)
	st, _ = e.call("GET", "/api/keys", m3, nil)
	require.Equal(t, 200, st)
	st, _ = e.call("GET", "/api/wallet/addresses", client, nil)
	require.Equal(t, 200, st)
}

func TestKeyRules(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	w, other := newWallet(t), newWallet(t)
	m, mo := e.login(w), e.login(other)

	const labelMsg = "label must be between 1 and 64 characters"
	e.expectError(400, labelMsg, "POST", "/api/keys/generate", m, map[string]string{"label": ""})
	e.expectError(400, labelMsg, "POST", "/api/keys/generate", m, map[string]any{})
	e.expectError(400, labelMsg, "POST", "/api/keys/generate", m, nil)
	e.expectError(400, labelMsg, "POST", "/api/keys/generate", m, map[string]string{"label": strings.Repeat("a", 65)})
	// 64 characters of several bytes each are fine.
	st, k1 := e.call("POST", "/api/keys/generate", m, map[string]string{"label": strings.Repeat("é", 64)})
	require.Equal(t, 200, st, "%v", k1)
	st, _ = e.call("POST", "/api/keys/generate", m, map[string]string{"label": "two"})
	require.Equal(t, 200, st)
	e.expectError(403, "maximum of 2 API keys reached without a credit purchase", "POST", "/api/keys/generate", m,
		map[string]string{"label": "three"})

	// Another wallet cannot revoke it; a malformed ID is not found.
	e.expectError(404, "API key not found", "DELETE", "/api/keys/"+k1["id"].(string), mo, nil)
	e.expectError(404, "API key not found", "DELETE", "/api/keys/not-a-uuid", m, nil)

	// Revoked keys do not count toward the limit.
	st, _ = e.call("DELETE", "/api/keys/"+k1["id"].(string), m, nil)
	require.Equal(t, 200, st)
	st, _ = e.call("POST", "/api/keys/generate", m, map[string]string{"label": "three"})
	require.Equal(t, 200, st)
}

func TestAuthenticationErrors(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	e.expectError(401, "missing bearer token", "GET", "/api/keys", "", nil)
	e.expectError(401, "invalid or revoked API key", "GET", "/api/keys", "pct-m-"+strings.Repeat("0", 64), nil)
	e.expectError(401, "invalid or revoked API key", "GET", "/api/keys", "pct-m-short", nil)
	e.expectError(401, "invalid or revoked API key", "GET", "/api/wallet/addresses", "pct-"+strings.Repeat("a", 64), nil)
	e.expectError(401, "invalid or revoked API key", "GET", "/api/wallet/addresses", "sk-something", nil)
	e.expectError(401, "invalid or revoked API key", "GET", "/api/wallet/addresses", "pct-"+strings.Repeat("A", 64), nil)
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	e.expectError(404, "not found", "GET", "/api/nope", "", nil)
	e.expectError(405, "method not allowed", "POST", "/api/health", "", nil)
	e.expectError(405, "method not allowed", "DELETE", "/api/auth/challenge", "", nil)
}

func TestHealthAndVersions(t *testing.T) {
	e := newEnv(t, perceptron.Config{Version: "1.2.6"})
	st, h := e.call("GET", "/api/health", "", nil)
	require.Equal(t, 200, st)
	require.Equal(t, "ok", h["status"])
	require.Equal(t, "1.2.6", h["version"])
	require.Contains(t, h, "uptime_seconds")

	e.expectError(404, "no releases found", "GET", "/api/version/latest", "", nil)
	e.expectError(404, "release '1.2.6' not found", "GET", "/api/version/1.2.6", "", nil)

	// Latest is the highest version, not the newest row.
	for _, r := range []release.Release{
		{Version: "1.10.0", Notes: "ten", PublishedAt: 100},
		{Version: "1.9.3", Notes: "nine", PublishedAt: 200, Downloads: []string{"https://example.com/a.tar.gz"}},
		{Version: "1.11.0-rc.1", Notes: "rc", PublishedAt: 300},
	} {
		require.NoError(t, e.p.Releases.Put(context.Background(), r))
	}
	st, latest := e.call("GET", "/api/version/latest", "", nil)
	require.Equal(t, 200, st)
	require.Equal(t, "1.11.0-rc.1", latest["version"])
	require.NoError(t, e.p.Releases.Put(context.Background(), release.Release{Version: "1.11.0", PublishedAt: 50}))
	_, latest = e.call("GET", "/api/version/latest", "", nil)
	require.Equal(t, "1.11.0", latest["version"])
	require.Equal(t, []any{}, latest["downloads"])

	st, v := e.call("GET", "/api/version/1.9.3", "", nil)
	require.Equal(t, 200, st)
	require.Equal(t, "nine", v["release_notes"])
	require.Equal(t, []any{"https://example.com/a.tar.gz"}, v["downloads"])
	require.Equal(t, float64(200), v["published_at"])
}

func TestDevSeedsRelease(t *testing.T) {
	e := newEnv(t, dev.Enable(perceptron.Config{Version: "0.3.1"}))
	st, latest := e.call("GET", "/api/version/latest", "", nil)
	require.Equal(t, 200, st)
	require.Equal(t, "0.3.1", latest["version"])
	st, _ = e.call("GET", "/api/version/0.3.1", "", nil)
	require.Equal(t, 200, st)
}
