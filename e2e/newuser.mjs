// newuser.mjs drives a running `perceptron-server -dev` from outside the
// process exactly as a new user would: a fresh ethers wallet logs in, makes
// API keys, takes test USDT from the faucet, sends a real signed ERC-20
// transfer over /devnet/rpc, buys credits with it, and spends them through
// the official `openai` client, checking balance, history, points and
// metrics along the way.
//
//	node e2e/newuser.mjs http://127.0.0.1:8080 [STATE.json]
//
// With STATE.json, it finally writes there the master key and a live client
// key (funded wallet) for the curl checks that .ci/e2e.sh runs afterwards.
//
// It prints one line per check and a final "N passed, M failed" line, and
// exits 1 if any check failed. A failed step whose results later steps
// need stops the run (counted as failed, and the remaining steps are
// reported as not run).

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { ethers } from "ethers";
import OpenAI from "openai";

const base = (process.argv[2] || process.env.PERCEPTRON_URL || "").replace(/\/+$/, "");
if (!/^https?:\/\//.test(base)) {
  console.error("usage: node e2e/newuser.mjs <baseURL>   (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}

// ---------------------------------------------------------------- harness

let passed = 0;
let failed = 0;
const failures = [];

class Abort extends Error {}

// check runs one named check. With critical, a failure stops the run,
// because what follows needs its result.
async function check(name, fn, { critical = false } = {}) {
  const t0 = performance.now();
  try {
    const note = await fn();
    passed++;
    const ms = Math.round(performance.now() - t0);
    console.log(`  ok    ${name}${note ? ` (${note})` : ""} [${ms}ms]`);
  } catch (err) {
    failed++;
    failures.push(name);
    console.log(`  FAIL  ${name}`);
    for (const line of String(err?.stack || err).split("\n").slice(0, 12)) console.log(`        ${line}`);
    if (critical) throw new Abort(name);
  }
}

function section(title) {
  console.log(`\n== ${title}`);
}

// api calls the REST API and returns the status, headers and parsed body.
async function api(method, path, { key, body, headers = {} } = {}) {
  const h = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(base + path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text, req: `${method} ${path}` };
}

function show(r) {
  return `${r.req} -> ${r.status} ${r.text.trim().slice(0, 600)}`;
}

// expectOK asserts a 2xx (or the given status) and returns the body.
function expectStatus(r, status) {
  assert.equal(r.status, status, `expected ${status}: ${show(r)}`);
  return r.json;
}

// expectError asserts the status and the exact message of the one error
// shape, with its request ID echoed in X-Request-Id.
function expectError(r, status, message) {
  assert.equal(r.status, status, `expected ${status} "${message}": ${show(r)}`);
  assert.ok(r.json?.error, `no {"error":{...}} body: ${show(r)}`);
  assert.equal(r.json.error.message, message, `wrong message: ${show(r)}`);
  assert.equal(typeof r.json.error.type, "string", `error.type missing: ${show(r)}`);
  assert.ok(r.json.error.type.length > 0, `error.type empty: ${show(r)}`);
  assert.equal(typeof r.json.error.request_id, "string", `error.request_id missing: ${show(r)}`);
  assert.equal(r.headers.get("x-request-id"), r.json.error.request_id, `X-Request-Id differs from error.request_id: ${show(r)}`);
  return `${status} ${message}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// eventually retries fn until it stops throwing or the time is up (for
// figures a server may aggregate in the background).
async function eventually(fn, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

const HEX64 = "[0-9a-f]{64}";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// A new user's ERC-20 ABI: the standard human-readable fragments.
const ERC20_ABI = [
  "function name() view returns (string)",
  "function symbol() view returns (string)",
  "function decimals() view returns (uint8)",
  "function balanceOf(address) view returns (uint256)",
  "function transfer(address to, uint256 amount) returns (bool)",
  "event Transfer(address indexed from, address indexed to, uint256 value)",
];

// ---------------------------------------------------------------- the run

const S = {}; // state shared between steps

async function run() {
  console.log(`e2e new user against ${base}`);

  section("wallet login");
  S.wallet = ethers.Wallet.createRandom();
  console.log(`  wallet ${S.wallet.address}`);

  await check("GET /api/health is ok", async () => {
    const b = expectStatus(await api("GET", "/api/health"), 200);
    assert.equal(b.status, "ok");
    assert.equal(typeof b.version, "string");
    return `version ${b.version}`;
  }, { critical: true });

  await check("GET /api/auth/challenge gives a UUID nonce valid ~5 minutes", async () => {
    const b = expectStatus(await api("GET", "/api/auth/challenge"), 200);
    assert.match(b.nonce, UUID);
    const left = b.expires_at - Math.floor(Date.now() / 1000);
    assert.ok(left > 240 && left <= 305, `expires_at is ${left}s away, want ~300`);
    S.nonce = b.nonce;
    return b.nonce;
  }, { critical: true });

  await check("POST /api/auth/verify with personal_sign of the nonce -> master key", async () => {
    const signature = await S.wallet.signMessage(S.nonce);
    const r = await api("POST", "/api/auth/verify", {
      body: { address: S.wallet.address, signature, nonce: S.nonce },
    });
    const b = expectStatus(r, 200);
    assert.match(b.master_key, new RegExp(`^pct-m-${HEX64}$`));
    assert.equal(b.master_key.length, 70);
    assert.equal(b.address, S.wallet.address.toLowerCase());
    S.master = b.master_key;
    S.signature = signature;
    return `${b.master_key.slice(0, 12)}..., ${b.address}`;
  }, { critical: true });

  await check("verify: reusing the nonce -> 401 invalid or expired nonce", async () => {
    const r = await api("POST", "/api/auth/verify", {
      body: { address: S.wallet.address, signature: S.signature, nonce: S.nonce },
    });
    return expectError(r, 401, "invalid or expired nonce");
  });

  await check("verify: a signature by another wallet -> 401 signature does not match claimed address", async () => {
    const { nonce } = expectStatus(await api("GET", "/api/auth/challenge"), 200);
    const other = ethers.Wallet.createRandom();
    const signature = await other.signMessage(nonce);
    const r = await api("POST", "/api/auth/verify", { body: { address: S.wallet.address, signature, nonce } });
    return expectError(r, 401, "signature does not match claimed address");
  });

  await check("verify: a garbage signature -> 401 signature verification failed", async () => {
    const { nonce } = expectStatus(await api("GET", "/api/auth/challenge"), 200);
    const r = await api("POST", "/api/auth/verify", {
      body: { address: S.wallet.address, signature: "0xdeadbeef", nonce },
    });
    return expectError(r, 401, "signature verification failed");
  });

  await check("verify: 65 bytes that recover no key -> 401 signature verification failed", async () => {
    const { nonce } = expectStatus(await api("GET", "/api/auth/challenge"), 200);
    const r = await api("POST", "/api/auth/verify", {
      body: { address: S.wallet.address, signature: "0x" + "00".repeat(64) + "1b", nonce },
    });
    return expectError(r, 401, "signature verification failed");
  });

  await check("verify: an unknown nonce -> 401 invalid or expired nonce", async () => {
    const nonce = crypto.randomUUID();
    const signature = await S.wallet.signMessage(nonce);
    const r = await api("POST", "/api/auth/verify", { body: { address: S.wallet.address, signature, nonce } });
    return expectError(r, 401, "invalid or expired nonce");
  });

  section("API keys");

  await check("POST /api/keys/generate (master) -> client key pct-<64 hex>", async () => {
    const r = await api("POST", "/api/keys/generate", { key: S.master, body: { label: "e2e agent" } });
    const b = expectStatus(r, 200);
    assert.match(b.key, new RegExp(`^pct-${HEX64}$`));
    assert.equal(b.key.length, 68);
    assert.equal(b.key_prefix, b.key.slice(0, 8));
    assert.equal(b.label, "e2e agent");
    assert.match(b.id, UUID);
    assert.equal(typeof b.created_at, "number");
    S.clientKey = b.key;
    S.clientKeyID = b.id;
    return `${b.key_prefix}... id ${b.id}`;
  }, { critical: true });

  await check("GET /api/keys (master) lists it, without the secret", async () => {
    const b = expectStatus(await api("GET", "/api/keys", { key: S.master }), 200);
    assert.ok(Array.isArray(b.keys));
    const k = b.keys.find((k) => k.id === S.clientKeyID);
    assert.ok(k, `key ${S.clientKeyID} not listed: ${JSON.stringify(b)}`);
    assert.equal(k.key_prefix, S.clientKey.slice(0, 8));
    assert.equal(k.label, "e2e agent");
    assert.equal(k.key, undefined, "the full key must never be listed");
    assert.ok(!JSON.stringify(b).includes(S.clientKey), "the full key must never be listed");
    return `${b.keys.length} key(s)`;
  });

  await check("GET /api/wallet/addresses (client key) -> the wallet", async () => {
    const b = expectStatus(await api("GET", "/api/wallet/addresses", { key: S.clientKey }), 200);
    assert.equal(b.address.toLowerCase(), S.wallet.address.toLowerCase());
    return b.address;
  });

  await check("the client key is refused on GET /api/keys -> 403", async () => {
    const r = await api("GET", "/api/keys", { key: S.clientKey });
    return expectError(r, 403, "client API keys are not authorized for this operation");
  });

  await check("the client key is refused on POST /api/keys/generate -> 403", async () => {
    const r = await api("POST", "/api/keys/generate", { key: S.clientKey, body: { label: "nope" } });
    return expectError(r, 403, "client API keys are not authorized for this operation");
  });

  await check("a second key before any purchase is allowed", async () => {
    const b = expectStatus(await api("POST", "/api/keys/generate", { key: S.master, body: { label: "spare" } }), 200);
    assert.match(b.key, new RegExp(`^pct-${HEX64}$`));
    S.spareKeyID = b.id;
    return b.key_prefix;
  });

  await check("a third key before any purchase -> 403 maximum of 2", async () => {
    const r = await api("POST", "/api/keys/generate", { key: S.master, body: { label: "third" } });
    return expectError(r, 403, "maximum of 2 API keys reached without a credit purchase");
  });

  await check("chat before any purchase -> 402 insufficient credits (openai client)", async () => {
    const client = new OpenAI({ baseURL: base + "/api/v1", apiKey: S.clientKey, maxRetries: 0 });
    let err;
    try {
      await client.chat.completions.create({ model: "perceptron/dev", messages: [{ role: "user", content: "hi" }] });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
    assert.equal(err.status, 402);
    assert.equal(err.error?.message, "insufficient credits (need at least $0.05 for this request)");
    return err.error.message;
  });

  await check("streamed chat before any purchase -> plain HTTP 402 JSON, not an SSE stream", async () => {
    const r = await api("POST", "/api/v1/chat/completions", {
      key: S.clientKey,
      body: { model: "perceptron/dev", messages: [{ role: "user", content: "hi" }], stream: true },
    });
    return expectError(r, 402, "insufficient credits (need at least $0.05 for this request)");
  });

  section("dev chain: faucet and a real ERC-20 transfer through /devnet/rpc");

  await check("GET /devnet/info", async () => {
    const b = expectStatus(await api("GET", "/devnet/info"), 200);
    assert.equal(b.chain_id, 1337);
    assert.match(b.rpc_url, /^https?:\/\/.+\/devnet\/rpc$/);
    assert.ok(ethers.isAddress(b.usdt_address), `usdt_address ${b.usdt_address}`);
    assert.ok(ethers.isAddress(b.receiving_address), `receiving_address ${b.receiving_address}`);
    S.info = b;
    return `rpc ${b.rpc_url}, USDT ${b.usdt_address}, pay to ${b.receiving_address}`;
  }, { critical: true });

  await check("GET /api/credits/receiving-address matches /devnet/info", async () => {
    const b = expectStatus(await api("GET", "/api/credits/receiving-address"), 200);
    assert.equal(ethers.getAddress(b.address), ethers.getAddress(S.info.receiving_address));
    return b.address;
  });

  await check('POST /devnet/faucet {"usdt":"100.00"}', async () => {
    const r = await api("POST", "/devnet/faucet", { body: { address: S.wallet.address, usdt: "100.00" } });
    const b = expectStatus(r, 200);
    assert.equal(b.address?.toLowerCase(), S.wallet.address.toLowerCase(), show(r));
    return r.text.trim();
  }, { critical: true });

  S.provider = new ethers.JsonRpcProvider(S.info.rpc_url);
  S.usdt = new ethers.Contract(S.info.usdt_address, ERC20_ABI, S.provider);

  await check("ethers JsonRpcProvider (batched JSON-RPC) sees chain 1337", async () => {
    const net = await S.provider.getNetwork();
    assert.equal(net.chainId, 1337n);
    const [block, chainId, gasPrice] = await Promise.all([
      S.provider.getBlockNumber(),
      S.provider.send("eth_chainId", []),
      S.provider.getFeeData(),
    ]);
    assert.equal(BigInt(chainId), 1337n);
    assert.ok(block > 0, `block number ${block}`);
    return `block ${block}, gasPrice ${gasPrice.gasPrice}`;
  }, { critical: true });

  await check("raw JSON-RPC batch over POST /devnet/rpc", async () => {
    const res = await fetch(S.info.rpc_url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([
        { jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] },
        { jsonrpc: "2.0", id: 2, method: "eth_blockNumber", params: [] },
      ]),
    });
    assert.equal(res.status, 200);
    const b = await res.json();
    assert.ok(Array.isArray(b) && b.length === 2, JSON.stringify(b));
    const byID = Object.fromEntries(b.map((x) => [x.id, x]));
    assert.equal(BigInt(byID[1].result), 1337n);
    return JSON.stringify(b);
  });

  await check("USDT is a 6-decimal ERC-20 and the wallet holds 100 USDT and ETH for gas", async () => {
    const [symbol, decimals, bal, eth] = await Promise.all([
      S.usdt.symbol(),
      S.usdt.decimals(),
      S.usdt.balanceOf(S.wallet.address),
      S.provider.getBalance(S.wallet.address),
    ]);
    assert.equal(symbol, "USDT");
    assert.equal(decimals, 6n);
    assert.equal(bal, ethers.parseUnits("100", 6));
    assert.ok(eth > 0n, "no ETH for gas");
    return `${ethers.formatUnits(bal, 6)} ${symbol}, ${ethers.formatEther(eth)} ETH`;
  }, { critical: true });

  // ethers caches identical provider calls for 250 ms, so two transfers in
  // quick succession would both read the same "pending" nonce; a
  // NonceManager counts nonces locally after the first read, as a wallet
  // sending several transactions in a row would.
  S.signer = new ethers.NonceManager(S.wallet.connect(S.provider));

  // transferUSDT sends a real signed ERC-20 transfer and waits for it.
  async function transferUSDT(amount) {
    const token = new ethers.Contract(S.info.usdt_address, ERC20_ABI, S.signer);
    const tx = await token.transfer(S.info.receiving_address, ethers.parseUnits(amount, 6));
    const receipt = await tx.wait();
    assert.equal(receipt.status, 1, `transfer failed: ${JSON.stringify(receipt)}`);
    return receipt;
  }

  await check("send a real signed transfer of 25 USDT to the receiving address", async () => {
    const before = await S.usdt.balanceOf(S.info.receiving_address);
    const receipt = await transferUSDT("25");
    S.txHash = receipt.hash;
    const [mine, theirs] = await Promise.all([
      S.usdt.balanceOf(S.wallet.address),
      S.usdt.balanceOf(S.info.receiving_address),
    ]);
    assert.equal(mine, ethers.parseUnits("75", 6));
    assert.equal(theirs - before, ethers.parseUnits("25", 6));
    const log = receipt.logs.map((l) => S.usdt.interface.parseLog(l)).find((l) => l?.name === "Transfer");
    assert.ok(log, "no Transfer event in the receipt");
    assert.equal(log.args.from, S.wallet.address);
    assert.equal(log.args.to, ethers.getAddress(S.info.receiving_address));
    return `tx ${receipt.hash} in block ${receipt.blockNumber}`;
  }, { critical: true });

  section("buy credits");

  const purchase = (key, tx_hash, amount) =>
    api("POST", "/api/credits/purchase", { key, body: { tx_hash, token: "USDT", amount, chain_id: 1337 } });

  await check("another wallet claiming this transfer -> 400 verification failed (and the hash stays usable)", async () => {
    const other = ethers.Wallet.createRandom();
    const { nonce } = expectStatus(await api("GET", "/api/auth/challenge"), 200);
    const signature = await other.signMessage(nonce);
    const login = expectStatus(await api("POST", "/api/auth/verify", { body: { address: other.address, signature, nonce } }), 200);
    const r = await purchase(login.master_key, S.txHash, "25.00");
    return expectError(r, 400, "transaction verification failed (amount, token, or recipient mismatch)");
  });

  await check("claiming the transfer for the wrong amount (24.00) -> 400 verification failed", async () => {
    return expectError(await purchase(S.clientKey, S.txHash, "24.00"), 400, "transaction verification failed (amount, token, or recipient mismatch)");
  });

  await check("an unknown chain_id -> 400", async () => {
    const r = await api("POST", "/api/credits/purchase", {
      key: S.clientKey,
      body: { tx_hash: S.txHash, token: "USDT", amount: "25.00", chain_id: 999999 },
    });
    assert.equal(r.status, 400, show(r));
    assert.ok(r.json?.error?.message, show(r));
    return r.json.error.message;
  });

  await check("a token other than USDT -> 400", async () => {
    const r = await api("POST", "/api/credits/purchase", {
      key: S.clientKey,
      body: { tx_hash: S.txHash, token: "DAI", amount: "25.00", chain_id: 1337 },
    });
    assert.equal(r.status, 400, show(r));
    assert.ok(r.json?.error?.message, show(r));
    return r.json.error.message;
  });

  await check("amount as a JSON number -> 400 invalid amount", async () => {
    const r = await api("POST", "/api/credits/purchase", {
      key: S.clientKey,
      body: { tx_hash: S.txHash, token: "USDT", amount: 25, chain_id: 1337 },
    });
    return expectError(r, 400, "invalid amount");
  });

  await check("POST /api/credits/purchase 25.00 (client key) -> 2500 cents", async () => {
    const b = expectStatus(await purchase(S.clientKey, S.txHash, "25.00"), 200);
    assert.deepEqual(b, { status: "ok", amount_credited: 2500, new_balance: 2500 });
    return JSON.stringify(b);
  }, { critical: true });

  await check("the same transaction again -> 409 transaction already processed", async () => {
    return expectError(await purchase(S.clientKey, S.txHash, "25.00"), 409, "transaction already processed");
  });

  await check("the same transaction, hash in upper case -> 409 transaction already processed", async () => {
    const upper = "0x" + S.txHash.slice(2).toUpperCase();
    return expectError(await purchase(S.clientKey, upper, "25.00"), 409, "transaction already processed");
  });

  await check("a real 4 USDT transfer claimed as 4.00 -> 400 minimum purchase is $5", async () => {
    const receipt = await transferUSDT("4");
    S.smallTxHash = receipt.hash;
    return expectError(await purchase(S.clientKey, receipt.hash, "4.00"), 400, "minimum purchase is $5");
  });

  await check("an amount with three decimals -> 400 invalid amount", async () => {
    return expectError(await purchase(S.clientKey, S.smallTxHash, "4.001"), 400, "invalid amount");
  });

  section("balance, history, points, metrics");

  await check("GET /api/credits/balance -> 2500 USD_CENTS", async () => {
    const b = expectStatus(await api("GET", "/api/credits/balance", { key: S.clientKey }), 200);
    assert.deepEqual(b, { balance: 2500, currency: "USD_CENTS" });
    return JSON.stringify(b);
  });

  await check("GET /api/credits/history has the Purchase with its tx_hash", async () => {
    const b = expectStatus(await api("GET", "/api/credits/history", { key: S.clientKey }), 200);
    assert.ok(Array.isArray(b.transactions));
    const p = b.transactions.filter((t) => t.tx_type === "Purchase");
    assert.equal(p.length, 1, JSON.stringify(b));
    assert.equal(p[0].tx_hash?.toLowerCase(), S.txHash.toLowerCase());
    assert.equal(p[0].amount, 2500);
    assert.equal(p[0].balance_after, 2500);
    assert.equal(p[0].status, "Completed");
    assert.equal(p[0].user_address, S.wallet.address.toLowerCase());
    assert.equal(typeof p[0].description, "string");
    assert.equal(typeof p[0].timestamp, "number");
    return p[0].description;
  });

  await check("GET /api/points/balance > 0", async () => {
    const b = expectStatus(await api("GET", "/api/points/balance", { key: S.clientKey }), 200);
    assert.equal(typeof b.points, "number");
    assert.ok(b.points > 0, `points ${b.points}`);
    S.pointsAfterPurchase = b.points;
    return `${b.points} points`;
  });

  await check("GET /api/points/history has welcome_bonus and credit_purchase, summing to the balance", async () => {
    const b = expectStatus(await api("GET", "/api/points/history", { key: S.clientKey }), 200);
    const kinds = b.transactions.map((t) => t.trigger_type);
    assert.ok(kinds.includes("welcome_bonus"), `triggers ${kinds}`);
    assert.ok(kinds.includes("credit_purchase"), `triggers ${kinds}`);
    const welcome = b.transactions.find((t) => t.trigger_type === "welcome_bonus");
    assert.equal(welcome.metadata?.purchase_amount_cents, 2500, `welcome_bonus metadata ${JSON.stringify(welcome.metadata)}`);
    for (const t of b.transactions) {
      assert.equal(t.user_address, S.wallet.address.toLowerCase());
      assert.ok(t.points_awarded > 0 && typeof t.description === "string" && typeof t.timestamp === "number", JSON.stringify(t));
    }
    const sum = b.transactions.reduce((s, t) => s + t.points_awarded, 0);
    assert.equal(sum, S.pointsAfterPurchase);
    return b.transactions.map((t) => `${t.trigger_type}=${t.points_awarded}`).join(", ");
  });

  await check("GET /api/metrics/summary (master) -> credits_balance_cents 2500", async () => {
    const b = expectStatus(await api("GET", "/api/metrics/summary", { key: S.master }), 200);
    assert.equal(b.credits_balance_cents, 2500);
    assert.ok(Array.isArray(b.cost_by_service));
    assert.equal(typeof b.active_services, "object");
    return `balance ${b.credits_balance_cents}, runway ${b.runway_hours}`;
  });

  await check("GET /api/metrics/summary refuses the client key -> 403", async () => {
    const r = await api("GET", "/api/metrics/summary", { key: S.clientKey });
    return expectError(r, 403, "client API keys are not authorized for this operation");
  });

  await check("after a purchase a third key works (limit 50)", async () => {
    const b = expectStatus(await api("POST", "/api/keys/generate", { key: S.master, body: { label: "third" } }), 200);
    assert.match(b.key, new RegExp(`^pct-${HEX64}$`));
    const list = expectStatus(await api("GET", "/api/keys", { key: S.master }), 200);
    assert.equal(list.keys.length, 3);
    S.thirdKey = b.key;
    return b.key_prefix;
  });

  section("inference with the official openai client");

  const models = expectStatus(await api("GET", "/api/models"), 200);
  const dev = models.data.find((m) => m.id.includes("dev")) || models.data[0];
  S.model = dev?.id;
  console.log(`  model ${S.model}, pricing ${JSON.stringify(dev?.pricing)}`);
  const price = dev?.pricing || {};
  const costMicroCents = (u) => u.prompt_tokens * price.input_cents_per_1m + u.completion_tokens * price.output_cents_per_1m;

  const openai = new OpenAI({ baseURL: base + "/api/v1", apiKey: S.clientKey, maxRetries: 0, timeout: 30_000 });
  S.usages = [];

  await check("openai models.list() includes the dev model", async () => {
    const ids = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    assert.ok(ids.includes(S.model), `models ${ids}`);
    assert.equal(S.model, "perceptron/dev");
    return ids.join(", ");
  }, { critical: true });

  await check("openai chat.completions.create -> a choice and usage", async () => {
    const c = await openai.chat.completions.create({
      model: S.model,
      messages: [{ role: "user", content: "What is the capital of France?" }],
    });
    assert.equal(c.object, "chat.completion");
    assert.equal(c.model, S.model);
    assert.equal(c.choices.length, 1);
    assert.equal(c.choices[0].message.role, "assistant");
    assert.ok(c.choices[0].message.content?.length > 0, "empty content");
    assert.equal(c.choices[0].finish_reason, "stop");
    const u = c.usage;
    assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    S.usages.push(u);
    return `"${c.choices[0].message.content.slice(0, 60)}...", usage ${JSON.stringify(u)}`;
  });

  await check("openai streamed create yields content chunks and ends with a usage chunk", async () => {
    const stream = await openai.chat.completions.create({
      model: S.model,
      messages: [{ role: "user", content: "What is the capital of France?" }],
      stream: true,
    });
    let text = "";
    let chunks = 0;
    let contentChunks = 0;
    let last;
    let finish;
    for await (const ch of stream) {
      chunks++;
      assert.equal(ch.object, "chat.completion.chunk");
      assert.equal(ch.model, S.model);
      const d = ch.choices?.[0]?.delta?.content;
      if (d) {
        text += d;
        contentChunks++;
      }
      if (ch.choices?.[0]?.finish_reason) finish = ch.choices[0].finish_reason;
      last = ch;
    }
    assert.ok(contentChunks >= 2, `only ${contentChunks} content chunks`);
    assert.ok(text.length > 0);
    assert.equal(finish, "stop");
    const u = last?.usage;
    assert.ok(u, `last chunk has no usage: ${JSON.stringify(last)}`);
    assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    S.usages.push(u);
    return `${chunks} chunks (${contentChunks} with content), usage ${JSON.stringify(u)}`;
  });

  await check("the master key may chat too (Client or Master Key)", async () => {
    const asMaster = new OpenAI({ baseURL: base + "/api/v1", apiKey: S.master, maxRetries: 0 });
    const c = await asMaster.chat.completions.create({
      model: S.model,
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Say hello." },
      ],
      max_tokens: 5,
    });
    assert.ok(c.choices[0].message.content.length > 0);
    assert.ok(c.usage.completion_tokens > 0 && c.usage.completion_tokens <= 5, `max_tokens 5 but ${JSON.stringify(c.usage)}`);
    assert.equal(c.choices[0].finish_reason, "length");
    S.usages.push(c.usage);
    return `usage ${JSON.stringify(c.usage)}, finish ${c.choices[0].finish_reason}`;
  });

  await check("openai create with an unknown model -> APIError 400 invalid model", async () => {
    let err;
    try {
      await openai.chat.completions.create({ model: "no/such-model", messages: [{ role: "user", content: "hi" }] });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
    assert.ok(err instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${err?.constructor?.name}`);
    assert.equal(err.status, 400);
    // The client prefixes the status to err.message; err.error is the body's "error".
    assert.ok(err.error?.message?.startsWith("invalid model"), `error.message ${JSON.stringify(err.error)}`);
    assert.ok(err.error.message.includes(S.model), `available models not listed: ${err.error.message}`);
    assert.ok(err.message.includes("invalid model"), err.message);
    assert.equal(err.requestID, err.error.request_id, "X-Request-Id vs error.request_id");
    return err.error.message;
  });

  await check("GET /api/credits/history: one ChatInference per request, exact negative micro-cents", async () => {
    const b = expectStatus(await api("GET", "/api/credits/history", { key: S.clientKey }), 200);
    const chat = b.transactions.filter((t) => t.tx_type === "ChatInference");
    assert.equal(chat.length, S.usages.length, `ChatInference entries: ${JSON.stringify(chat)}`);
    for (const t of chat) {
      assert.equal(typeof t.amount_micro_cents, "number", `no amount_micro_cents: ${JSON.stringify(t)}`);
      assert.ok(t.amount_micro_cents < 0, `amount_micro_cents ${t.amount_micro_cents}`);
      assert.ok(t.amount <= 0, `amount ${t.amount}`);
      assert.equal(t.status, "Completed");
      assert.ok(t.description.includes(S.model), `description without model: ${t.description}`);
      assert.equal(t.tx_hash, undefined, "tx_hash only on purchases");
    }
    const got = chat.map((t) => -t.amount_micro_cents).sort((a, b) => a - b);
    const want = S.usages.map(costMicroCents).sort((a, b) => a - b);
    assert.deepEqual(got, want, "charged micro-cents vs usage x pricing");
    // Shown amounts add up to the shown balance.
    const shownSum = b.transactions.reduce((s, t) => s + t.amount, 0);
    S.exactBalance = 2500 * 1e6 - want.reduce((s, x) => s + x, 0);
    S.shownBalance = Math.floor(S.exactBalance / 1e6);
    assert.equal(shownSum, S.shownBalance, `sum of shown amounts ${shownSum}`);
    return chat.map((t) => `${t.amount_micro_cents}µ¢ "${t.description}"`).join("; ");
  });

  await check("GET /api/credits/balance went down by the exact cost, rounded down to a cent", async () => {
    const b = expectStatus(await api("GET", "/api/credits/balance", { key: S.clientKey }), 200);
    assert.ok(b.balance <= 2500, `balance ${b.balance}`);
    assert.equal(b.balance, S.shownBalance, `exact balance is ${S.exactBalance} micro-cents`);
    return `${b.balance} cents (exact ${S.exactBalance} micro-cents)`;
  });

  await check("GET /api/metrics/summary: requests >= 2, tokens > 0", async () => {
    const wantTokens = S.usages.reduce((s, u) => s + u.total_tokens, 0);
    return await eventually(async () => {
      const b = expectStatus(await api("GET", "/api/metrics/summary", { key: S.master }), 200);
      assert.ok(b.total_requests_24h >= 2, `total_requests_24h ${b.total_requests_24h}: ${JSON.stringify(b)}`);
      assert.ok(b.total_tokens_24h > 0, `total_tokens_24h ${b.total_tokens_24h}`);
      assert.equal(b.total_tokens_24h, wantTokens, `total_tokens_24h vs the usage the client saw`);
      assert.equal(b.credits_balance_cents, S.shownBalance);
      const chat = b.cost_by_service.find((c) => c.service === "chat");
      assert.ok(chat, `no chat in cost_by_service: ${JSON.stringify(b.cost_by_service)}`);
      assert.equal(chat.tokens, wantTokens);
      S.summary = b;
      return `requests ${b.total_requests_24h}, tokens ${b.total_tokens_24h}, cost ${b.total_cost_24h_cents}¢`;
    });
  });

  await check("GET /api/metrics/summary with If-None-Match -> 304", async () => {
    const r1 = await api("GET", "/api/metrics/summary", { key: S.master });
    const etag = r1.headers.get("etag");
    assert.ok(etag, "no ETag");
    const r2 = await api("GET", "/api/metrics/summary", { key: S.master, headers: { "If-None-Match": etag } });
    assert.equal(r2.status, 304, show(r2));
    return etag;
  });

  await check("GET /api/metrics/history buckets add up to the summary", async () => {
    const b = expectStatus(await api("GET", "/api/metrics/history?period=1&bucket_minutes=5", { key: S.master }), 200);
    assert.equal(b.period_hours, 1);
    assert.ok(Array.isArray(b.buckets));
    for (const k of b.buckets) assert.equal(k.timestamp % 300, 0, `bucket ${k.timestamp} not aligned`);
    const tokens = b.buckets.reduce((s, k) => s + k.chat_tokens, 0);
    const requests = b.buckets.reduce((s, k) => s + k.requests, 0);
    assert.equal(tokens, S.summary.total_tokens_24h);
    assert.equal(requests, S.summary.total_requests_24h);
    return `${b.buckets.length} buckets, ${tokens} tokens, ${requests} requests`;
  });

  await check("GET /api/metrics/keys shows the client key as used", async () => {
    return await eventually(async () => {
      const b = expectStatus(await api("GET", "/api/metrics/keys", { key: S.master }), 200);
      const k = b.keys.find((k) => k.key_prefix === S.clientKey.slice(0, 8));
      assert.ok(k, JSON.stringify(b));
      assert.equal(typeof k.last_used_at, "number", `last_used_at ${k.last_used_at}`);
      assert.ok(Math.abs(k.last_used_at - Date.now() / 1000) < 120, `last_used_at ${k.last_used_at}`);
      assert.equal(k.label, "e2e agent");
      return `${b.keys.length} keys, last_used_at ${k.last_used_at}`;
    });
  });

  section("revoke");

  await check("DELETE /api/keys/{id} -> revoked", async () => {
    const b = expectStatus(await api("DELETE", `/api/keys/${S.clientKeyID}`, { key: S.master }), 200);
    assert.deepEqual(b, { status: "revoked" });
    return JSON.stringify(b);
  }, { critical: true });

  await check("the revoked key gets 401 on GET /api/credits/balance", async () => {
    const r = await api("GET", "/api/credits/balance", { key: S.clientKey });
    assert.equal(r.status, 401, show(r));
    assert.equal(typeof r.json?.error?.message, "string", show(r));
    return `401 ${r.json.error.message}`;
  });

  await check("the revoked key gets 401 from the openai client", async () => {
    let err;
    try {
      await openai.chat.completions.create({ model: S.model, messages: [{ role: "user", content: "hi" }] });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err}`);
    assert.equal(err.status, 401);
    return err.message;
  });

  await check("the revoked key is no longer listed; deleting it again -> 404 API key not found", async () => {
    const list = expectStatus(await api("GET", "/api/keys", { key: S.master }), 200);
    assert.ok(!list.keys.some((k) => k.id === S.clientKeyID), JSON.stringify(list));
    return expectError(await api("DELETE", `/api/keys/${S.clientKeyID}`, { key: S.master }), 404, "API key not found");
  });

  section("regenerate the master key");

  await check("POST /api/auth/regenerate-master-key -> a new master key", async () => {
    const b = expectStatus(await api("POST", "/api/auth/regenerate-master-key", { key: S.master }), 200);
    assert.match(b.master_key, new RegExp(`^pct-m-${HEX64}$`));
    assert.notEqual(b.master_key, S.master);
    assert.equal(b.address, S.wallet.address.toLowerCase());
    S.oldMaster = S.master;
    S.master = b.master_key;
    return `${b.master_key.slice(0, 12)}...`;
  }, { critical: true });

  await check("the old master key gets 401 at once", async () => {
    const r = await api("GET", "/api/keys", { key: S.oldMaster });
    assert.equal(r.status, 401, show(r));
    return `401 ${r.json?.error?.message}`;
  });

  await check("client keys stay valid; the new master key manages them", async () => {
    const bal = expectStatus(await api("GET", "/api/credits/balance", { key: S.thirdKey }), 200);
    assert.equal(bal.balance, S.shownBalance);
    const list = expectStatus(await api("GET", "/api/keys", { key: S.master }), 200);
    assert.equal(list.keys.length, 2, JSON.stringify(list));
    return `balance ${bal.balance}, ${list.keys.length} keys`;
  });
}

try {
  await run();
  if (process.argv[3]) {
    const state = {
      base,
      address: S.wallet.address.toLowerCase(),
      master_key: S.master,
      client_key: S.thirdKey,
      model: S.model,
      chat_entries: S.usages.length,
    };
    writeFileSync(process.argv[3], JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  }
} catch (err) {
  if (err instanceof Abort) {
    console.log(`\nstopped: later steps need "${err.message}"`);
  } else {
    failed++;
    failures.push(`unexpected error: ${err?.message || err}`);
    console.log(`\nFAIL  unexpected error outside a check:\n${err?.stack || err}`);
  }
}

console.log(`\nnewuser: ${passed} passed, ${failed} failed`);
if (failed > 0) {
  for (const f of failures) console.log(`  failed: ${f}`);
  process.exit(1);
}
