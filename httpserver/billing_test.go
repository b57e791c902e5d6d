package httpserver_test

import (
	"context"
	"crypto/ecdsa"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron"
	"github.com/perceptron-cloud/perceptron/dev"
	"github.com/perceptron-cloud/perceptron/devnet"
)

// chainUser is a wallet with a client talking to the dev chain over the
// platform's own /devnet/rpc, as a wallet library would.
type chainUser struct {
	wallet
	key    *ecdsa.PrivateKey
	client *ethclient.Client
}

func (e *env) chainUser(t *testing.T, usdt string) chainUser {
	t.Helper()
	w := newWallet(t)
	c, err := ethclient.Dial(e.url + "/devnet/rpc")
	require.NoError(t, err)
	t.Cleanup(c.Close)
	if usdt != "" {
		st, out := e.call("POST", "/devnet/faucet", "", map[string]string{"address": w.addr, "usdt": usdt})
		require.Equal(t, 200, st, "%v", out)
	}
	return chainUser{wallet: w, key: w.key, client: c}
}

// transfer sends a real signed ERC-20 transfer and returns its hash.
// gas = 0 estimates; a fixed gas lets a reverting transfer be mined.
func (u chainUser) transfer(t *testing.T, token, to common.Address, units *big.Int, gas uint64) string {
	t.Helper()
	ctx := context.Background()
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	data, err := parsed.Pack("transfer", to, units)
	require.NoError(t, err)
	from := crypto.PubkeyToAddress(u.key.PublicKey)
	nonce, err := u.client.PendingNonceAt(ctx, from)
	require.NoError(t, err)
	chainID, err := u.client.ChainID(ctx)
	require.NoError(t, err)
	tip, err := u.client.SuggestGasTipCap(ctx)
	require.NoError(t, err)
	head, err := u.client.HeaderByNumber(ctx, nil)
	require.NoError(t, err)
	if gas == 0 {
		gas = 100_000
	}
	tx := types.NewTx(&types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip,
		GasFeeCap: new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2))),
		Gas:       gas, To: &token, Data: data,
	})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(chainID), u.key)
	require.NoError(t, err)
	require.NoError(t, u.client.SendTransaction(ctx, signed))
	return signed.Hash().Hex()
}

func usdt(dollars int64) *big.Int { return big.NewInt(dollars * 1_000_000) }

