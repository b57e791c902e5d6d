// Package perceptron is an embeddable SDK for an agent-facing AI platform:
// wallet login and API keys, a prepaid credit ledger funded by on-chain USDT,
// OpenAI-compatible inference billed per token, reserved subdomains served
// through a WebSocket tunnel, a paid news feed, and personas that reply in
// the background, billed per token.
//
// The offline development mode is opted into: [Config.Dev] adds the dev
// model and a release for the running version, and a dev chain runs only
// if [Config.DevChain] starts one (package dev wires both), so a program
// that does not ask for it links no Ethereum node.
//
// A host program builds a [Platform] from a [Config] and either calls its
// services from Go or mounts the REST API from the httpserver package:
//
//	store, err := storage.Open(ctx, "sqlite:perceptron.db", storage.Options{})
//	if err != nil { ... }
//	defer store.Close()
//	p, err := perceptron.New(ctx, perceptron.Config{Store: store})
//	if err != nil { ... }
//	defer p.Close()
//	mux.Handle("/api/", httpserver.New(p, httpserver.Options{}))
//
// Every Config field has a documented default for its zero value, in the
// manner of tailscale's tsnet.Server.
package perceptron

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/billing"
	"github.com/perceptron-cloud/perceptron/billing/evm"
	"github.com/perceptron-cloud/perceptron/events"
	"github.com/perceptron-cloud/perceptron/feeds"
	"github.com/perceptron-cloud/perceptron/inference"
	"github.com/perceptron-cloud/perceptron/personas"
	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/tunnel"
)

// Version is the SDK's version, reported by GET /api/health unless
// [Config.Version] overrides it.
const Version = "0.1.0"

// storeAs returns the service store of type T that the backend value
// implements, or an error naming it: the backend is found to have each
// service's store by type assertion, as database/sql finds a driver's
// optional capabilities.
func storeAs[T any](store any) (T, error) {
	s, ok := store.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("perceptron: store %T does not implement %s", store, reflect.TypeFor[T]())
	}
	return s, nil
}

// Config configures a [Platform]. The zero value is a working platform on
// an in-memory store.
type Config struct {
	// Store is the storage backend: one value that implements the store
	// interface of each service (auth.Store, billing.Store, release.Store,
	// and those of the domains to come). New finds each by type assertion
	// and fails naming the one the value lacks, so a domain added later
	// asks nothing new of a store for the existing ones. storage.Open
	// opens one from a DSN, or use a backend package (storage/memory,
	// storage/sqlite, storage/postgres) directly; the caller closes it,
	// after the platform. Nil means a fresh in-memory store, which the
	// platform owns. This package imports no SQL driver: a program links
	// only the backend it opens.
	Store any
	// Version is reported by the health endpoint. Empty means [Version].
	Version string
	// Dev turns on the offline development mode: a seeded release for the
	// running version, the offline dev model (inference.DevModel), and the
	// dev chain that DevChain starts, if set. dev.Enable sets both.
	Dev bool
	// DevChain, in Dev mode, starts the in-process dev chain that
	// purchases are paid on (dev.NewChain is one); New closes it with the
	// platform. Nil means no dev chain: purchases then need
	// Billing.ReceivingAddress and Billing.Chains as outside Dev mode.
	DevChain func(ctx context.Context, cfg DevChainConfig) (DevChain, error)
	// Releases are stored at start (upserted by version).
	Releases []release.Release
	// Logger receives diagnostics. Nil discards them.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Billing configures purchases and points.
	Billing BillingConfig
	// Inference configures the model catalog and providers.
	Inference InferenceConfig
	// Domains configures reserved subdomains and their tunnels. They are
	// served when Store implements tunnel.Store (every backend of
	// package storage does); Platform.Domains is nil otherwise.
	Domains DomainsConfig
	// Personas configures personas. They are served when Store
	// implements personas.Store (every backend of package storage does);
	// Platform.Personas is nil otherwise.
	Personas PersonasConfig
	// Feeds configures the news feed. It is served when Store implements
	// feeds.Store (every backend of package storage does); Platform.Feeds
	// is nil otherwise.
	Feeds FeedsConfig
	// TickInterval is how often subscriptions are charged and expired
	// holds released. Zero means 30 seconds.
	TickInterval time.Duration
	// FlushInterval is how often key last-use times are written to the
	// store. Zero means 10 seconds.
	FlushInterval time.Duration
	// Events carries revocations and domain changes to every server
	// process (package events). Nil means the store's, if it has one
	// (EventBus() events.Bus: PostgreSQL's LISTEN/NOTIFY, across
	// processes), else one of this process (events.Local).
	Events events.Bus
}

