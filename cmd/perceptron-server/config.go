package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/personas"
	"github.com/perceptron-cloud/perceptron/release"
)

// fileConfig is the -config file: JSON, every field optional, unknown
// fields refused. An example:
//
//	{
//	  "version": "1.2.6",
//	  "releases": [{"version": "1.2.6", "release_notes": "## 1.2.6", "downloads": ["https://..."], "published_at": 1748000000}],
//	  "billing": {
//	    "receiving_address": "0x5B97e908A7AF2EF5C2176ed45F79b2f74Fa680CC",
//	    "max_payment_age_seconds": 300,
//	    "check_tokens": true,
//	    "chains": [
//	      {"chain_id": 42161, "rpc_url": "https://arb1.example/rpc"},
//	      {"chain_id": 8453, "name": "Base", "rpc_url": "https://base.example/rpc", "usdt": "0x...", "decimals": 6, "confirmations": 2}
//	    ]
//	  },
//	  "providers": [{"name": "openrouter", "base_url": "https://openrouter.ai/api/v1", "api_key_env": "OPENROUTER_API_KEY"}],
//	  "models": [{"id": "moonshotai/kimi-k2.6", "name": "Kimi K2.6", "context_length": 262144, "max_output_tokens": 183500,
//	              "frontier_rank": 7, "input_cents_per_1m": 27, "output_cents_per_1m": 380, "function_calling": true,
//	              "providers": ["openrouter"], "upstream_model": "moonshotai/kimi-k2"}],
//	  "stt_models": [{"id": "whisper-large-v3", "name": "Whisper Large v3", "cents_per_hour": 11, "providers": ["groq"]}],
//	  "inference": {"max_audio_mb": 25, "audio_temp_dir": "/var/tmp", "max_audio_spool_mb": 4096},
//	  "personas": {"model": "moonshotai/kimi-k2.6", "workers": 8, "max_tokens": 1024, "context_tokens": 32000,
//	               "personalities": [{"id": "support", "name": "Support agent", "description": "Answers product questions",
//	                                  "system_prompt": "You are a patient support agent for ..."}]},
//	  "domains": {"base_domain": "pct.site", "hourly_cost_cents": 10, "port_min": 10000, "port_max": 10099,
//	              "token_key_env": "PERCEPTRON_TUNNEL_KEY"},
//	  "feeds": {"model": "moonshotai/kimi-k2.6", "hourly_cost_cents": 10, "poll_interval_seconds": 300, "retention_hours": 168,
//	            "rss": [{"url": "https://feeds.example/world.rss", "name": "Example World"}],
//	            "x": {"bearer_token_env": "X_BEARER_TOKEN", "accounts": ["Reuters"], "queries": ["bitcoin lang:en -is:retweet"]},
//	            "files": ["news.json"]}
//	}
//
// A chain whose chain_id is one of evm.DefaultChains takes the default
// token, decimals and confirmations unless it sets them; other chains must
// set usdt and decimals. API keys are read from the environment variable
// named by api_key_env, never from the file; so is the tunnel token key
// (token_key_env: at least 32 bytes, the same on every server process of
// one database; unset means a random key of the process).
type fileConfig struct {
	Version   string           `json:"version"`
	Releases  []releaseJSON    `json:"releases"`
	Billing   billingJSON      `json:"billing"`
	Providers []providerJSON   `json:"providers"`
	Models    []modelJSON      `json:"models"`
	STTModels []sttModelJSON   `json:"stt_models"`
	Inference inferenceOptions `json:"inference"`
	Domains   domainsJSON      `json:"domains"`
	Feeds     feedsJSON        `json:"feeds"`
	Personas  personasJSON     `json:"personas"`
}

