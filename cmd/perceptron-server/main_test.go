package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/personas"
)

// TestServeAndShutdown starts the server as the command line would, finds
// the URL it prints, calls it, and stops it as SIGTERM would (the context
// run watches is the one signals cancel).
func TestServeAndShutdown(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "perceptron.json")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"version":"9.9.9","releases":[{"version":"9.9.8","release_notes":"old","downloads":[],"published_at":1}]}`), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-dev", "-db", "memory:", "-addr", "127.0.0.1:0", "-ingress-addr", "127.0.0.1:0", "-config", cfgPath}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go io.Copy(io.Discard, pr)
	url := strings.Fields(line)[3]
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), line)

	resp, err := http.Get(url + "/api/health")
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	resp.Body.Close()
	require.Equal(t, "ok", h["status"])
	require.Equal(t, "9.9.9", h["version"])

	// -dev seeds a release for the running version, which is the latest.
	resp, err = http.Get(url + "/api/version/latest")
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	resp.Body.Close()
	require.Equal(t, "9.9.9", v["version"])

	// The dev chain is mounted.
	resp, err = http.Get(url + "/devnet/info")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not shut down")
	}
}

func TestBadFlagsAndConfig(t *testing.T) {
	require.Error(t, run(context.Background(), []string{"-nope"}, io.Discard, io.Discard))
	bad := filepath.Join(t.TempDir(), "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"unknown_field":1}`), 0o600))
	require.ErrorContains(t, run(context.Background(), []string{"-config", bad, "-db", "memory:"}, io.Discard, io.Discard), "unknown field")
	require.ErrorContains(t, run(context.Background(), []string{"-db", "mysql://x"}, io.Discard, io.Discard), "unknown database")
}

func TestConfigChainsAndModels(t *testing.T) {
	t.Setenv("TEST_UPSTREAM_KEY", "sk-test")
	var c fileConfig
	require.NoError(t, json.Unmarshal([]byte(`{
	  "billing": {"receiving_address": "0x5B97e908A7AF2EF5C2176ed45F79b2f74Fa680CC",
	    "chains": [{"chain_id": 42161, "rpc_url": "http://127.0.0.1:1"},
	               {"chain_id": 8453, "rpc_url": "http://127.0.0.1:2", "usdt": "0x0000000000000000000000000000000000000001", "decimals": 6}]},
	  "providers": [{"name": "up", "base_url": "http://127.0.0.1:3/v1", "api_key_env": "TEST_UPSTREAM_KEY"}],
	  "models": [{"id": "m", "context_length": 1000, "max_output_tokens": 100, "input_cents_per_1m": 1, "output_cents_per_1m": 2, "providers": ["up"]}],
	  "stt_models": [{"id": "whisper-1", "name": "Whisper", "cents_per_hour": 36, "providers": ["up"]}],
	  "inference": {"max_audio_mb": 10},
	  "personas": {"model": "m", "personalities": [{"id": "support", "name": "Support", "description": "Answers", "system_prompt": "Be kind."}]}
	}`), &c))
	pc, err := c.platformConfig()
	require.NoError(t, err)
	require.Len(t, pc.Billing.Chains, 2)
	require.Equal(t, uint8(6), pc.Billing.Chains[0].Decimals) // Arbitrum's default
	require.Equal(t, "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9", pc.Billing.Chains[0].Token.Hex())
	require.Len(t, pc.Inference.Providers, 1)
	require.Equal(t, "m", pc.Inference.Models[0].ID)
	require.Len(t, pc.Inference.STTProviders, 1, "the provider an STT model names transcribes too")
	require.Equal(t, "up", pc.Inference.STTProviders[0].Name())
	require.Equal(t, inference.STTModel{ID: "whisper-1", Name: "Whisper", CentsPerHour: 36, Providers: []string{"up"}}, pc.Inference.STTModels[0])
	require.Equal(t, int64(10<<20), pc.Inference.MaxAudioBytes)
	require.Equal(t, "m", pc.Personas.Model)
	require.Equal(t, []personas.Personality{{ID: "support", Name: "Support", Description: "Answers", System: "Be kind."}}, pc.Personas.Personalities)

	c.Billing.Chains = []chainJSON{{ChainID: 777, RPCURL: "x"}}
	_, err = c.platformConfig()
	require.ErrorContains(t, err, "not a known default")
	c.Billing.Chains = nil
	c.Providers[0].APIKeyEnv = "TEST_UNSET_KEY_VAR"
	_, err = c.platformConfig()
	require.ErrorContains(t, err, "is empty")
}

// The configuration example in README.md loads, and the platform it
// describes starts (less its chains, whose RPC URLs are placeholders):
// every model names a configured provider, the STT model a transcribing
// one, and the operator's personality is listed.
func TestReadmeConfigExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(readme)
	start := strings.Index(s, "```json\n{\n  \"billing\"")
	require.GreaterOrEqual(t, start, 0, "README.md has the configuration example")
	s = s[start+len("```json\n"):]
	s = s[:strings.Index(s, "```")]
	s = strings.ReplaceAll(s, `"0x..."`, `"0x5B97e908A7AF2EF5C2176ed45F79b2f74Fa680CC"`)
	s = strings.ReplaceAll(s, `"https://..."`, `"http://127.0.0.1:1"`)
	for _, env := range []string{"OPENROUTER_API_KEY", "GROQ_API_KEY", "X_BEARER_TOKEN"} {
		t.Setenv(env, "test-"+env)
	}
	t.Setenv("PERCEPTRON_TUNNEL_KEY", strings.Repeat("k", 32))
	path := filepath.Join(t.TempDir(), "config.json")
	require.NoError(t, os.WriteFile(path, []byte(s), 0o600))
	c, err := loadConfig(path)
	require.NoError(t, err)
	pc, err := c.platformConfig()
	require.NoError(t, err)
	require.NotEmpty(t, pc.Billing.Chains)
	pc.Billing.Chains = nil
	p, err := perceptron.New(context.Background(), pc)
	require.NoError(t, err)
	defer p.Close()
	require.Len(t, p.Inference.STTModels(), 1)
	ids := []string{}
	for _, pp := range p.Personas.Personalities() {
		ids = append(ids, pp.ID)
	}
	require.Contains(t, ids, "support")
}