// BillingConfig configures purchases.
type BillingConfig struct {
	// ReceivingAddress is where users send USDT, the same on every chain.
	// Empty disables purchases, except with a dev chain, where it defaults
	// to the chain's receiving address.
	ReceivingAddress string
	// Chains are the networks on which purchases are accepted. Nil means
	// none (plus the dev chain, if there is one). evm.DefaultChains lists the
	// known USDT deployments; operators add RPC URLs.
	Chains []evm.Chain
	// MaxPaymentAge is the oldest transaction accepted. Zero means 5 minutes.
	MaxPaymentAge time.Duration
	// CheckTokens makes New call each token's decimals() and symbol() and
	// refuse to start on a mismatch.
	CheckTokens bool
	// Verifier replaces the on-chain verifier built from the fields above.
	Verifier billing.PaymentVerifier
	// Points are the reward rules; nil means billing.DefaultPointsRules.
	Points *billing.PointsRules
	// OnLapse holds, per subscription kind, what is told when a
	// subscription of that kind lapses for lack of funds (see
	// billing.Options.OnLapse).
	OnLapse map[string]billing.LapseFunc
}

// DomainsConfig configures reserved subdomains (package tunnel).
type DomainsConfig struct {
	// BaseDomain is what subdomains are reserved under; empty means
	// tunnel.DefaultBaseDomain (pct.site).
	BaseDomain string
	// HourlyCostCents is a reservation's price per hour in cents; zero
	// means 10.
	HourlyCostCents int64
	// PortMin and PortMax bound the local ports users assign; zero means
	// 10000 and 10099.
	PortMin, PortMax uint16
	// TokenKey signs tunnel tokens (HS256, at least 32 bytes). Every
	// process that accepts tunnels for the same database needs the same
	// key. Nil means a random key of this process: tokens issued by
	// another process, or before a restart, are refused.
	TokenKey []byte
	// TokenTTL is how long a tunnel token is valid; zero means 5 minutes.
	TokenTTL time.Duration
	// Broker holds the tunnels; nil means a tunnel.Hub of this process,
	// which the platform closes with itself.
	Broker tunnel.TunnelBroker
	// Hub bounds that hub's tunnels (streams at once, the platform's
	// stream window, the idle bound, the dial timeout); zero fields mean
	// the tunnel package's defaults, a nil Logger the platform's. It is
	// not used when Broker is set.
	Hub tunnel.HubOptions
}

// PersonasConfig configures personas (package personas).
type PersonasConfig struct {
	// Model is the catalog model replies are written with; empty means
	// the dev model in Dev mode, else the catalog's first model.
	Model string
	// Personalities are added to the shipped templates.
	Personalities []personas.Personality
	// Broker carries sessions' events; nil means the store's, if it has
	// one (PersonaBroker() personas.Broker: PostgreSQL's LISTEN/NOTIFY,
	// across processes), else one of this process (personas.LocalBroker).
	Broker personas.Broker
	// Workers, MaxTokens and ContextTokens are personas.Options'.
	Workers       int
	MaxTokens     uint64
	ContextTokens int
}