// personasJSON configures personas: the model replies are written with
// (empty: the dev model with -dev, else the catalog's first), the reply
// workers and budgets, and the operator's own personality templates,
// listed after the shipped ones (their system prompts stay server-side).
type personasJSON struct {
	Model         string `json:"model"`
	Workers       int    `json:"workers"`
	MaxTokens     uint64 `json:"max_tokens"`
	ContextTokens int    `json:"context_tokens"`
	Personalities []struct {
		ID           string `json:"id"`
		Name         string `json:"name"`
		Description  string `json:"description"`
		SystemPrompt string `json:"system_prompt"`
	} `json:"personalities"`
}

type releaseJSON struct {
	Version      string   `json:"version"`
	ReleaseNotes string   `json:"release_notes"`
	Downloads    []string `json:"downloads"`
	PublishedAt  int64    `json:"published_at"`
}

type billingJSON struct {
	ReceivingAddress     string      `json:"receiving_address"`
	MaxPaymentAgeSeconds int64       `json:"max_payment_age_seconds"`
	CheckTokens          bool        `json:"check_tokens"`
	Chains               []chainJSON `json:"chains"`
}

type chainJSON struct {
	ChainID       uint64  `json:"chain_id"`
	Name          string  `json:"name"`
	RPCURL        string  `json:"rpc_url"`
	USDT          string  `json:"usdt"`
	Decimals      *uint8  `json:"decimals"`
	Confirmations *uint64 `json:"confirmations"`
}

type providerJSON struct {
	Name           string            `json:"name"`
	BaseURL        string            `json:"base_url"`
	APIKeyEnv      string            `json:"api_key_env"`
	TimeoutSeconds int64             `json:"timeout_seconds"`
	Headers        map[string]string `json:"headers"`
}

type modelJSON struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Created          int64    `json:"created"`
	ContextLength    uint32   `json:"context_length"`
	MaxOutputTokens  uint32   `json:"max_output_tokens"`
	FrontierRank     uint32   `json:"frontier_rank"`
	InputCentsPer1M  int64    `json:"input_cents_per_1m"`
	OutputCentsPer1M int64    `json:"output_cents_per_1m"`
	FunctionCalling  bool     `json:"function_calling"`
	Providers        []string `json:"providers"`
	UpstreamModel    string   `json:"upstream_model"`
}

// sttModelJSON is a speech-to-text model: priced per hour of audio,
// served by providers of the "providers" list (any OpenAI-compatible
// transcription API: OpenAI, Groq, a self-hosted whisper server). A
// provider that also serves chat models is one upstream: both share its
// circuit breaker.
type sttModelJSON struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	CentsPerHour  int64    `json:"cents_per_hour"`
	Providers     []string `json:"providers"`
	UpstreamModel string   `json:"upstream_model"`
}

type inferenceOptions struct {
	PreloadTokenizer bool `json:"preload_tokenizer"`
	// MaxAudioMB bounds a transcription upload (25 if zero).
	MaxAudioMB int64 `json:"max_audio_mb"`
	// AudioTempDir keeps uploads past their first MiB ("" means the
	// system's temporary directory); MaxAudioSpoolMB bounds what those
	// files hold at once (4096 if zero).
	AudioTempDir    string `json:"audio_temp_dir"`
	MaxAudioSpoolMB int64  `json:"max_audio_spool_mb"`
}

