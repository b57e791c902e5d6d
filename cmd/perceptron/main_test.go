package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startFrontend runs `perceptron frontend` against a platform that counts
// the requests it receives, and returns the printed sign-in URL.
func startFrontend(t *testing.T, extra ...string) (signIn string, platform *atomic.Int64, stdout *syncBuffer, stop func() error) {
	t.Helper()
	platform = new(atomic.Int64)
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		platform.Add(1)
		if r.Header.Get("Authorization") != "Bearer the-key" || r.Header.Get("Cookie") != "" {
			w.WriteHeader(401)
			return
		}
		_, _ = io.WriteString(w, `{"balance":1,"currency":"USD_CENTS"}`)
	}))
	t.Cleanup(p.Close)
	ctx, cancel := context.WithCancel(context.Background())
	stdout = new(syncBuffer)
	var stderr syncBuffer
	done := make(chan error, 1)
	args := append([]string{"frontend", "-api", p.URL, "-addr", "127.0.0.1:0", "-key", "the-key"}, extra...)
	go func() { done <- run(ctx, args, stdout, &stderr) }()
	re := regexp.MustCompile(`Open (http://\S+) in your browser`)
	require.Eventually(t, func() bool { return re.MatchString(stdout.String()) }, 10*time.Second, 5*time.Millisecond, "%s", stderr.String())
	signIn = re.FindStringSubmatch(stdout.String())[1]
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return signIn, platform, stdout, stop
}

// The command prints a URL with a per-run secret, writes the secret to a
// file only its user can read, and the frontend refuses requests without
// it; the browser's sign-in and the header both work; the file goes when
// the command stops.
func TestFrontendCommandSecret(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", cfg)
	signIn, platform, stdout, stop := startFrontend(t)
	require.Contains(t, signIn, "/?token=")
	base := signIn[:strings.Index(signIn, "/?token=")]
	secret := signIn[strings.Index(signIn, "=")+1:]
	port := base[strings.LastIndex(base, ":")+1:]

	// No secret: refused, and the platform hears nothing.
	res, err := http.Post(base+"/api/keys/new", "text/plain", strings.NewReader(`{"name":"x"}`))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 403, res.StatusCode)
	req, _ := http.NewRequest("GET", base+"/api/credits/balance", nil)
	req.Host = "evil.example:" + port
	req.Header.Set("Perceptron-Frontend-Token", secret)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 421, res.StatusCode)
	require.Zero(t, platform.Load())

	// The token file: mode 0600, in a 0700 directory, with the secret.
	path := filepath.Join(cfg, "perceptron", "frontend-"+port+".json")
	require.Contains(t, stdout.String(), path)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	var tf tokenFile
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &tf))
	require.Equal(t, tokenFile{URL: base, Token: secret, Header: "Perceptron-Frontend-Token"}, tf)

	// A program with the file's secret.
	req, _ = http.NewRequest("GET", tf.URL+"/api/credits/balance", nil)
	req.Header.Set(tf.Header, tf.Token)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	// A browser with the printed URL.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	res, err = hc.Get(signIn)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, base+"/", res.Request.URL.String(), "the token leaves the address bar")
	res, err = hc.Get(base + "/api/credits/balance")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	require.EqualValues(t, 2, platform.Load())

	require.NoError(t, stop())
	_, err = os.Stat(path)
	require.True(t, os.IsNotExist(err), "the token file is removed at exit: %v", err)
}

// -token-file names the file; "-" writes none; each run has its own
// secret.
func TestFrontendCommandTokenFileFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "front.json")
	signIn1, _, _, stop := startFrontend(t, "-token-file", path)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), signIn1[strings.Index(signIn1, "=")+1:])
	require.NoError(t, stop())

	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	signIn2, _, stdout, _ := startFrontend(t, "-token-file", "-")
	require.NotEqual(t, signIn1[strings.Index(signIn1, "=")+1:], signIn2[strings.Index(signIn2, "=")+1:])
	require.NotContains(t, stdout.String(), "header")
	entries, _ := os.ReadDir(cfg)
	require.Empty(t, entries)
}