// FeedsConfig configures the news feed (package feeds).
type FeedsConfig struct {
	// Sources are polled for items: feeds.NewHTTPFeed, feeds.NewXSource,
	// feeds.FileSource, or the program's own feeds.FeedSource.
	Sources []feeds.FeedSource
	// Model is the catalog model ID that writes headlines, summaries
	// and categories; empty means the dev model in Dev mode, else no
	// enrichment (items wait).
	Model string
	// HourlyCostCents is the subscription's price; zero means 10.
	HourlyCostCents int64
	// PollInterval, Retention, Concurrency, MaxPerHour and MaxTokens
	// are feeds.Options'; zero means its defaults.
	PollInterval time.Duration
	Retention    time.Duration
	Concurrency  int
	MaxPerHour   int
	MaxTokens    uint64
}

// InferenceConfig configures chat completions.
type InferenceConfig struct {
	// Models is the catalog. In Dev mode the offline dev model
	// (inference.DevModel) is added to it.
	Models []inference.Model
	// Providers serve the models, matched by name to Model.Providers.
	// inference.NewOpenAIProvider builds one for any OpenAI-compatible
	// upstream. In Dev mode the dev provider is added.
	Providers []inference.ModelProvider
	// Router, if set, replaces the default router over Providers and
	// STTProviders, which are then unused: give it every provider the
	// models name (inference.RouterOptions.STTProviders for
	// speech-to-text).
	Router *inference.Router
	// HoldTTL is how long a request's hold may live before the expiry sweep
	// releases it. Zero means inference.DefaultHoldTTL.
	HoldTTL time.Duration
	// PreloadTokenizer loads the tokenizer at start instead of on the
	// first request that needs an exact count.
	PreloadTokenizer bool
	// STTModels and STTProviders are the speech-to-text catalog and its
	// providers (inference.NewOpenAISTTProvider; a provider with the name
	// of a chat provider shares its circuit breaker); in Dev mode the dev
	// STT model is added. MaxAudioBytes bounds an upload (25 MB if zero);
	// AudioTempDir is where uploads past their first MiB wait ("" means
	// os.TempDir()), MaxAudioSpool the bytes those files hold at once
	// over every upload (inference.DefaultMaxAudioSpool if zero; past
	// it, 429).
	STTModels     []inference.STTModel
	STTProviders  []inference.STTProvider
	MaxAudioBytes int64
	AudioTempDir  string
	MaxAudioSpool int64
}