func TestPurchaseOnDevChain(t *testing.T) {
	// A real clock: blocks carry real timestamps.
	e := newEnv(t, dev.Enable(perceptron.Config{Now: time.Now}))
	ctx := context.Background()
	_, info := e.call("GET", "/devnet/info", "", nil)
	require.Equal(t, float64(1337), info["chain_id"])
	require.Equal(t, e.url+"/devnet/rpc", info["rpc_url"])
	token := common.HexToAddress(info["usdt_address"].(string))
	receiving := common.HexToAddress(info["receiving_address"].(string))
	_, ra := e.call("GET", "/api/credits/receiving-address", "", nil)
	require.Equal(t, strings.ToLower(receiving.Hex()), strings.ToLower(ra["address"].(string)))

	alice := e.chainUser(t, "1000.00")
	bob := e.chainUser(t, "1000.00")
	am := e.login(alice.wallet)
	bm := e.login(bob.wallet)
	_, k := e.call("POST", "/api/keys/generate", am, map[string]string{"label": "agent"})
	ak := k["key"].(string)

	buy := func(token, hash, amount string, chain uint64) map[string]any {
		return map[string]any{"tx_hash": hash, "token": token, "amount": amount, "chain_id": chain}
	}
	const mismatch = "transaction verification failed (amount, token, or recipient mismatch)"

	// A good transfer of $25, claimed by someone else first: refused, and
	// the hash is not used up.
	good := alice.transfer(t, token, receiving, usdt(25), 0)
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", bm, buy("USDT", good, "25.00", 1337))
	// Wrong amount claimed.
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", ak, buy("USDT", good, "26.00", 1337))
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", ak, buy("USDT", good, "24", 1337))
	// Unknown chain, other token, malformed amounts, below minimum.
	st, out := e.call("POST", "/api/credits/purchase", ak, buy("USDT", good, "25.00", 999))
	require.Equal(t, 400, st)
	require.Contains(t, out["error"].(map[string]any)["message"], "999")
	st, _ = e.call("POST", "/api/credits/purchase", ak, buy("DAI", good, "25.00", 1337))
	require.Equal(t, 400, st)
	for _, bad := range []string{"", "abc", "-25", "+25", "25.001", "2.5e1", "25.", " 25", "0x19"} {
		e.expectError(400, "invalid amount", "POST", "/api/credits/purchase", ak, buy("USDT", good, bad, 1337))
	}
	e.expectError(400, "invalid amount", "POST", "/api/credits/purchase", ak,
		map[string]any{"tx_hash": good, "token": "USDT", "amount": 25, "chain_id": 1337})
	e.expectError(400, "minimum purchase is $5", "POST", "/api/credits/purchase", ak, buy("USDT", good, "4.99", 1337))

	// The real sender claims it, with an upper-case hash and the short amount form.
	st, out = e.call("POST", "/api/credits/purchase", ak, buy("USDT", strings.ToUpper("0x"+good[2:]), "25", 1337))
	require.Equal(t, 200, st, "%v", out)
	require.Equal(t, "ok", out["status"])
	require.Equal(t, float64(2500), out["amount_credited"])
	require.Equal(t, float64(2500), out["new_balance"])

	// Twice is a conflict, whoever asks.
	e.expectError(409, "transaction already processed", "POST", "/api/credits/purchase", ak, buy("USDT", good, "25.00", 1337))

	// Wrong recipient.
	other := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	h := alice.transfer(t, token, other, usdt(10), 0)
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", ak, buy("USDT", h, "10.00", 1337))

	// A fake token with the same Transfer event.
	fake := e.deployFakeToken(t, alice)
	h = alice.transfer(t, fake, receiving, usdt(10), 0)
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", ak, buy("USDT", h, "10.00", 1337))

	// A failed (reverted) transfer: more than alice holds.
	h = alice.transfer(t, token, receiving, usdt(1_000_000), 200_000)
	rcpt, err := alice.client.TransactionReceipt(ctx, common.HexToHash(h))
	require.NoError(t, err)
	require.Equal(t, types.ReceiptStatusFailed, rcpt.Status)
	e.expectError(400, mismatch, "POST", "/api/credits/purchase", ak, buy("USDT", h, "1000000.00", 1337))

	// Too old: the chain moves on 6 minutes, the transfer stays behind.
	old := alice.transfer(t, token, receiving, usdt(7), 0)
	require.NoError(t, dev.Devnet(e.p.DevChain).AdjustTime(6*time.Minute))
	e.expectError(400, "transaction expired: older than 300 seconds", "POST", "/api/credits/purchase", ak, buy("USDT", old, "7.00", 1337))

	// Bob buys $5.50 with a fresh transfer; his balance is his own.
	hb := bob.transfer(t, token, receiving, big.NewInt(5_500_000), 0)
	st, out = e.call("POST", "/api/credits/purchase", bm, buy("USDT", hb, "5.5", 1337))
	require.Equal(t, 200, st, "%v", out)
	require.Equal(t, float64(550), out["new_balance"])

	// Balance, history and points followed.
	_, bal := e.call("GET", "/api/credits/balance", ak, nil)
	require.Equal(t, map[string]any{"balance": float64(2500), "currency": "USD_CENTS"}, bal)
	_, hist := e.call("GET", "/api/credits/history", ak, nil)
	txs := hist["transactions"].([]any)
	require.Len(t, txs, 1)
	tx := txs[0].(map[string]any)
	require.Equal(t, "Purchase", tx["tx_type"])
	require.Equal(t, "Completed", tx["status"])
	require.Equal(t, float64(2500), tx["amount"])
	require.Equal(t, float64(2500), tx["balance_after"])
	require.Equal(t, strings.ToLower(good), tx["tx_hash"])
	require.Equal(t, strings.ToLower(alice.addr), tx["user_address"])
	require.Contains(t, tx["description"], "$25.00")

	_, pts := e.call("GET", "/api/points/balance", ak, nil)
	require.Equal(t, float64(250+10*25), pts["points"])
	_, ph := e.call("GET", "/api/points/history", ak, nil)
	triggers := map[string]float64{}
	for _, p := range ph["transactions"].([]any) {
		pm := p.(map[string]any)
		triggers[pm["trigger_type"].(string)] = pm["points_awarded"].(float64)
		if pm["trigger_type"] == "welcome_bonus" {
			require.Equal(t, float64(2500), pm["metadata"].(map[string]any)["purchase_amount_cents"])
		}
	}
	require.Equal(t, map[string]float64{"welcome_bonus": 250, "credit_purchase": 250}, triggers)

	// A completed purchase lifts the key limit from 2 to 50.
	for i := 0; i < 3; i++ {
		st, out := e.call("POST", "/api/keys/generate", am, map[string]string{"label": "more"})
		require.Equal(t, 200, st, "%v", out)
	}
}

