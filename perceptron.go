// Package perceptron is an embeddable SDK for an agent-facing AI platform:
// wallet login and API keys, a prepaid credit ledger funded by on-chain USDT,
// OpenAI-compatible inference billed per token, and (in later releases)
// tunnels, news feeds and personas.
//
// A host program builds a [Platform] from a [Config] and either calls its
// services from Go or mounts the REST API from the httpserver package:
//
//	p, err := perceptron.New(ctx, perceptron.Config{DB: "sqlite:perceptron.db"})
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
	"strings"
	"sync"
	"time"

	"github.com/perceptron-cloud/perceptron/auth"
	"github.com/perceptron-cloud/perceptron/release"
	"github.com/perceptron-cloud/perceptron/storage/memory"
	"github.com/perceptron-cloud/perceptron/storage/postgres"
	"github.com/perceptron-cloud/perceptron/storage/sqlite"
)

// Version is the SDK's version, reported by GET /api/health unless
// [Config.Version] overrides it.
const Version = "0.1.0"

// Store is a storage backend: one value implementing every domain store
// interface. The storage/memory, storage/sqlite and storage/postgres
// packages provide them.
type Store interface {
	auth.Store
	release.Store
	Close() error
}

// Config configures a [Platform]. The zero value is a working platform on
// an in-memory store.
type Config struct {
	// Store is the storage backend. If nil, DB is opened.
	Store Store
	// DB selects a backend when Store is nil: "memory:" (the default when
	// empty), "sqlite:PATH", or a "postgres://" URL. The platform closes a
	// store it opened.
	DB string
	// Version is reported by the health endpoint. Empty means [Version].
	Version string
	// Dev turns on the offline development mode: a seeded release for the
	// running version, and (in later releases of this SDK) the in-process
	// dev chain and dev model.
	Dev bool
	// Releases are stored at start (upserted by version).
	Releases []release.Release
	// Logger receives diagnostics. Nil discards them.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// FlushInterval is how often key last-use times are written to the
	// store. Zero means 10 seconds.
	FlushInterval time.Duration
}

// Platform is a running Perceptron: its services and background work.
type Platform struct {
	// Auth is wallet login and API keys.
	Auth *auth.Service
	// Releases serves release records.
	Releases *release.Service

	version   string
	dev       bool
	startedAt time.Time
	now       func() time.Time
	log       *slog.Logger
	store     Store
	ownsStore bool

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
		s, err := OpenStore(ctx, cfg.DB)
		if err != nil {
			return nil, err
		}
		p.store, p.ownsStore = s, true
	}
	p.Auth = auth.NewService(p.store, auth.Options{Now: p.now, Logger: p.log})
	p.Releases = release.NewService(p.store)

	releases := cfg.Releases
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
			p.closeStore()
			return nil, fmt.Errorf("perceptron: release %q: %w", r.Version, err)
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
	return p, nil
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

// Store returns the storage backend.
func (p *Platform) Store() Store { return p.store }

// Close stops background work, writes pending key usage, and closes the
// store if the platform opened it.
func (p *Platform) Close() error {
	var err error
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = p.Auth.FlushUsage(ctx)
		err = errors.Join(err, p.closeStore())
	})
	return err
}

func (p *Platform) closeStore() error {
	if p.ownsStore {
		return p.store.Close()
	}
	return nil
}

// OpenStore opens a backend from a DSN: "memory:" (or ""), "sqlite:PATH",
// or a "postgres://" / "postgresql://" URL.
func OpenStore(ctx context.Context, dsn string) (Store, error) {
	switch {
	case dsn == "" || dsn == "memory:":
		return memory.New(), nil
	case strings.HasPrefix(dsn, "sqlite:"):
		return sqlite.Open(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return postgres.Open(ctx, dsn, postgres.Options{})
	}
	return nil, fmt.Errorf("perceptron: unknown database %q (want memory:, sqlite:PATH or postgres://...)", dsn)
}
