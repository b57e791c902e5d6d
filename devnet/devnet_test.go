package devnet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	bind "github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/devnet"
	"github.com/perceptron-cloud/perceptron/fault"
)

// newChain starts a devnet closed at the end of the test.
func newChain(t *testing.T) *devnet.Chain {
	t.Helper()
	c, err := devnet.New(t.Context(), devnet.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// serve serves the chain's RPC over a loopback HTTP server.
func serve(t *testing.T, c *devnet.Chain) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(c.RPCHandler())
	t.Cleanup(srv.Close)
	return srv
}

// tokenBalance reads balanceOf(who) through any contract caller.
func tokenBalance(t *testing.T, caller ethereum.ContractCaller, token, who common.Address) *big.Int {
	t.Helper()
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	data, err := parsed.Pack("balanceOf", who)
	require.NoError(t, err)
	out, err := caller.CallContract(t.Context(), ethereum.CallMsg{To: &token, Data: data}, nil)
	require.NoError(t, err)
	return new(big.Int).SetBytes(out)
}

// postRPC posts a raw JSON-RPC body and returns the status and body.
func postRPC(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// signedTransfer builds a signed ERC-20 transfer of value from key to `to`,
// using ec for the nonce and fees, without sending it.
func signedTransfer(t *testing.T, ec *ethclient.Client, key *ecdsa.PrivateKey, token, to common.Address, value *big.Int) *types.Transaction {
	t.Helper()
	ctx := t.Context()
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	data, err := parsed.Pack("transfer", to, value)
	require.NoError(t, err)
	from := crypto.PubkeyToAddress(key.PublicKey)
	nonce, err := ec.PendingNonceAt(ctx, from)
	require.NoError(t, err)
	tip, err := ec.SuggestGasTipCap(ctx)
	require.NoError(t, err)
	head, err := ec.HeaderByNumber(ctx, nil)
	require.NoError(t, err)
	gas, err := ec.EstimateGas(ctx, ethereum.CallMsg{From: from, To: &token, Data: data})
	require.NoError(t, err)
	tx := types.NewTx(&types.DynamicFeeTx{
		ChainID:   big.NewInt(devnet.ChainID),
		Nonce:     nonce,
		GasTipCap: tip,
		GasFeeCap: new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2))),
		Gas:       gas,
		To:        &token,
		Data:      data,
	})
	signed, err := types.SignTx(tx, types.LatestSignerForChainID(big.NewInt(devnet.ChainID)), key)
	require.NoError(t, err)
	return signed
}

func TestFaucetThenSignedTransferOverHTTP(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)
	ctx := t.Context()

	key, err := crypto.GenerateKey()
	require.NoError(t, err)
	user := crypto.PubkeyToAddress(key.PublicKey)

	res, err := c.Faucet(ctx, user, "100.00")
	require.NoError(t, err)
	assert.Equal(t, strings.ToLower(user.Hex()), res.Address)
	assert.Equal(t, "100.000000", res.USDT)
	assert.NotEmpty(t, res.MintTxHash)
	assert.NotEmpty(t, res.GasTxHash, "a new account gets ETH for gas")

	ec, err := ethclient.Dial(srv.URL)
	require.NoError(t, err)
	t.Cleanup(ec.Close)

	id, err := ec.ChainID(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(devnet.ChainID), id.Int64())
	assert.Equal(t, big.NewInt(100_000_000), tokenBalance(t, ec, c.USDT(), user))
	eth, err := ec.BalanceAt(ctx, user, nil)
	require.NoError(t, err)
	assert.Equal(t, big.NewInt(1e18), eth)

	// A real signed transaction, sent raw over HTTP.
	tx := signedTransfer(t, ec, key, c.USDT(), c.ReceivingAddress(), big.NewInt(25_000_000))
	require.NoError(t, ec.SendTransaction(ctx, tx))

	// The receipt is there at once: the handler sealed a block.
	receipt, err := ec.TransactionReceipt(ctx, tx.Hash())
	require.NoError(t, err)
	assert.Equal(t, types.ReceiptStatusSuccessful, receipt.Status)
	require.Len(t, receipt.Logs, 1)
	assert.Equal(t, c.USDT(), receipt.Logs[0].Address)
	assert.Equal(t, crypto.Keccak256Hash([]byte("Transfer(address,address,uint256)")), receipt.Logs[0].Topics[0])
	assert.Equal(t, big.NewInt(25_000_000), tokenBalance(t, ec, c.USDT(), c.ReceivingAddress()))
	assert.Equal(t, big.NewInt(75_000_000), tokenBalance(t, ec, c.USDT(), user))

	// A second drip tops up USDT but sends no more ETH.
	res, err = c.Faucet(ctx, user, "0.5")
	require.NoError(t, err)
	assert.Empty(t, res.GasTxHash)
	assert.Equal(t, big.NewInt(75_500_000), tokenBalance(t, c.Client(), c.USDT(), user))

	// bind over the same HTTP endpoint (estimateGas, fees, nonce, send).
	token := bind.NewBoundContract(c.USDT(), mustABI(t), ec, ec, ec)
	opts := bind.NewKeyedTransactor(key, big.NewInt(devnet.ChainID))
	opts.Context = ctx
	tx2, err := token.Transact(opts, "transfer", c.ReceivingAddress(), big.NewInt(500_000))
	require.NoError(t, err)
	receipt, err = ec.TransactionReceipt(ctx, tx2.Hash())
	require.NoError(t, err)
	assert.Equal(t, types.ReceiptStatusSuccessful, receipt.Status)

	// The clock can be moved right after a transaction (the pool catches
	// up with the sealed block first).
	require.NoError(t, c.AdjustTime(time.Minute))
	head, err := ec.HeaderByNumber(ctx, nil)
	require.NoError(t, err)
	block, err := ec.HeaderByNumber(ctx, receipt.BlockNumber)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, head.Time-block.Time, uint64(60))
}