// Platform is a running Perceptron: its services and background work.
type Platform struct {
	// Auth is wallet login and API keys.
	Auth *auth.Service
	// Releases serves release records.
	Releases *release.Service
	// Billing is the credit ledger, purchases, points, subscriptions and
	// metrics.
	Billing *billing.Service
	// Inference is chat completions, billed per token, and speech-to-text,
	// billed per second of audio.
	Inference *inference.Service
	// Domains is reserved subdomains and their tunnels; nil when the store
	// does not keep domains.
	Domains *tunnel.Service
	// Feeds is the news feed; nil when the store does not keep feeds.
	Feeds *feeds.Service
	// Personas is personas and their replies; nil when the store does
	// not keep them.
	Personas *personas.Service
	// DevChain is the in-process development chain; nil unless Dev mode
	// started one (Config.DevChain).
	DevChain DevChain
	// Events carries revocations and domain changes to every process
	// (Config.Events). The platform closes the tunnels they end; the
	// HTTP server closes the persona streams of revoked keys.
	Events events.Bus

	version   string
	dev       bool
	startedAt time.Time
	now       func() time.Time
	log       *slog.Logger
	store     any // Config.Store
	ledger    billing.Store
	ownsStore bool
	hub       *tunnel.Hub // the default broker, closed with the platform
	unsub     func()      // the platform's subscription to Events

	closersMu sync.Mutex
	closers   []func() // chain clients dialed for the verifier

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New builds and starts a platform. Close it to stop background work and
// release the store.
func New(ctx context.Context, cfg Config) (*Platform, error) {
	p := &Platform{
		version: cfg.Version,
		dev:     cfg.Dev,
		now:     cfg.Now,
		log:     cfg.Logger,
		store:   cfg.Store,
	}
	if p.version == "" {
		p.version = Version
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.startedAt = p.now()
	if p.store == nil {
		p.store, p.ownsStore = memory.New(), true
	}
	// fail undoes what New has opened so far.
	fail := func(err error) (*Platform, error) {
		p.closeChains()
		p.closeStore()
		return nil, err
	}
	verifier, err := p.openChains(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	authStore, err := storeAs[auth.Store](p.store)
	if err != nil {
		return fail(err)
	}
	if p.ledger, err = storeAs[billing.Store](p.store); err != nil {
		return fail(err)
	}
	releaseStore, err := storeAs[release.Store](p.store)
	if err != nil {
		return fail(err)
	}
	onLapse := maps.Clone(cfg.Billing.OnLapse)
	if onLapse == nil {
		onLapse = map[string]billing.LapseFunc{}
	}
	userDomainLapse := onLapse[tunnel.Kind]
	onLapse[tunnel.Kind] = func(ctx context.Context, sub billing.Subscription) {
		if p.Domains != nil {
			p.Domains.OnLapse(ctx, sub)
		}
		if userDomainLapse != nil {
			userDomainLapse(ctx, sub)
		}
	}
	p.Billing = billing.NewService(p.ledger, billing.Options{
		Verifier: verifier, Points: cfg.Billing.Points, OnLapse: onLapse, Now: p.now, Logger: p.log,
	})
	p.Events = cfg.Events
	if b, ok := p.store.(interface{ EventBus() events.Bus }); ok && p.Events == nil {
		p.Events = b.EventBus() // PostgreSQL: every process hears every revocation
	}
	if p.Events == nil {
		p.Events = events.NewLocal()
	}
	p.Auth = auth.NewService(authStore, auth.Options{Purchases: p.Billing, Now: p.now, Logger: p.log, Events: p.Events})
	p.Releases = release.NewService(releaseStore)
	if err := p.openInference(cfg); err != nil {
		return fail(err)
	}
	if err := p.openDomains(cfg); err != nil {
		return fail(err)
	}
	if err := p.openFeeds(cfg); err != nil {
		return fail(err)
	}
	p.openPersonas(cfg)
	p.unsub = p.Events.Subscribe(p.onEvent)

	releases := slices.Clone(cfg.Releases)
	if cfg.Dev {
		releases = append(releases, release.Release{
			Version:     strings.TrimPrefix(p.version, "v"),
			Notes:       "## " + p.version + "\n\n- Development build (seeded by -dev).",
			Downloads:   []string{},
			PublishedAt: p.startedAt.Unix(),
		})
	}
	for _, r := range releases {
		if err := p.Releases.Put(ctx, r); err != nil {
			return fail(fmt.Errorf("perceptron: release %q: %w", r.Version, err))
		}
	}

	interval := cfg.FlushInterval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.every(bg, interval, "flush key usage", p.Auth.FlushUsage)
	p.every(bg, time.Minute, "sweep nonces", p.Auth.Sweep)
	tick := cfg.TickInterval
	if tick <= 0 {
		tick = 30 * time.Second
	}
	p.every(bg, tick, "release expired holds", func(ctx context.Context) error {
		_, err := p.ledger.ReleaseExpiredHolds(ctx, p.now())
		return err
	})
	p.every(bg, tick, "charge subscriptions", func(ctx context.Context) error {
		_, err := p.Billing.Tick(ctx)
		return err
	})
	if p.Domains != nil {
		p.every(bg, tick, "check tunnels", p.checkTunnels)
	}
	if p.Feeds != nil {
		p.wg.Go(func() { p.Feeds.Run(bg) })
	}
	if p.Personas != nil {
		p.wg.Go(func() { p.Personas.Run(bg) })
	}
	// Holds left by a crash are released as soon as they expire; do the
	// first sweep now rather than a tick later.
	if _, err := p.ledger.ReleaseExpiredHolds(ctx, p.now()); err != nil {
		p.log.WarnContext(ctx, "release expired holds failed", "err", err)
	}
	return p, nil
}

// openDomains builds the domains service when the store keeps domains
// (tunnel.Store); a store that does not leaves Domains nil.
func (p *Platform) openDomains(cfg Config) error {
	ds, ok := p.store.(tunnel.Store)
	if !ok {
		p.log.Info("domains disabled: the store does not implement tunnel.Store", "store", fmt.Sprintf("%T", p.store))
		return nil
	}
	dc := cfg.Domains
	var signer *tunnel.Signer
	if dc.TokenKey != nil || dc.TokenTTL != 0 {
		var err error
		if signer, err = tunnel.NewSigner(dc.TokenKey, dc.TokenTTL, p.now); err != nil {
			return fmt.Errorf("perceptron: domains: %w", err)
		}
	}
	broker := dc.Broker
	if broker == nil {
		ho := dc.Hub
		if ho.Logger == nil {
			ho.Logger = p.log
		}
		p.hub = tunnel.NewHub(ho)
		broker = p.hub
	}
	svc, err := tunnel.NewService(ds, p.Billing, tunnel.Options{
		BaseDomain: dc.BaseDomain, HourlyCost: billing.FromCents(dc.HourlyCostCents),
		PortMin: dc.PortMin, PortMax: dc.PortMax, Signer: signer, Broker: broker, Now: p.now, Logger: p.log,
		Events: p.Events,
	})
	if err != nil {
		return fmt.Errorf("perceptron: domains: %w", err)
	}
	p.Domains = svc
	return nil
}

// openPersonas builds the personas service when the store keeps them.
func (p *Platform) openPersonas(cfg Config) {
	ps, ok := p.store.(personas.Store)
	if !ok {
		p.log.Info("personas disabled: the store does not implement personas.Store", "store", fmt.Sprintf("%T", p.store))
		return
	}
	pc := cfg.Personas
	model := pc.Model
	if model == "" && cfg.Dev {
		model = inference.DevModelID
	}
	if model == "" {
		if ms := p.Inference.Catalog().Models(); len(ms) > 0 {
			model = ms[0].ID
		}
	}
	broker := pc.Broker
	if b, ok := p.store.(interface{ PersonaBroker() personas.Broker }); ok && broker == nil {
		broker = b.PersonaBroker() // PostgreSQL: every process's clients get every event
	}
	p.Personas = personas.NewService(ps, personas.Options{
		Inference: p.Inference, Model: model, Personalities: pc.Personalities, Broker: broker,
		Workers: pc.Workers, MaxTokens: pc.MaxTokens, ContextTokens: pc.ContextTokens, Now: p.now, Logger: p.log,
	})
}

// openFeeds builds the news feed when the store keeps feeds.
func (p *Platform) openFeeds(cfg Config) error {
	fs, ok := p.store.(feeds.Store)
	if !ok {
		p.log.Info("news feed disabled: the store does not implement feeds.Store", "store", fmt.Sprintf("%T", p.store))
		return nil
	}
	fc := cfg.Feeds
	opts := feeds.Options{
		Sources: fc.Sources, PollInterval: fc.PollInterval, Retention: fc.Retention, Concurrency: fc.Concurrency,
		MaxPerHour: fc.MaxPerHour, MaxTokens: fc.MaxTokens, HourlyCost: billing.FromCents(fc.HourlyCostCents),
		Now: p.now, Logger: p.log,
	}
	model := fc.Model
	if model == "" && cfg.Dev {
		model = inference.DevModelID
	}
	if model != "" {
		m, err := p.Inference.Model(model)
		if err != nil {
			return fmt.Errorf("perceptron: feeds: model %q: %w", model, err)
		}
		opts.Model, opts.ModelID = m, model
	}
	p.Feeds = feeds.NewService(fs, p.Billing, opts)
	return nil
}

// openInference builds the inference service over the billing ledger.
func (p *Platform) openInference(cfg Config) error {
	ic := cfg.Inference
	models := append([]inference.Model(nil), ic.Models...)
	providers := append([]inference.ModelProvider(nil), ic.Providers...)
	sttModels := slices.Clone(ic.STTModels)
	sttProviders := slices.Clone(ic.STTProviders)
	if cfg.Dev {
		models = append(models, inference.DevModel())
		providers = append(providers, inference.NewDevProvider())
		sttModels = append(sttModels, inference.DevSTTModel())
		sttProviders = append(sttProviders, inference.DevSTTProvider{})
	}
	catalog, err := inference.NewCatalog(models...)
	if err != nil {
		return err
	}
	tk := inference.NewTokenizer()
	if ic.PreloadTokenizer {
		if err := tk.Load(); err != nil {
			return fmt.Errorf("perceptron: tokenizer: %w", err)
		}
	}
	if ic.Router != nil {
		sttProviders = nil // the router has them
	}
	billingSvc := p.Billing
	svc, err := inference.NewService(inference.Options{
		Catalog:   catalog,
		Router:    ic.Router,
		Providers: providers,
		Ledger:    p.ledger,
		Tokens:    tk,
		Now:       p.now,
		Logger:    p.log,
		HoldTTL:   ic.HoldTTL,
		STTModels: sttModels, STTProviders: sttProviders, MaxAudioBytes: ic.MaxAudioBytes, AudioTempDir: ic.AudioTempDir, MaxAudioSpool: ic.MaxAudioSpool,
		Points: func(ctx context.Context, c inference.Charge) error {
			billingSvc.AwardChatUsage(ctx, c.Account, c.Entry.ID, c.Model, c.Usage.PromptTokens+c.Usage.CompletionTokens)
			return nil
		},
	})
	if err != nil {
		return err
	}
	p.Inference = svc
	return nil
}

// openChains builds the payment verifier (and, in Dev mode, the dev
// chain, if Config.DevChain starts one).
func (p *Platform) openChains(ctx context.Context, cfg Config) (billing.PaymentVerifier, error) {
	bc := cfg.Billing
	if bc.Verifier != nil {
		return bc.Verifier, nil
	}
	chains := append([]evm.Chain(nil), bc.Chains...)
	receiving := bc.ReceivingAddress
	if cfg.Dev && cfg.DevChain != nil {
		var rcv common.Address
		if receiving != "" {
			if !common.IsHexAddress(receiving) {
				return nil, fmt.Errorf("perceptron: invalid receiving address %q", receiving)
			}
			rcv = common.HexToAddress(receiving)
		}
		dev, err := cfg.DevChain(ctx, DevChainConfig{ReceivingAddress: rcv, Logger: p.log})
		if err != nil {
			return nil, fmt.Errorf("perceptron: dev chain: %w", err)
		}
		p.DevChain = dev
		receiving = dev.ReceivingAddress().Hex()
		chains = append(chains, dev.EVMChain())
	}
	if receiving == "" {
		if len(chains) > 0 {
			return nil, errors.New("perceptron: Billing.Chains needs Billing.ReceivingAddress")
		}
		return nil, nil
	}
	if !common.IsHexAddress(receiving) {
		return nil, fmt.Errorf("perceptron: invalid receiving address %q", receiving)
	}
	dev := p.DevChain
	var devID uint64
	if dev != nil {
		devID = dev.EVMChain().ID
	}
	v, err := evm.New(evm.Config{
		Chains:           chains,
		ReceivingAddress: common.HexToAddress(receiving),
		MaxAge:           bc.MaxPaymentAge,
		Now:              p.now,
		Logger:           p.log,
		Dial: func(ctx context.Context, c evm.Chain) (evm.Client, error) {
			if dev != nil && c.ID == devID {
				return dev.Dial(ctx, c)
			}
			if c.RPCURL == "" {
				return nil, fmt.Errorf("chain %d has no RPC URL configured", c.ID)
			}
			cl, err := ethclient.DialContext(ctx, c.RPCURL)
			if err != nil {
				return nil, err
			}
			p.closersMu.Lock()
			p.closers = append(p.closers, cl.Close)
			p.closersMu.Unlock()
			return cl, nil
		},
	})
	if err != nil {
		return nil, err
	}
	if bc.CheckTokens {
		if err := v.CheckTokens(ctx); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// onEvent closes this process's tunnels that an event ends: those of a
// domain released, lapsed or reassigned anywhere, and those connected
// with tokens of a revoked key.
func (p *Platform) onEvent(ctx context.Context, e events.Event) {
	if p.Domains == nil {
		return
	}
	switch e.Type {
	case events.KeyRevoked, events.MasterKeyReplaced:
		p.Domains.DisconnectWhere(ctx, func(d tunnel.Domain, credential string) bool {
			return auth.Revokes(e, d.Account, credential)
		})
	case events.Resync:
		if err := p.checkTunnels(ctx); err != nil {
			p.log.WarnContext(ctx, "check tunnels failed", "err", err)
		}
	default:
		p.Domains.HandleEvent(ctx, e)
	}
}

// checkTunnels closes this process's tunnels whose domain changed or
// whose key was revoked elsewhere: the backstop, every tick and after a
// lost connection of the events' listener, of events this process
// missed.
func (p *Platform) checkTunnels(ctx context.Context) error {
	return errors.Join(p.Domains.CheckTunnels(ctx), p.Domains.CheckTunnelKeys(ctx, p.Auth.CredentialActive))
}

// every runs fn every d until ctx ends.
func (p *Platform) every(ctx context.Context, d time.Duration, what string, fn func(context.Context) error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					p.log.WarnContext(ctx, what+" failed", "err", err)
				}
			}
		}
	}()
}

// Version returns the version the platform reports.
func (p *Platform) Version() string { return p.version }

// Dev reports whether the platform runs in development mode.
func (p *Platform) Dev() bool { return p.dev }

// Uptime returns how long the platform has run.
func (p *Platform) Uptime() time.Duration { return p.now().Sub(p.startedAt) }

// Logger returns the platform's logger.
func (p *Platform) Logger() *slog.Logger { return p.log }

// Store returns the storage backend (Config.Store, or the platform's
// in-memory one).
func (p *Platform) Store() any { return p.store }

// Close stops background work, writes pending key usage, and closes the
// store if the platform opened it.
func (p *Platform) Close() error {
	var err error
	p.once.Do(func() {
		if p.unsub != nil {
			p.unsub()
		}
		p.cancel()
		p.wg.Wait()
		if p.hub != nil {
			_ = p.hub.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = p.Auth.FlushUsage(ctx)
		err = errors.Join(err, p.closeStore())
		err = errors.Join(err, p.closeChains())
	})
	return err
}

// closeChains closes the chain clients and the dev chain, if any.
func (p *Platform) closeChains() error {
	p.closersMu.Lock()
	for _, c := range p.closers {
		c()
	}
	p.closers = nil
	p.closersMu.Unlock()
	if p.DevChain != nil {
		return p.DevChain.Close()
	}
	return nil
}

func (p *Platform) closeStore() error {
	if c, ok := p.store.(interface{ Close() error }); ok && p.ownsStore {
		return c.Close()
	}
	return nil
}

// Now returns the platform clock's current time.
func (p *Platform) Now() time.Time { return p.now() }
