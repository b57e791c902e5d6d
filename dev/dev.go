// Package dev is Perceptron's offline development mode: the dev model, a
// release for the running version, sample news items, and an in-process
// Ethereum chain
// (package devnet, go-ethereum's simulated chain) with a test USDT, a
// faucet and a JSON-RPC endpoint, on which purchases are paid without any
// network.
//
// The root package does not import it: the dev chain is a whole Ethereum
// node, which a program embedding the SDK should not link unless it asks
// for it. The reference server does, for its -dev flag:
//
//	cfg = dev.Enable(cfg)
//	p, err := perceptron.New(ctx, cfg)
package dev

import (
	"context"
	_ "embed"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/devnet"
	"github.com/perceptron-cloud/perceptron/feeds"
)

// Enable returns cfg in Dev mode with the dev chain (NewChain) and the
// news feed's sample items (a file source over sampleNews, enriched by the
// dev model).
func Enable(cfg perceptron.Config) perceptron.Config {
	cfg.Dev = true
	cfg.DevChain = NewChain
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	cfg.Feeds.Sources = append(cfg.Feeds.Sources, &feeds.FileSource{Path: "dev/news.json", Data: sampleNews, Now: now})
	return cfg
}

// sampleNews is the news feed's sample data in Dev mode: 28 items, four
// per category, published from a minute and a half to two and a quarter
// hours before the server starts (pairs share a timestamp).
//
//go:embed news.json
var sampleNews []byte

// NewChain starts a devnet chain for the platform; it is a
// [perceptron.Config.DevChain].
func NewChain(ctx context.Context, cfg perceptron.DevChainConfig) (perceptron.DevChain, error) {
	c, err := devnet.New(ctx, devnet.Config{ReceivingAddress: cfg.ReceivingAddress, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return chain{c}, nil
}

// Devnet returns the devnet chain behind a DevChain that NewChain started
// (tests move its clock with AdjustTime), or nil.
func Devnet(c perceptron.DevChain) *devnet.Chain {
	if ch, ok := c.(chain); ok {
		return ch.Chain
	}
	return nil
}

// chain adapts a devnet chain to perceptron.DevChain.
type chain struct{ *devnet.Chain }

var _ perceptron.DevChain = chain{}

// Info describes the chain.
func (c chain) Info(rpcURL string) perceptron.DevChainInfo {
	return perceptron.DevChainInfo(c.Chain.Info(rpcURL))
}

// Faucet sends test USDT and gas.
func (c chain) Faucet(ctx context.Context, to common.Address, usdt string) (perceptron.DevFaucetResult, error) {
	r, err := c.Chain.Faucet(ctx, to, usdt)
	return perceptron.DevFaucetResult(r), err
}