func mustABI(t *testing.T) abi.ABI {
	t.Helper()
	parsed, err := devnet.ParseTokenABI()
	require.NoError(t, err)
	return parsed
}

func TestTokenMetadata(t *testing.T) {
	c := newChain(t)
	parsed := mustABI(t)
	for method, want := range map[string]any{"name": devnet.TokenName, "symbol": devnet.TokenSymbol, "decimals": uint8(devnet.TokenDecimals), "owner": common.HexToAddress(devnet.DeployerAddress)} {
		data, err := parsed.Pack(method)
		require.NoError(t, err)
		usdt := c.USDT()
		out, err := c.Client().CallContract(t.Context(), ethereum.CallMsg{To: &usdt, Data: data}, nil)
		require.NoError(t, err)
		got, err := parsed.Unpack(method, out)
		require.NoError(t, err)
		assert.Equal(t, want, got[0], method)
	}
}

// rpcAnswer is a decoded JSON-RPC response.
type rpcAnswer struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    any    `json:"data"`
	} `json:"error"`
}

func TestBatchRequest(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)

	body := fmt.Sprintf(`[
		{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]},
		{"jsonrpc":"2.0","id":"abc","method":"eth_blockNumber"},
		{"jsonrpc":"2.0","id":9,"method":"eth_getBalance","params":["%s","latest"]},
		{"jsonrpc":"2.0","method":"eth_chainId","params":[]},
		{"jsonrpc":"2.0","id":10,"method":"admin_peers","params":[]},
		{"jsonrpc":"2.0","id":null,"method":"net_version"},
		{"jsonrpc":"2.0","id":11,"method":"eth_getTransactionReceipt","params":["0x%064x"]},
		42
	]`, devnet.DeployerAddress, 1)
	status, raw := postRPC(t, srv.URL, body)
	require.Equal(t, http.StatusOK, status, string(raw))
	var answers []rpcAnswer
	require.NoError(t, json.Unmarshal(raw, &answers), string(raw))
	require.Len(t, answers, 7, "the notification gets no answer")

	ids := make([]string, len(answers))
	for i, a := range answers {
		ids[i] = string(a.ID)
		assert.Equal(t, "2.0", a.Version)
	}
	assert.Equal(t, []string{"7", `"abc"`, "9", "10", "null", "11", "null"}, ids)

	assert.JSONEq(t, `"0x539"`, string(answers[0].Result))
	assert.JSONEq(t, `"0x1"`, string(answers[1].Result), "one block: the TestUSDT deployment")
	var bal hexutil.Big
	require.NoError(t, json.Unmarshal(answers[2].Result, &bal))
	assert.Positive(t, bal.ToInt().Sign())
	require.NotNil(t, answers[3].Error)
	assert.Equal(t, -32601, answers[3].Error.Code)
	assert.JSONEq(t, `"1337"`, string(answers[4].Result))
	assert.Nil(t, answers[5].Error)
	assert.JSONEq(t, `null`, string(answers[5].Result), "unknown receipt is a null result")
	require.NotNil(t, answers[6].Error)
	assert.Equal(t, -32600, answers[6].Error.Code)
}

