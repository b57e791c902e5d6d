package devnet

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/txpool"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/eth"
	"github.com/ethereum/go-ethereum/eth/catalyst"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/eth/filters"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/p2p"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
)

// simNode is the chain's go-ethereum stack. It is assembled as
// ethclient/simulated.NewBackend assembles its own (in-memory node without
// networking, chain ID 1337, a simulated beacon that seals blocks only on
// demand), with mainnet's fork rules (see chainConfig), because
// simulated.Backend keeps its node private and the RPC handler needs the
// node's in-process RPC client.
type simNode struct {
	stack  *node.Node
	eth    *eth.Ethereum
	beacon *catalyst.SimulatedBeacon
}

// chainConfig is go-ethereum's dev chain configuration (chain ID 1337, every
// fork from genesis) minus the forks not yet live on Ethereum mainnet
// (Amsterdam, Bogota). Their EIP-8037 state-gas metering makes an ERC-20
// transfer to a new holder cost about 147k gas instead of about 51k, which
// breaks the fixed gas limits wallets and scripts use on real networks; the
// devnet runs Osaka rules instead, like mainnet.
func chainConfig() *params.ChainConfig {
	cfg := *params.AllDevChainProtocolChanges
	cfg.AmsterdamTime = nil
	cfg.BogotaTime = nil
	return &cfg
}

// startNode starts a simulated chain whose genesis holds alloc.
func startNode(alloc types.GenesisAlloc) (*simNode, error) {
	nodeConf := node.DefaultConfig
	nodeConf.DataDir = ""
	nodeConf.P2P = p2p.Config{NoDiscovery: true}

	// The dev forks call system contracts that must exist from genesis; the
	// caller's alloc wins on conflict.
	genesisAlloc := core.SystemContractAllocs()
	maps.Copy(genesisAlloc, alloc)

	ethConf := ethconfig.Defaults
	ethConf.Genesis = &core.Genesis{
		Config:   chainConfig(),
		GasLimit: ethconfig.Defaults.Miner.GasCeil,
		Alloc:    genesisAlloc,
	}
	ethConf.SyncMode = ethconfig.FullSync
	ethConf.TxPool.NoLocals = true
	ethConf.LogNoHistory = true

	stack, err := node.New(&nodeConf)
	if err != nil {
		return nil, fmt.Errorf("devnet: node: %w", err)
	}
	backend, err := eth.New(stack, &ethConf)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("devnet: eth service: %w", err), stack.Close())
	}
	// eth_newFilter, eth_getFilterChanges, eth_getLogs and friends.
	filterSystem := filters.NewFilterSystem(backend.APIBackend, filters.Config{})
	stack.RegisterAPIs([]rpc.API{{Namespace: "eth", Service: filters.NewFilterAPI(filterSystem)}})
	if err := stack.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("devnet: starting node: %w", err), stack.Close())
	}
	beacon, err := catalyst.NewSimulatedBeacon(0, common.Address{}, backend)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("devnet: beacon: %w", err), stack.Close())
	}
	if err := beacon.Fork(backend.BlockChain().GetCanonicalHash(0)); err != nil {
		return nil, errors.Join(fmt.Errorf("devnet: beacon: %w", err), beacon.Stop(), stack.Close())
	}
	if id := ethConf.Genesis.Config.ChainID; id == nil || id.Uint64() != ChainID {
		return nil, errors.Join(fmt.Errorf("devnet: go-ethereum's dev chain ID is %v, not %d", id, ChainID), beacon.Stop(), stack.Close())
	}
	return &simNode{stack: stack, eth: backend, beacon: beacon}, nil
}

// adjustTime seals an empty block d after the head. The pool updates
// itself in the background after each block, so it is synced first, or
// transactions mined a moment ago would still count as pending; any that
// really are pending are sealed in a block of their own first.
func (n *simNode) adjustTime(d time.Duration) error {
	if err := n.eth.TxPool().Sync(); err != nil {
		return err
	}
	if err := n.beacon.AdjustTime(d); err == nil {
		return nil
	}
	n.beacon.Commit()
	if err := n.eth.TxPool().Sync(); err != nil {
		return err
	}
	return n.beacon.AdjustTime(d)
}

// waiting reports whether the transaction is in the pool and executable:
// pending, or queued at its sender's next nonce (not yet promoted, which
// the pool does in the background). A transaction behind a nonce gap is
// not waiting: no block would take it.
func (n *simNode) waiting(hash common.Hash) bool {
	pool := n.eth.TxPool()
	switch pool.Status(hash) {
	case txpool.TxStatusPending:
		return true
	case txpool.TxStatusQueued:
		tx := pool.Get(hash)
		if tx == nil {
			return false
		}
		from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
		return err == nil && tx.Nonce() <= pool.Nonce(from)
	}
	return false
}

// close stops the beacon and the node.
func (n *simNode) close() error {
	return errors.Join(n.beacon.Stop(), n.stack.Close())
}