func loadConfig(path string) (fileConfig, error) {
	var c fileConfig
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// feedsJSON configures the news feed.
type feedsJSON struct {
	Model               string `json:"model"`
	HourlyCostCents     int64  `json:"hourly_cost_cents"`
	PollIntervalSeconds int64  `json:"poll_interval_seconds"`
	RetentionHours      int64  `json:"retention_hours"`
	RSS                 []struct {
		URL  string `json:"url"`
		Name string `json:"name"`
	} `json:"rss"`
	X *struct {
		BearerTokenEnv string   `json:"bearer_token_env"`
		BaseURL        string   `json:"base_url"`
		Accounts       []string `json:"accounts"`
		Queries        []string `json:"queries"`
	} `json:"x"`
	Files []string `json:"files"`
}

func (f feedsJSON) config() (perceptron.FeedsConfig, error) {
	fc := perceptron.FeedsConfig{
		Model: f.Model, HourlyCostCents: f.HourlyCostCents,
		PollInterval: time.Duration(f.PollIntervalSeconds) * time.Second,
		Retention:    time.Duration(f.RetentionHours) * time.Hour,
	}
	for _, r := range f.RSS {
		src, err := feeds.NewHTTPFeed(r.URL, feeds.HTTPFeedOptions{Name: r.Name})
		if err != nil {
			return fc, fmt.Errorf("config: feeds: %w", err)
		}
		fc.Sources = append(fc.Sources, src)
	}
	if f.X != nil {
		token := os.Getenv(f.X.BearerTokenEnv)
		if f.X.BearerTokenEnv == "" || token == "" {
			return fc, errors.New("config: feeds: x needs bearer_token_env naming a set environment variable")
		}
		src, err := feeds.NewXSource(feeds.XOptions{BaseURL: f.X.BaseURL, BearerToken: token, Accounts: f.X.Accounts, Queries: f.X.Queries})
		if err != nil {
			return fc, fmt.Errorf("config: feeds: %w", err)
		}
		fc.Sources = append(fc.Sources, src)
	}
	for _, path := range f.Files {
		fc.Sources = append(fc.Sources, &feeds.FileSource{Path: path})
	}
	return fc, nil
}

// domainsJSON configures reserved subdomains.
type domainsJSON struct {
	BaseDomain      string `json:"base_domain"`
	HourlyCostCents int64  `json:"hourly_cost_cents"`
	PortMin         uint16 `json:"port_min"`
	PortMax         uint16 `json:"port_max"`
	TokenKeyEnv     string `json:"token_key_env"`
}

func (c fileConfig) platformConfig() (perceptron.Config, error) {
	pc := perceptron.Config{Version: c.Version}
	fc, err := c.Feeds.config()
	if err != nil {
		return pc, err
	}
	pc.Feeds = fc
	pc.Personas = perceptron.PersonasConfig{Model: c.Personas.Model, Workers: c.Personas.Workers,
		MaxTokens: c.Personas.MaxTokens, ContextTokens: c.Personas.ContextTokens}
	for _, pj := range c.Personas.Personalities {
		if pj.ID == "" || pj.Name == "" || pj.SystemPrompt == "" {
			return pc, fmt.Errorf("config: personas: a personality needs id, name and system_prompt (%q)", pj.ID)
		}
		pc.Personas.Personalities = append(pc.Personas.Personalities, personas.Personality{
			ID: pj.ID, Name: pj.Name, Description: pj.Description, System: pj.SystemPrompt})
	}
	pc.Domains = perceptron.DomainsConfig{
		BaseDomain: c.Domains.BaseDomain, HourlyCostCents: c.Domains.HourlyCostCents,
		PortMin: c.Domains.PortMin, PortMax: c.Domains.PortMax,
	}
	if c.Domains.TokenKeyEnv != "" {
		key := os.Getenv(c.Domains.TokenKeyEnv)
		if len(key) < 32 {
			return pc, fmt.Errorf("config: domains: $%s must hold a key of at least 32 bytes", c.Domains.TokenKeyEnv)
		}
		pc.Domains.TokenKey = []byte(key)
	}
	for _, r := range c.Releases {
		pc.Releases = append(pc.Releases, release.Release{
			Version: r.Version, Notes: r.ReleaseNotes, Downloads: r.Downloads, PublishedAt: r.PublishedAt,
		})
	}
	pc.Billing.ReceivingAddress = c.Billing.ReceivingAddress
	pc.Billing.MaxPaymentAge = time.Duration(c.Billing.MaxPaymentAgeSeconds) * time.Second
	pc.Billing.CheckTokens = c.Billing.CheckTokens
	defaults := map[uint64]evm.Chain{}
	for _, d := range evm.DefaultChains() {
		defaults[d.ID] = d
	}
	for _, cj := range c.Billing.Chains {
		ch, known := defaults[cj.ChainID]
		ch.ID = cj.ChainID
		ch.RPCURL = cj.RPCURL
		if cj.Name != "" {
			ch.Name = cj.Name
		}
		if cj.USDT != "" {
			if !common.IsHexAddress(cj.USDT) {
				return pc, fmt.Errorf("config: chain %d: invalid usdt address %q", cj.ChainID, cj.USDT)
			}
			ch.Token = common.HexToAddress(cj.USDT)
		} else if !known {
			return pc, fmt.Errorf("config: chain %d is not a known default: set usdt and decimals", cj.ChainID)
		}
		if cj.Decimals != nil {
			ch.Decimals = *cj.Decimals
		} else if !known {
			return pc, fmt.Errorf("config: chain %d: set decimals", cj.ChainID)
		}
		if cj.Confirmations != nil {
			ch.Confirmations = *cj.Confirmations
		}
		pc.Billing.Chains = append(pc.Billing.Chains, ch)
	}
	sttNames := map[string]bool{} // providers that transcribe
	for _, m := range c.STTModels {
		for _, p := range m.Providers {
			sttNames[p] = true
		}
	}
	for _, pj := range c.Providers {
		cfg := inference.OpenAIConfig{
			Name:    pj.Name,
			BaseURL: pj.BaseURL,
			Timeout: time.Duration(pj.TimeoutSeconds) * time.Second,
		}
		if pj.APIKeyEnv != "" {
			cfg.APIKey = os.Getenv(pj.APIKeyEnv)
			if cfg.APIKey == "" {
				return pc, fmt.Errorf("config: provider %q: environment variable %s is empty", pj.Name, pj.APIKeyEnv)
			}
		}
		for k, v := range pj.Headers {
			if cfg.Header == nil {
				cfg.Header = map[string][]string{}
			}
			cfg.Header[k] = []string{v}
		}
		p, err := inference.NewOpenAIProvider(cfg)
		if err != nil {
			return pc, fmt.Errorf("config: provider %q: %w", pj.Name, err)
		}
		pc.Inference.Providers = append(pc.Inference.Providers, p)
		if sttNames[pj.Name] {
			sp, err := inference.NewOpenAISTTProvider(cfg)
			if err != nil {
				return pc, fmt.Errorf("config: provider %q: %w", pj.Name, err)
			}
			pc.Inference.STTProviders = append(pc.Inference.STTProviders, sp)
		}
	}
	for _, m := range c.STTModels {
		pc.Inference.STTModels = append(pc.Inference.STTModels, inference.STTModel{
			ID: m.ID, Name: m.Name, CentsPerHour: m.CentsPerHour, Providers: m.Providers, UpstreamModel: m.UpstreamModel,
		})
	}
	pc.Inference.MaxAudioBytes = c.Inference.MaxAudioMB << 20
	pc.Inference.AudioTempDir = c.Inference.AudioTempDir
	pc.Inference.MaxAudioSpool = c.Inference.MaxAudioSpoolMB << 20
	for _, m := range c.Models {
		pc.Inference.Models = append(pc.Inference.Models, inference.Model{
			ID: m.ID, Name: m.Name, Created: m.Created, ContextLength: m.ContextLength,
			MaxOutputTokens: m.MaxOutputTokens, FrontierRank: m.FrontierRank,
			InputCentsPer1M: m.InputCentsPer1M, OutputCentsPer1M: m.OutputCentsPer1M,
			FunctionCalling: m.FunctionCalling, Providers: m.Providers, UpstreamModel: m.UpstreamModel,
		})
	}
	pc.Inference.PreloadTokenizer = c.Inference.PreloadTokenizer
	return pc, nil
}

// redactDSN hides a database URL's password for logs.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dsn
}