func TestRPCErrorObjectsPreserved(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)

	// transfer(receiving, 1) from an empty account reverts: code 3 with the
	// ABI-encoded Error(string) as data.
	parsed := mustABI(t)
	data, err := parsed.Pack("transfer", c.ReceivingAddress(), big.NewInt(1))
	require.NoError(t, err)
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":"call-1","method":"eth_call","params":[{"from":"0x000000000000000000000000000000000000dEaD","to":"%s","data":"%s"},"latest"]}`,
		c.USDT().Hex(), hexutil.Encode(data))
	status, raw := postRPC(t, srv.URL, body)
	require.Equal(t, http.StatusOK, status)
	var a rpcAnswer
	require.NoError(t, json.Unmarshal(raw, &a), string(raw))
	assert.JSONEq(t, `"call-1"`, string(a.ID))
	require.NotNil(t, a.Error, string(raw))
	assert.Equal(t, 3, a.Error.Code)
	assert.Contains(t, a.Error.Message, "ERC20: transfer amount exceeds balance")
	revert, ok := a.Error.Data.(string)
	require.True(t, ok, "data is the revert data as hex: %v", a.Error.Data)
	assert.True(t, strings.HasPrefix(revert, "0x08c379a0"), revert)

	// Errors raised by the node for bad params keep their code.
	status, raw = postRPC(t, srv.URL, `{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["nope","latest"]}`)
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, json.Unmarshal(raw, &a))
	require.NotNil(t, a.Error)
	assert.Equal(t, -32602, a.Error.Code)

	// Malformed JSON, a bad version, non-array params, a subscription.
	for body, code := range map[string]int{
		`{"jsonrpc":"2.0","id":1,`:  -32700,
		`[{"jsonrpc":"2.0","id":1,`: -32700,
		`[]`:                        -32600,
		`{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}`:                         -32600,
		`{"jsonrpc":"2.0","id":{},"method":"eth_chainId"}`:                        -32600,
		`{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":{"a":1}}`:        -32602,
		`{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}`: -32601,
		`{"jsonrpc":"2.0","id":1,"method":"debug_setHead","params":["0x0"]}`:      -32601,
	} {
		status, raw := postRPC(t, srv.URL, body)
		require.Equal(t, http.StatusOK, status, body)
		var a rpcAnswer
		require.NoError(t, json.Unmarshal(raw, &a), "%s -> %s", body, raw)
		require.NotNil(t, a.Error, "%s -> %s", body, raw)
		assert.Equal(t, code, a.Error.Code, "%s -> %s", body, raw)
	}

	// A lone notification gets an empty answer.
	status, raw = postRPC(t, srv.URL, `{"jsonrpc":"2.0","method":"eth_chainId"}`)
	assert.Equal(t, http.StatusOK, status)
	assert.Empty(t, raw)
}

func TestSendRawTransactionSync(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)
	key, err := crypto.GenerateKey()
	require.NoError(t, err)
	user := crypto.PubkeyToAddress(key.PublicKey)
	_, err = c.Faucet(t.Context(), user, "10")
	require.NoError(t, err)
	ec, err := ethclient.Dial(srv.URL)
	require.NoError(t, err)
	t.Cleanup(ec.Close)

	tx := signedTransfer(t, ec, key, c.USDT(), c.ReceivingAddress(), big.NewInt(1_000_000))
	rawTx, err := tx.MarshalBinary()
	require.NoError(t, err)
	status, raw := postRPC(t, srv.URL, fmt.Sprintf(`{"jsonrpc":"2.0","id":5,"method":"eth_sendRawTransactionSync","params":["%s"]}`, hexutil.Encode(rawTx)))
	require.Equal(t, http.StatusOK, status)
	var a rpcAnswer
	require.NoError(t, json.Unmarshal(raw, &a), string(raw))
	require.Nil(t, a.Error, string(raw))
	var receipt types.Receipt
	require.NoError(t, json.Unmarshal(a.Result, &receipt), string(a.Result))
	assert.Equal(t, tx.Hash(), receipt.TxHash)
	assert.Equal(t, types.ReceiptStatusSuccessful, receipt.Status)

	// Sending the same transaction again is the node's error, passed on.
	status, raw = postRPC(t, srv.URL, fmt.Sprintf(`{"jsonrpc":"2.0","id":6,"method":"eth_sendRawTransaction","params":["%s"]}`, hexutil.Encode(rawTx)))
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, json.Unmarshal(raw, &a))
	require.NotNil(t, a.Error, string(raw))
	assert.JSONEq(t, "6", string(a.ID))
}