// deployFakeToken deploys a second TestUSDT: same code and event, other address.
func (e *env) deployFakeToken(t *testing.T, u chainUser) common.Address {
	t.Helper()
	ctx := context.Background()
	code, err := devnet.TokenBytecode()
	require.NoError(t, err)
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	args, err := parsed.Pack("", "Fake USDT", "USDT", uint8(6))
	require.NoError(t, err)
	from := crypto.PubkeyToAddress(u.key.PublicKey)
	nonce, err := u.client.PendingNonceAt(ctx, from)
	require.NoError(t, err)
	chainID, err := u.client.ChainID(ctx)
	require.NoError(t, err)
	gp, err := u.client.SuggestGasPrice(ctx)
	require.NoError(t, err)
	tx := types.NewContractCreation(nonce, big.NewInt(0), 3_000_000, new(big.Int).Mul(gp, big.NewInt(2)), append(code, args...))
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(chainID), u.key)
	require.NoError(t, err)
	require.NoError(t, u.client.SendTransaction(ctx, signed))
	rcpt, err := u.client.TransactionReceipt(ctx, signed.Hash())
	require.NoError(t, err)
	require.Equal(t, types.ReceiptStatusSuccessful, rcpt.Status)
	// Mint to the deployer: the token's mint is open or owner-only, and
	// the deployer is its owner either way.
	data, err := parsed.Pack("mint", from, usdt(100))
	require.NoError(t, err)
	nonce++
	mint := types.NewTransaction(nonce, rcpt.ContractAddress, big.NewInt(0), 200_000, new(big.Int).Mul(gp, big.NewInt(2)), data)
	signed, err = types.SignTx(mint, types.LatestSignerForChainID(chainID), u.key)
	require.NoError(t, err)
	require.NoError(t, u.client.SendTransaction(ctx, signed))
	return rcpt.ContractAddress
}

func TestNoDevnetWithoutDev(t *testing.T) {
	e := newEnv(t, perceptron.Config{})
	e.expectError(404, "not found", "GET", "/devnet/info", "", nil)
	e.expectError(404, "not found", "POST", "/devnet/rpc", "", `{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}`)
	e.expectError(404, "not found", "POST", "/devnet/faucet", "", map[string]string{"address": "0x0000000000000000000000000000000000000001"})
	// Purchases are off until a receiving address and chains are configured.
	e.expectError(502, "purchases are not configured on this server", "GET", "/api/credits/receiving-address", "", nil)
}