func TestRPCHandlerHTTPErrors(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)

	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, http.MethodPost, resp.Header.Get("Allow"))

	resp, err = http.Post(srv.URL, "text/plain", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode)

	resp, err = http.Post(srv.URL, "application/json; charset=utf-8", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	big := bytes.Repeat([]byte(" "), devnet.MaxRPCBody+1)
	resp, err = http.Post(srv.URL, "application/json", bytes.NewReader(big))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

func TestFaucetBadInputs(t *testing.T) {
	c := newChain(t)
	user := common.HexToAddress("0x00000000000000000000000000000000000000aa")
	for _, amount := range []string{"", "abc", "-1", "+1", "0", "0.00", "0.0000001", "1.1234567", "1e5", "1,000", " 1", "1 ", "1.", ".5", "1000000.000001", "1000001", "99999999999999999999", "0x10", "１"} {
		_, err := c.Faucet(t.Context(), user, amount)
		require.Error(t, err, "%q", amount)
		assert.Equal(t, fault.Invalid, fault.CodeOf(err), "%q", amount)
	}
	_, err := c.Faucet(t.Context(), common.Address{}, "10")
	assert.Equal(t, fault.Invalid, fault.CodeOf(err))
	assert.Equal(t, "invalid address", fault.MessageOf(err))

	// Nothing was minted.
	assert.Zero(t, tokenBalance(t, c.Client(), c.USDT(), user).Sign())
}

func TestParseUSDT(t *testing.T) {
	for in, want := range map[string]int64{
		"100.00":   100_000_000,
		"100":      100_000_000,
		"25.5":     25_500_000,
		"0.000001": 1,
		"1000000":  1_000_000_000_000,
		"007.10":   7_100_000,
	} {
		got, err := devnet.ParseUSDT(in)
		require.NoError(t, err, in)
		assert.Equal(t, big.NewInt(want), got, in)
	}
}

func TestConcurrentFaucetAndRPC(t *testing.T) {
	c := newChain(t)
	srv := serve(t, c)
	ec, err := ethclient.Dial(srv.URL)
	require.NoError(t, err)
	t.Cleanup(ec.Close)

	var wg sync.WaitGroup
	keys := make([]*ecdsa.PrivateKey, 4)
	for i := range keys {
		keys[i], err = crypto.GenerateKey()
		require.NoError(t, err)
	}
	for _, key := range keys {
		wg.Go(func() {
			ctx := t.Context()
			user := crypto.PubkeyToAddress(key.PublicKey)
			if _, err := c.Faucet(ctx, user, "3"); err != nil {
				t.Error(err)
				return
			}
			tx := signedTransfer(t, ec, key, c.USDT(), c.ReceivingAddress(), big.NewInt(1_000_000))
			if err := ec.SendTransaction(ctx, tx); err != nil {
				t.Error(err)
				return
			}
			r, err := ec.TransactionReceipt(ctx, tx.Hash())
			if err != nil {
				t.Error(err)
				return
			}
			if r.Status != types.ReceiptStatusSuccessful {
				t.Errorf("transfer %s failed", tx.Hash())
			}
		})
	}
	wg.Wait()
	assert.Equal(t, big.NewInt(4_000_000), tokenBalance(t, ec, c.USDT(), c.ReceivingAddress()))
}

func TestInfoEVMChainAndClock(t *testing.T) {
	recv := common.HexToAddress("0x5B97e908A7AF2EF5C2176ed45F79b2f74Fa680CC")
	c, err := devnet.New(t.Context(), devnet.Config{ChainID: 1337, ReceivingAddress: recv})
	require.NoError(t, err)
	defer c.Close()

	info := c.Info("http://127.0.0.1:8080/devnet/rpc")
	assert.Equal(t, devnet.Info{
		ChainID:          1337,
		RPCURL:           "http://127.0.0.1:8080/devnet/rpc",
		USDTAddress:      strings.ToLower(c.USDT().Hex()),
		ReceivingAddress: "0x5b97e908a7af2ef5c2176ed45f79b2f74fa680cc",
	}, info)
	b, err := json.Marshal(info)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"usdt_address"`)

	ch := c.EVMChain()
	assert.Equal(t, uint64(1337), ch.ID)
	assert.Equal(t, c.USDT(), ch.Token)
	assert.Equal(t, uint8(6), ch.Decimals)
	assert.Equal(t, uint64(1), ch.Confirmations)
	cl, err := c.Dial(t.Context(), ch)
	require.NoError(t, err)
	id, err := cl.ChainID(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int64(1337), id.Int64())

	before, err := c.Client().HeaderByNumber(t.Context(), nil)
	require.NoError(t, err)
	require.NoError(t, c.AdjustTime(time.Hour))
	after, err := c.Client().HeaderByNumber(t.Context(), nil)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, after.Time-before.Time, uint64(3600))

	_, err = devnet.New(context.Background(), devnet.Config{ChainID: 1})
	assert.Equal(t, fault.Invalid, fault.CodeOf(err))

	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
}

func TestEmbeddedContract(t *testing.T) {
	code, err := devnet.TokenBytecode()
	require.NoError(t, err)
	assert.Greater(t, len(code), 1000)
	parsed := mustABI(t)
	for _, m := range []string{"transfer", "transferFrom", "approve", "balanceOf", "allowance", "totalSupply", "mint", "decimals", "symbol", "name"} {
		assert.Contains(t, parsed.Methods, m)
	}
	for _, e := range []string{"Transfer", "Approval"} {
		assert.Contains(t, parsed.Events, e)
	}
	assert.Equal(t, crypto.Keccak256Hash([]byte("Transfer(address,address,uint256)")), parsed.Events["Transfer"].ID)
}

// Self-transfers cannot push the dev chain's clock ahead: 8 wallets each
// sending 6 transactions, each one sealed at once, leave the head at most
// MaxClockLead (plus its second) ahead of the wall clock; the
// transactions sent while a block waits share it.
func TestSelfTransfersCannotPushTheClock(t *testing.T) {
	const senders, each = 8, 6
	keys := make([]*ecdsa.PrivateKey, senders)
	alloc := types.GenesisAlloc{}
	for i := range keys {
		keys[i], _ = crypto.GenerateKey()
		alloc[crypto.PubkeyToAddress(keys[i].PublicKey)] = types.Account{Balance: big.NewInt(1e18)}
	}
	c, err := devnet.New(t.Context(), devnet.Config{Alloc: alloc, MaxClockLead: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	srv := serve(t, c)
	ec, err := ethclient.Dial(srv.URL)
	require.NoError(t, err)
	t.Cleanup(ec.Close)
	start, err := ec.HeaderByNumber(t.Context(), nil)
	require.NoError(t, err)

	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := crypto.PubkeyToAddress(key.PublicKey)
			for n := range uint64(each) {
				tx, err := types.SignTx(types.NewTx(&types.DynamicFeeTx{
					ChainID: big.NewInt(devnet.ChainID), Nonce: n, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(1e11),
					Gas: 21_000, To: &from, Value: big.NewInt(1),
				}), types.LatestSignerForChainID(big.NewInt(devnet.ChainID)), key)
				if !assert.NoError(t, err) {
					return
				}
				raw, _ := tx.MarshalBinary()
				status, body := postRPC(t, srv.URL, fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransactionSync","params":["%s"]}`, hexutil.Encode(raw)))
				if !assert.Equal(t, http.StatusOK, status) || !assert.NotContains(t, string(body), `"error"`) {
					return
				}
			}
		}()
	}
	wg.Wait()
	head, err := ec.HeaderByNumber(t.Context(), nil)
	require.NoError(t, err)
	lead := time.Until(time.Unix(int64(head.Time), 0))
	t.Logf("%d transactions in %d blocks; the head is %v ahead of the wall clock", senders*each, head.Number.Uint64()-start.Number.Uint64(), lead)
	require.LessOrEqual(t, lead, 3*time.Second, "the clock stays within MaxClockLead (+1 s) of the wall clock")
}
