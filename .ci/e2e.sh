#!/usr/bin/env bash
# End-to-end acceptance run: build the reference server, start it in dev
# mode on a free local port, and drive it from outside the process with
# real protocol peers, as a new user would:
#
#   (a) curl: health, version, models, challenge, error shapes;
#   (b) node e2e/newuser.mjs: an ethers wallet logs in, makes keys, takes
#       test USDT from the faucet, sends a real signed ERC-20 transfer over
#       /devnet/rpc, buys credits, spends them through the official openai
#       client, and checks balance, history, points and metrics;
#   (c) curl and Python requests with the key (b) left behind: chat
#       completions and SSE streams, and the charges in history;
#   (c2) domains and the tunnel with the same key: curl reserves a domain
#       and assigns the port of a local web server (python3 -m
#       http.server), `perceptron frontend` connects it through its
#       connect route, and curl and Python requests reach that server
#       through the ingress with Host: NAME.pct.site; the frontend refuses
#       requests without its secret, for a foreign Host or cross-site; a
#       release stops it retrying; raw sockets with ambiguous framing
#       (Content-Length and chunked, an obs-folded header, a bad Host
#       port) get 400 from the ingress;
#   (c3) the news feed with the same key: subscribe, the sample items
#       enriched by the dev model, a category, pages with before, one
#       item, status, the NewsFeed charge, unsubscribe;
#   (c4) personas with the same key: a persona and a session by curl, a
#       conversation over the stream with wscat (the reply and its
#       deltas), the history, and the reply's ChatInference charge;
#   (c5) speech-to-text with the same key: a WAV transcribed with curl -F
#       and with the official openai npm client, SttInference charges in
#       history, the stt line in metrics;
#   (d) a second server on a SQLite file: (b) again, 40 completions, then
#       kill -9 and a restart: every charge is in the history, and a
#       second process on the same file is refused.
#
# Needs go, node (>= 20), npm, curl, and python3 with requests (Debian:
# python3-requests; .ci/run installs it when missing).
# Node packages are pinned by e2e/package-lock.json and installed with
# `npm ci` into e2e/node_modules (git-ignored), skipped when that lock file
# has not changed since the last install.
#
#   bash .ci/e2e.sh
#
# Ends with "e2e: N passed, M failed" and exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

for tool in go node npm curl python3; do
	command -v "$tool" >/dev/null || { echo "e2e: $tool not found" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/perceptron-e2e.XXXXXX")
SERVER_PID=
cleanup() {
	for pid in $FRONT_PID $ORIGIN_PID; do kill -TERM "$pid" 2>/dev/null || true; done
	if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PASS=0
FAIL=0
FAILED=()
ok() { PASS=$((PASS + 1)); echo "  ok    $1"; }
bad() {
	FAIL=$((FAIL + 1)); FAILED+=("$1"); echo "  FAIL  $1"
	if [[ -n ${2:-} ]]; then echo "        $2" | head -c 1500; echo; fi
}

summary() {
	echo
	if ((FAIL == 0)); then
		echo "e2e: PASS: $PASS passed, $FAIL failed"
	else
		for f in "${FAILED[@]}"; do echo "  failed: $f"; done
		echo "e2e: FAIL: $PASS passed, $FAIL failed"
	fi
}

# die stops the run early (nothing after it can work), printing the summary.
die() {
	bad "$1" "${2:-}"
	if [[ -f $TMP/server.err ]]; then
		echo "--- server log (tail) ---"; tail -n 40 "$TMP/server.err"
	fi
	summary
	exit 1
}

# req METHOD PATH [curl args...]: sets STATUS, HDRS (file) and BODY (file).
BODY=$TMP/body
HDRS=$TMP/headers
STATUS=
req() {
	local method=$1 path=$2; shift 2
	STATUS=$(curl -sS -X "$method" -o "$BODY" -D "$HDRS" -w '%{http_code}' --max-time 30 "$@" "$BASE$path") || STATUS=000
}

# jcheck NAME STATUS PYEXPR: the last response has STATUS and a JSON body b
# for which PYEXPR holds (h is the lowercased header dict).
jcheck() {
	local name=$1 want=$2 expr=$3
	if [[ $STATUS != "$want" ]]; then
		bad "$name" "want HTTP $want, got $STATUS: $(head -c 600 "$BODY")"
		return 0
	fi
	local out
	if out=$(python3 - "$BODY" "$HDRS" "$expr" 2>&1 <<'PY'
import json, sys
body, hdrs, expr = sys.argv[1:4]
b = json.load(open(body))
h = {}
for line in open(hdrs, errors="replace"):
    if ":" in line:
        k, v = line.split(":", 1)
        h[k.strip().lower()] = v.strip()
if not eval("(" + expr + "\n)"):
    sys.exit(1)
PY
	); then
		ok "$name"
	else
		bad "$name" "assertion [$expr] failed on: $(head -c 600 "$BODY") $out"
	fi
}

# errcheck NAME STATUS MESSAGE: the one error shape with the exact message
# and the request ID also in X-Request-Id.
errcheck() {
	local msg=${3//\\/\\\\}
	msg=${msg//\"/\\\"}
	jcheck "$1" "$2" "b['error']['message'] == \"$msg\" and b['error']['type'] != '' and b['error']['request_id'] == h.get('x-request-id')"
}

# json FILE PYEXPR: print a value from a JSON file.
json() { python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }

echo "== build"
go build -o "$TMP/perceptron-server" ./cmd/perceptron-server || die "go build ./cmd/perceptron-server"
ok "go build ./cmd/perceptron-server"

# start_server DB...: starts the built server in dev mode with -db DB on a
# free local port (port 0: the kernel picks one, and the server prints the
# URL it got); sets SERVER_PID and BASE, or dies.
start_server() {
	"$TMP/perceptron-server" -dev -db "$1" -addr 127.0.0.1:0 -ingress-addr 127.0.0.1:0 >"$TMP/server.out" 2>"$TMP/server.err" &
	SERVER_PID=$!
	BASE=
	for _ in $(seq 300); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			die "server (-db $1) exited at start" "$(cat "$TMP/server.out" "$TMP/server.err")"
		fi
		BASE=$(sed -n 's#^Perceptron listening on \(http://[^ ]*\).*#\1#p' "$TMP/server.out" | head -n1)
		if [[ -n $BASE ]] && curl -fsS --max-time 2 -o /dev/null "$BASE/api/health" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	[[ -n $BASE ]] || die "server did not print its URL within 30s"
	curl -fsS --max-time 2 -o /dev/null "$BASE/api/health" || die "server at $BASE not healthy within 30s"
	ok "server -dev -db $1 up at $BASE"
}

echo "== start perceptron-server -dev -db memory:"
start_server memory:

echo "== node dependencies (npm ci)"
LOCK_SUM=$(sha256sum e2e/package-lock.json | cut -d' ' -f1)
STAMP=e2e/node_modules/.e2e-lock-sha256
if [[ -f $STAMP && $(cat "$STAMP") == "$LOCK_SUM" ]]; then
	ok "e2e/node_modules up to date with package-lock.json"
else
	if (cd e2e && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1; then
		echo "$LOCK_SUM" >"$STAMP"
		ok "npm ci (e2e/)"
	else
		die "npm ci (e2e/)" "$(tail -n 20 "$TMP/npm.log")"
	fi
fi

echo
echo "== (a) curl"
req GET /api/health
jcheck "GET /api/health: status ok, version, uptime" 200 \
	"b['status'] == 'ok' and isinstance(b['version'], str) and b['version'] != '' and isinstance(b.get('uptime_seconds'), int)"
VERSION=$(json "$BODY" "b['version']" 2>/dev/null || echo "?")

req GET /api/version/latest
jcheck "GET /api/version/latest is the running version ($VERSION)" 200 \
	"b['version'] == '$VERSION' and isinstance(b['release_notes'], str) and isinstance(b['downloads'], list) and isinstance(b['published_at'], int)"

req GET "/api/version/$VERSION"
jcheck "GET /api/version/$VERSION" 200 "b['version'] == '$VERSION'"

req GET /api/version/9.9.9
errcheck "GET /api/version/9.9.9 -> 404" 404 "release '9.9.9' not found"

req GET /api/models
jcheck "GET /api/models lists the priced dev model with every documented field" 200 "
b['object'] == 'list' and any(
  m['id'] == 'perceptron/dev' and m['object'] == 'model' and isinstance(m['name'], str)
  and isinstance(m['created'], int) and isinstance(m['owned_by'], str)
  and m['context_length'] > 0 and 0 < m['max_output_tokens'] <= m['context_length']
  and isinstance(m['frontier_rank'], int)
  and m['pricing']['input_cents_per_1m'] > 0 and m['pricing']['output_cents_per_1m'] > 0
  for m in b['data'])"
cp "$BODY" "$TMP/models.json"

req GET /api/v1/models
if [[ $STATUS == 200 ]] && cmp -s "$BODY" "$TMP/models.json"; then
	ok "GET /api/v1/models answers the same list"
else
	bad "GET /api/v1/models answers the same list" "HTTP $STATUS: $(head -c 300 "$BODY")"
fi

req GET /api/auth/challenge
jcheck "GET /api/auth/challenge: UUID nonce, expires in ~5 minutes" 200 "
__import__('re').fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', b['nonce'].lower()) is not None
and 240 < b['expires_at'] - __import__('time').time() <= 305"

req GET /api/auth/challenge
NONCE2=$(json "$BODY" "b['nonce']" 2>/dev/null || echo)
req POST /api/auth/verify -H 'Content-Type: application/json' \
	--data "{\"address\":\"0x0000000000000000000000000000000000000001\",\"signature\":\"0x1234\",\"nonce\":\"$NONCE2\"}"
errcheck "POST /api/auth/verify with a short signature -> 401" 401 "signature verification failed"

req GET /api/credits/balance
jcheck "GET /api/credits/balance without a token -> 401" 401 "b['error']['request_id'] == h.get('x-request-id')"

req GET /api/credits/balance -H 'Authorization: Bearer pct-0000000000000000000000000000000000000000000000000000000000000000'
jcheck "GET /api/credits/balance with an unknown key -> 401" 401 "b['error']['type'] != ''"

req GET /api/no/such/route
jcheck "unknown route -> 404 JSON error" 404 "b['error']['request_id'] == h.get('x-request-id')"

req POST /api/health
jcheck "wrong method -> 405 JSON error" 405 "b['error']['request_id'] == h.get('x-request-id')"

req GET /api/credits/receiving-address
jcheck "GET /api/credits/receiving-address" 200 "b['address'].startswith('0x') and len(b['address']) == 42"

req GET /devnet/info
jcheck "GET /devnet/info: chain 1337, absolute rpc_url on this server" 200 \
	"b['chain_id'] == 1337 and b['rpc_url'] == '$BASE/devnet/rpc' and len(b['usdt_address']) == 42 and len(b['receiving_address']) == 42"

req POST /devnet/rpc -H 'Content-Type: application/json' \
	--data '[{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]},{"jsonrpc":"2.0","id":"b","method":"net_version","params":[]}]'
jcheck "POST /devnet/rpc batch: eth_chainId 0x539, net_version 1337" 200 \
	"sorted((str(x['id']), x['result']) for x in b) == [('1', '0x539'), ('b', '1337')]"

echo
echo "== (b) node e2e/newuser.mjs $BASE"
set +e
node e2e/newuser.mjs "$BASE" "$TMP/state.json" | tee "$TMP/newuser.log"
NODE_RC=${PIPESTATUS[0]}
set -e
LINE=$(grep -E '^newuser: [0-9]+ passed, [0-9]+ failed$' "$TMP/newuser.log" | tail -n1 || true)
if [[ -n $LINE ]]; then
	read -r NP NF < <(sed -E 's/^newuser: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$LINE")
	PASS=$((PASS + NP))
	FAIL=$((FAIL + NF))
	((NF == 0)) || FAILED+=("newuser.mjs: $NF check(s), see above")
fi
if ((NODE_RC != 0)) && { [[ -z $LINE ]] || ((NF == 0)); }; then
	bad "node e2e/newuser.mjs exited with status $NODE_RC"
fi

echo
echo "== (c) curl and Python requests with the new user's key"
if [[ -s $TMP/state.json ]] && KEY=$(json "$TMP/state.json" "b['client_key']") && [[ $KEY == pct-* ]]; then
	MASTER=$(json "$TMP/state.json" "b['master_key']")
	ENTRIES=$(json "$TMP/state.json" "b['chat_entries']")
	AUTH=(-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')

	req POST /api/chat/completions "${AUTH[@]}" \
		--data '{"model":"perceptron/dev","messages":[{"role":"user","content":"What is the capital of France?"}],"stream":false}'
	jcheck "curl POST /api/chat/completions: a completion with usage" 200 "
b['object'] == 'chat.completion' and b['model'] == 'perceptron/dev'
and b['choices'][0]['message']['role'] == 'assistant' and len(b['choices'][0]['message']['content']) > 0
and b['choices'][0]['finish_reason'] == 'stop'
and b['usage']['total_tokens'] == b['usage']['prompt_tokens'] + b['usage']['completion_tokens'] > 0"

	req POST /api/v1/chat/completions "${AUTH[@]}" -N \
		--data '{"model":"perceptron/dev","messages":[{"role":"user","content":"What is the capital of France?"}],"stream":true}'
	if [[ $STATUS != 200 ]]; then
		bad "curl POST /api/v1/chat/completions stream:true" "HTTP $STATUS: $(head -c 600 "$BODY")"
	elif out=$(python3 - "$BODY" "$HDRS" 2>&1 <<'PY'
import json, sys
body, hdrs = sys.argv[1:3]
ct = [l.split(":", 1)[1].strip() for l in open(hdrs) if l.lower().startswith("content-type:")]
assert ct and ct[-1].startswith("text/event-stream"), f"content-type {ct}"
events = [l[len("data: "):] for l in open(body).read().split("\n") if l.startswith("data: ")]
assert events and events[-1] == "[DONE]", f"does not end with [DONE]: {events[-3:]}"
chunks = [json.loads(e) for e in events[:-1]]
assert len(chunks) >= 3, f"{len(chunks)} chunks"
assert all(c["object"] == "chat.completion.chunk" and c["model"] == "perceptron/dev" for c in chunks)
text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
assert text, "no content"
u = chunks[-1].get("usage")
assert u and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0, f"last chunk {chunks[-1]}"
PY
	); then
		ok "curl POST /api/v1/chat/completions stream:true: SSE chunks, usage last, then [DONE]"
	else
		bad "curl POST /api/v1/chat/completions stream:true" "$out"
	fi

	# Python requests, as the API reference's examples use it: the
	# example's non-streamed call, and a stream read line by line.
	if out=$(python3 - "$BASE" "$KEY" 2>&1 <<'PY'
import json, sys
import requests
base, key = sys.argv[1:3]
response = requests.post(
    base + "/api/v1/chat/completions",
    headers={"Authorization": "Bearer " + key},
    json={
        "model": "perceptron/dev",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": False,
    },
)
assert response.status_code == 200, (response.status_code, response.text)
b = response.json()
assert b["object"] == "chat.completion" and b["model"] == "perceptron/dev", b
assert b["choices"][0]["message"]["content"], b
assert b["usage"]["total_tokens"] == b["usage"]["prompt_tokens"] + b["usage"]["completion_tokens"] > 0, b
with requests.post(
    base + "/api/v1/chat/completions",
    headers={"Authorization": "Bearer " + key},
    json={
        "model": "perceptron/dev",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": True,
    },
    stream=True,
) as r:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
    events = [line[len(b"data: "):].decode() for line in r.iter_lines() if line.startswith(b"data: ")]
assert events[-1] == "[DONE]", events[-3:]
chunks = [json.loads(e) for e in events[:-1]]
text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
assert text, chunks
u = chunks[-1]["usage"]
assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0, chunks[-1]
print(f"{len(chunks)} chunks, {u['total_tokens']} tokens")
PY
	); then
		ok "python requests: the reference's example completion, and a stream read with iter_lines ($out)"
	else
		bad "python requests: completion and stream" "$out"
	fi

	req POST /api/v1/chat/completions "${AUTH[@]}" \
		--data '{"model":"no/such-model","messages":[{"role":"user","content":"hi"}],"stream":true}'
	errcheck "curl stream:true with an unknown model -> plain 400 JSON" 400 \
		"invalid model 'no/such-model'. Available models: perceptron/dev"

	# The ledger's exact entries add up to the exact balance; shown cents
	# are that rounded down, and shown amounts add up to the shown balance.
	req GET /api/credits/history -H "Authorization: Bearer $KEY"
	jcheck "GET /api/credits/history: four more ChatInference entries (exact negative micro-cents), shown cents add up" 200 "
len([t for t in b['transactions'] if t['tx_type'] == 'ChatInference']) == $ENTRIES + 4
and all(t['amount_micro_cents'] < 0 and t['status'] == 'Completed' for t in b['transactions'] if t['tx_type'] == 'ChatInference')
and sum(t['amount'] for t in b['transactions']) == sum(t['amount_micro_cents'] for t in b['transactions']) // 1000000"
	EXACT=$(json "$BODY" "sum(t['amount_micro_cents'] for t in b['transactions'])" 2>/dev/null || echo 0)

	req GET /api/credits/balance -H "Authorization: Bearer $KEY"
	jcheck "GET /api/credits/balance is the exact balance ($EXACT micro-cents) rounded down" 200 \
		"b['balance'] == $EXACT // 1000000 and b['balance'] < 2500 and b['currency'] == 'USD_CENTS'"

	req GET /api/metrics/summary -H "Authorization: Bearer $MASTER"
	jcheck "GET /api/metrics/summary counts the curl and Python requests too" 200 "b['total_requests_24h'] >= $ENTRIES + 4"
else
	bad "newuser.mjs left no client key for the curl chat checks"
fi

echo
echo "== (c2) domains: reserve, assign, connect through perceptron frontend, reach a local server via the ingress"
INGRESS=$(sed -n 's#^Ingress for \*\.pct\.site listening on \(http://[^ ]*\).*#\1#p' "$TMP/server.out" | head -n1)
if [[ -n $KEY && -n $INGRESS ]] && go build -o "$TMP/perceptron" ./cmd/perceptron; then
	ok "go build ./cmd/perceptron; the ingress is at $INGRESS"
	AUTH=(-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')
	# A local web server on a free port of the range 10000-10099.
	mkdir -p "$TMP/site" && MARK="e2e-site-$RANDOM$RANDOM" && echo "<p>$MARK</p>" >"$TMP/site/index.html"
	PORT=$(python3 -c 'import socket
for p in range(10000, 10100):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); s.close(); print(p); break
    except OSError:
        pass')
	python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$TMP/site" >/dev/null 2>&1 &
	ORIGIN_PID=$!
	for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break; sleep 0.1; done
	NAME="e2e$RANDOM"
	RELEASED=

	req POST /api/domains/reserve "${AUTH[@]}" --data "{\"subdomain\":\"$NAME\"}"
	jcheck "POST /api/domains/reserve $NAME: the first hour charged" 200 "
b['subdomain'] == '$NAME' and b['full_domain'] == '$NAME.pct.site' and b['hourly_cost_cents'] == 10 and b['prepaid_until'] > 0"
	DOMAIN_ID=$(json "$BODY" "b['id']" 2>/dev/null)
	req POST /api/domains/reserve "${AUTH[@]}" --data '{"subdomain":"a"}'
	errcheck "POST /api/domains/reserve a -> 400" 400 "subdomain must be at least 2 characters"
	req POST "/api/domains/$DOMAIN_ID/tunnel-token" "${AUTH[@]}"
	errcheck "tunnel-token before a port -> 400" 400 "assign a port before connecting the tunnel"
	req POST "/api/domains/$DOMAIN_ID/assign" "${AUTH[@]}" --data "{\"port\":$PORT}"
	jcheck "POST /api/domains/{id}/assign $PORT" 200 "b == {'status': 'assigned', 'port': $PORT}"
	req POST "/api/domains/$DOMAIN_ID/tunnel-token" "${AUTH[@]}"
	jcheck "POST /api/domains/{id}/tunnel-token: a JWT for 5 minutes" 200 "
b['tunnel_token'].startswith('eyJ') and b['subdomain'] == '$NAME' and b['local_port'] == $PORT"

	PERCEPTRON_API_KEY=$KEY "$TMP/perceptron" frontend -api "$BASE" -addr 127.0.0.1:0 -token-file "$TMP/front.json" >"$TMP/front.out" 2>"$TMP/front.err" &
	FRONT_PID=$!
	FRONT=
	for _ in $(seq 100); do
		FRONT=$(sed -n 's#^Perceptron frontend listening on \(http://[^ ]*\).*#\1#p' "$TMP/front.out" | head -n1)
		[[ -n $FRONT ]] && break
		sleep 0.1
	done
	if [[ -n $FRONT ]]; then
		ok "perceptron frontend -api $BASE up at $FRONT"
		# Only its user: the per-run secret from its token file (mode 0600).
		FH=(-H "Perceptron-Frontend-Token: $(json "$TMP/front.json" "b['token']")")
		if [[ $(stat -c %a "$TMP/front.json") == 600 ]]; then ok "the frontend's token file is mode 0600"; else bad "the frontend's token file is mode 0600" "$(stat -c %a "$TMP/front.json")"; fi
		SAVED=$BASE
		BASE=$FRONT
		req POST "/api/domains/$DOMAIN_ID/connect"
		jcheck "frontend refuses a request without its secret: 403" 403 "'secret' in b['error']['message']"
		req GET /api/domains "${FH[@]}" -H "Host: evil.example:${FRONT##*:}"
		jcheck "frontend refuses a foreign Host (DNS rebinding): 421" 421 "b['error']['message'] != ''"
		req POST /api/keys/new "${FH[@]}" -H "Origin: http://127.0.0.1:8000" -H 'Content-Type: text/plain' --data '{"name":"cross-site"}'
		jcheck "frontend refuses a cross-site Origin: 403" 403 "b['error']['message'] == 'cross-site requests are refused'"
		SIGNIN=$(sed -n 's#^Open \(http://[^ ]*\) in your browser.*#\1#p' "$TMP/front.out" | head -n1)
		code=$(curl -sS -o /dev/null -w '%{http_code}' -c "$TMP/front.cookies" "$SIGNIN")
		STATUS=$(curl -sS -o "$BODY" -D "$HDRS" -w '%{http_code}' -b "$TMP/front.cookies" "$FRONT/api/domains/tunnels/status") || STATUS=000
		if [[ $code == 303 ]]; then jcheck "the printed URL ($FRONT/?token=...) signs a browser in with a cookie" 200 "b == {'tunnels': []}"; else bad "the printed URL signs a browser in" "$code"; fi
		req POST "/api/domains/$DOMAIN_ID/connect" "${FH[@]}"
		jcheck "frontend POST /api/domains/{id}/connect" 200 "b == {'status': 'connected'}"
		req GET /api/domains "${FH[@]}"
		jcheck "frontend passes GET /api/domains to the platform with the key: tunnel_active" 200 "
[d['tunnel_active'] for d in b['domains'] if d['id'] == '$DOMAIN_ID'] == [True]"
		BASE=$SAVED
		out=$(curl -sS --max-time 10 -H "Host: $NAME.pct.site" "$INGRESS/" 2>&1)
		if [[ $out == *"$MARK"* ]]; then ok "curl -H 'Host: $NAME.pct.site' $INGRESS/ reaches the local server"; else bad "curl through the ingress" "$out"; fi
		out=$(python3 -c 'import requests, sys
r = requests.get(sys.argv[1] + "/index.html", headers={"Host": sys.argv[2]}, timeout=10)
print(r.status_code, r.text.strip())' "$INGRESS" "$NAME.pct.site" 2>&1)
		if [[ $out == "200 <p>$MARK</p>" ]]; then ok "python requests through the ingress"; else bad "python requests through the ingress" "$out"; fi
		BASE=$FRONT
		req GET /api/domains/tunnels/status "${FH[@]}"
		jcheck "frontend GET /api/domains/tunnels/status" 200 "
len(b['tunnels']) == 1 and b['tunnels'][0]['domain_id'] == '$DOMAIN_ID' and b['tunnels'][0]['connected'] is True
and b['tunnels'][0]['full_domain'] == '$NAME.pct.site' and b['tunnels'][0]['local_port'] == $PORT
and b['tunnels'][0]['requests'] >= 1 and b['tunnels'][0]['bytes_out'] > 0 and b['tunnels'][0]['since'] > 0
and b['tunnels'][0]['state'] == 'connected'"
		req POST "/api/domains/$DOMAIN_ID/disconnect" "${FH[@]}"
		jcheck "frontend POST /api/domains/{id}/disconnect" 200 "b == {'status': 'disconnected'}"
		BASE=$SAVED
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $NAME.pct.site" "$INGRESS/")
		if [[ $code == 502 ]]; then ok "after disconnect the ingress answers 502"; else bad "after disconnect the ingress answers 502" "$code"; fi
		# Released while connected: the frontend stops retrying and says so.
		BASE=$FRONT
		req POST "/api/domains/$DOMAIN_ID/connect" "${FH[@]}"
		jcheck "frontend connects the domain again" 200 "b == {'status': 'connected'}"
		BASE=$SAVED
		req POST /api/domains/release "${AUTH[@]}" --data "{\"domain_id\":\"$DOMAIN_ID\"}"
		jcheck "POST /api/domains/release while the tunnel is connected" 200 "b == {'status': 'released'}"
		RELEASED=1
		BASE=$FRONT
		for _ in $(seq 100); do
			req GET /api/domains/tunnels/status "${FH[@]}"
			grep -q '"state":"gone"' "$BODY" && break
			sleep 0.1
		done
		tries=$(grep -c 'tunnel' "$TMP/front.err" || true)
		sleep 3 # a gone domain is not retried: nothing more in the log, however long
		jcheck "after the release the frontend's status says gone with the platform's message" 200 "
b['tunnels'][0]['state'] == 'gone' and b['tunnels'][0]['connected'] is False and 'domain not found' in b['tunnels'][0]['last_error']"
		n=$(grep -c 'tunnel stopped' "$TMP/front.err" || true)
		if [[ $n == 1 && $(grep -c 'tunnel' "$TMP/front.err" || true) == "$tries" ]]; then ok "the frontend logs the stop once and retries no more"; else bad "the frontend logs the stop once" "$n: $(tail -n 5 "$TMP/front.err")"; fi
		BASE=$SAVED
		kill -TERM "$FRONT_PID"
		if wait "$FRONT_PID"; then ok "the frontend stops cleanly on SIGTERM"; else bad "the frontend stops cleanly on SIGTERM" "$(cat "$TMP/front.err")"; fi
		FRONT_PID=
	else
		bad "perceptron frontend did not start" "$(cat "$TMP/front.out" "$TMP/front.err")"
	fi
	if [[ -z $RELEASED ]]; then
		req POST /api/domains/release "${AUTH[@]}" --data "{\"domain_id\":\"$DOMAIN_ID\"}"
		jcheck "POST /api/domains/release" 200 "b == {'status': 'released'}"
	fi
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $NAME.pct.site" "$INGRESS/")
	if [[ $code == 404 ]]; then ok "a released name answers 404 at the ingress"; else bad "a released name answers 404" "$code"; fi
	# Request smuggling: raw bytes a front proxy framing by Content-Length
	# would read differently; the ingress refuses each with 400.
	for c in cl-te fold port99999 emptyport; do
		line=$(python3 - "$INGRESS" "$NAME.pct.site" "$c" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1]); host = sys.argv[2]
raw = {
    "cl-te": f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "fold": f"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "port99999": f"GET / HTTP/1.1\r\nHost: {host}:99999\r\n\r\n",
    "emptyport": f"GET / HTTP/1.1\r\nHost: {host}:\r\n\r\n",
}[sys.argv[3]]
s = socket.create_connection((u.hostname, u.port), timeout=5)
s.sendall(raw.encode())
print(s.recv(4096).split(b"\r\n")[0].decode())
PY
)
		if [[ $line == "HTTP/1.1 400 "* ]]; then ok "the ingress refuses ambiguous framing ($c): 400"; else bad "the ingress refuses ambiguous framing ($c)" "$line"; fi
	done
	req GET /api/credits/history -H "Authorization: Bearer $KEY"
	jcheck "GET /api/credits/history: one Domain charge of 10 cents" 200 "
[t['amount'] for t in b['transactions'] if t['tx_type'] == 'Domain'] == [-10]"
	kill -TERM "$ORIGIN_PID" 2>/dev/null; ORIGIN_PID=
else
	bad "domains: no key from (b) or no ingress line in the server's output" "$(cat "$TMP/server.out")"
fi

echo
echo "== (c3) the news feed: subscribe, read, filter, page with before, status, charges"
if [[ -n $KEY ]]; then
	AUTH=(-H "Authorization: Bearer $KEY")
	req GET /api/feeds/news/categories
	jcheck "GET /api/feeds/news/categories (no auth): the seven categories" 200 "
[c['id'] for c in b['categories']] == ['crypto', 'politics', 'economics', 'technology', 'regulatory', 'entertainment', 'sports']"
	req GET /api/feeds/news "${AUTH[@]}"
	errcheck "GET /api/feeds/news before subscribing -> 403" 403 "news feed subscription required"
	req POST /api/feeds/news/subscribe "${AUTH[@]}"
	jcheck "POST /api/feeds/news/subscribe: the first hour charged" 200 "b['status'] == 'subscribed' and b['hourly_cost_cents'] == 10 and b['prepaid_until'] > 0"
	req POST /api/feeds/news/subscribe "${AUTH[@]}"
	errcheck "subscribing twice -> 409" 409 "already subscribed to news feed"
	req GET "/api/feeds/news?limit=100" "${AUTH[@]}"
	jcheck "GET /api/feeds/news: at least 20 items in at least 3 categories, newest first, words within limits" 200 "
len(b['items']) >= 20 and len({i['category'] for i in b['items']}) >= 3
and all(len(i['headline'].split()) <= 15 and len(i['summary'].split()) <= 40 for i in b['items'])
and [i['timestamp'] for i in b['items']] == sorted([i['timestamp'] for i in b['items']], reverse=True)"
	ITEM=$(json "$BODY" "b['items'][0]['id']" 2>/dev/null)
	TOTAL=$(json "$BODY" "len(b['items'])" 2>/dev/null || echo 0)
	req GET "/api/feeds/news?category=crypto" "${AUTH[@]}"
	jcheck "GET /api/feeds/news?category=crypto: crypto only" 200 "len(b['items']) > 0 and all(i['category'] == 'crypto' for i in b['items'])"
	req GET "/api/feeds/news?category=gardening" "${AUTH[@]}"
	errcheck "an unknown category -> 400" 400 "invalid category: see GET /api/feeds/news/categories"
	req GET "/api/feeds/news/$ITEM" "${AUTH[@]}"
	jcheck "GET /api/feeds/news/{id}" 200 "b['id'] == '$ITEM' and b['headline'] and b['source']"
	req GET "/api/feeds/news/tweet-0" "${AUTH[@]}"
	errcheck "GET /api/feeds/news/{unknown id} -> 404" 404 "not found"
	out=$(python3 -c 'import requests, sys
base, key = sys.argv[1], sys.argv[2]
h = {"Authorization": "Bearer " + key}
seen, before, pages = [], None, 0
while pages < 50:
    params = {"limit": 4}
    if before is not None:
        params["before"] = before
    items = requests.get(base + "/api/feeds/news", headers=h, params=params, timeout=10).json()["items"]
    if not items:
        break
    seen += [i["id"] for i in items]
    before = items[-1]["timestamp"]
    pages += 1
print(len(seen), len(set(seen)), pages)' "$BASE" "$KEY" 2>&1)
	if [[ $out == "$TOTAL $TOTAL "* ]]; then ok "python requests pages with before, 4 at a time: every item once ($out: items, distinct, pages)"; else bad "paging with before" "$out (want $TOTAL items)"; fi
	req GET /api/feeds/news/status "${AUTH[@]}"
	jcheck "GET /api/feeds/news/status: Active" 200 "b['feed_type'] == 'news' and b['status'] == 'Active' and b['hourly_cost'] == 10 and b['prepaid_until'] > b['subscribed_at'] > 0"
	req GET /api/credits/history "${AUTH[@]}"
	jcheck "GET /api/credits/history: one NewsFeed charge of 10 cents" 200 "[t['amount'] for t in b['transactions'] if t['tx_type'] == 'NewsFeed'] == [-10]"
	req POST /api/feeds/news/unsubscribe "${AUTH[@]}"
	jcheck "POST /api/feeds/news/unsubscribe" 200 "b == {'status': 'unsubscribed'}"
	req GET /api/feeds/news/status "${AUTH[@]}"
	jcheck "GET /api/feeds/news/status after unsubscribing: Inactive" 200 "b['status'] == 'Inactive'"
else
	bad "feeds: no key from (b)"
fi

echo
echo "== (c4) personas: create, talk over the stream with wscat, see the reply and its charge"
if [[ -n $KEY && -x e2e/node_modules/.bin/wscat ]]; then
	AUTH=(-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')
	req GET /api/personas/personalities
	jcheck "GET /api/personas/personalities (no auth): jensen and five more" 200 "
b['personalities'][0]['id'] == 'jensen' and len(b['personalities']) >= 6 and all('system' not in p for p in b['personalities'])"
	req POST /api/personas/new "${AUTH[@]}" --data '{"personality_id":"jensen","name":"My Jensen"}'
	jcheck "POST /api/personas/new" 200 "b['personality_id'] == 'jensen' and b['name'] == 'My Jensen' and b['id']"
	PERSONA=$(json "$BODY" "b['id']" 2>/dev/null)
	req POST "/api/personas/$PERSONA/sessions" "${AUTH[@]}" --data '{"name":"Evening chats"}'
	jcheck "POST /api/personas/{id}/sessions" 200 "b['persona_id'] == '$PERSONA' and b['name'] == 'Evening chats'"
	SESSION=$(json "$BODY" "b['id']" 2>/dev/null)
	req GET /api/personas -H "Authorization: Bearer $MASTER"
	errcheck "GET /api/personas with a master key -> 403" 403 "master API keys are not authorized for this operation; use a client API key"
	WS=${BASE/http:/ws:}
	# wscat exits when its standard input ends: keep it open while it works.
	out=$(sleep 8 | timeout 30 e2e/node_modules/.bin/wscat --no-color -c "$WS/api/personas/$PERSONA/sessions/$SESSION/stream?token=$KEY" \
		-x '{"type":"message","content":"Hello!"}' -w 4 2>&1)
	if grep -q '"role":"assistant"' <<<"$out" && grep -q '"status":"complete"' <<<"$out" && grep -q '"type":"delta"' <<<"$out"; then
		ok "wscat: the user's message, the reply's deltas and the complete reply arrive over the stream"
	else
		bad "wscat over the stream" "$out"
	fi
	req GET "/api/personas/$PERSONA/sessions/$SESSION/messages" "${AUTH[@]}"
	jcheck "GET .../messages: Hello! and its complete reply, chronological" 200 "
[m['role'] for m in b['messages']] == ['user', 'assistant'] and b['messages'][0]['content'] == 'Hello!'
and b['messages'][1]['status'] == 'complete' and b['has_more'] is False"
	req POST "/api/personas/$PERSONA/sessions/$SESSION/messages/new" "${AUTH[@]}" --data '{"content":"Tell me about GPUs."}'
	jcheck "POST .../messages/new -> 202 with the message ID" 202 "len(b['message_id']) == 36"
	req GET /api/credits/history -H "Authorization: Bearer $KEY"
	jcheck "GET /api/credits/history: a ChatInference charge naming the persona" 200 "
any(t['tx_type'] == 'ChatInference' and 'persona My Jensen' in t['description'] and t['amount_micro_cents'] < 0 for t in b['transactions'])"
	req DELETE "/api/personas/$PERSONA" "${AUTH[@]}"
	jcheck "DELETE /api/personas/{id}" 200 "b == {'status': 'deleted'}"
else
	bad "personas: no key from (b), or e2e/node_modules/.bin/wscat missing"
fi

echo
echo "== (c5) speech-to-text: curl -F and the openai npm client, charges and metrics"
WAV=inference/audio/testdata/speech.wav
if [[ -n $KEY && -f $WAV ]]; then
	req POST /api/v1/audio/transcriptions -H "Authorization: Bearer $KEY" -F "file=@$WAV" -F model=perceptron/dev-stt
	jcheck "curl -F file=@speech.wav -F model=perceptron/dev-stt: a transcript" 200 "b['text'].startswith('Perceptron dev transcript')"
	req POST /api/audio/transcriptions -H "Authorization: Bearer $KEY" -F "file=@$WAV" -F model=perceptron/dev-stt -F response_format=text
	if [[ $STATUS == 200 ]] && grep -q "dev transcript" "$BODY" && grep -qi "content-type: text/plain" "$HDRS"; then
		ok "POST /api/audio/transcriptions response_format=text: text/plain"
	else
		bad "response_format=text" "HTTP $STATUS $(head -c 200 "$BODY")"
	fi
	req POST /api/v1/audio/transcriptions -H "Authorization: Bearer $KEY" -F "file=@e2e/package.json" -F model=perceptron/dev-stt
	errcheck "a JSON file is not audio -> 400" 400 "could not read the audio file: unsupported audio format: send wav, mp3, flac, ogg (opus), webm or m4a"
	req POST /api/v1/audio/transcriptions -H "Authorization: Bearer $KEY" -F "file=@$WAV" -F model=whisper-9
	errcheck "an unknown STT model -> 400 listing the STT models" 400 "invalid model 'whisper-9'. Available STT models: perceptron/dev-stt"
	if out=$(node e2e/stt.mjs "$BASE" "$KEY" "$WAV" 2>&1); then
		ok "openai npm client: audio.transcriptions.create, json and verbose_json (duration 2.5), an unknown model refused (${out:0:60}...)"
	else
		bad "openai npm client: audio.transcriptions.create" "$out"
	fi
	req GET /api/models
	jcheck "GET /api/models lists the STT model, priced per hour" 200 "
any(m['id'] == 'perceptron/dev-stt' and m['type'] == 'stt' and m['pricing']['cents_per_hour'] == 36 for m in b['data'])
and all(m['type'] == 'chat' for m in b['data'] if m['id'] == 'perceptron/dev')"
	req GET /api/credits/history -H "Authorization: Bearer $KEY"
	jcheck "GET /api/credits/history: four SttInference charges of 3 s (curl twice, openai twice)" 200 "
[t['amount_micro_cents'] for t in b['transactions'] if t['tx_type'] == 'SttInference'] == [-30000, -30000, -30000, -30000]
and all('3 s of wav audio' in t['description'] for t in b['transactions'] if t['tx_type'] == 'SttInference')"
	req GET /api/metrics/summary -H "Authorization: Bearer $MASTER"
	jcheck "GET /api/metrics/summary: the stt line" 200 "any(c['service'] == 'stt' and c['cost_cents'] >= 1 for c in b['cost_by_service'])"
else
	bad "speech-to-text: no key from (b), or no $WAV"
fi

echo
echo "== (d) SQLite: a new user's charges survive kill -9"
# The SQLite store keeps holds in memory and journals settlements before
# writing them into the database in batches: every charge a client saw
# must be in the history after the process is killed without warning.
kill -TERM "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
DB=$TMP/perceptron.db
start_server "sqlite:$DB"
set +e
node e2e/newuser.mjs "$BASE" "$TMP/state2.json" >"$TMP/newuser2.log" 2>&1
NODE_RC=$?
set -e
if ((NODE_RC != 0)) || ! [[ -s $TMP/state2.json ]]; then
	bad "node e2e/newuser.mjs against -db sqlite: (exit $NODE_RC)" "$(tail -n 15 "$TMP/newuser2.log")"
else
	ok "node e2e/newuser.mjs against -db sqlite: ($(tail -n1 "$TMP/newuser2.log"))"
	KEY=$(json "$TMP/state2.json" "b['client_key']")
	ENTRIES=$(json "$TMP/state2.json" "b['chat_entries']")
	AUTH=(-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json')
	req GET /api/credits/balance -H "Authorization: Bearer $KEY"
	BEFORE=$(json "$BODY" "b['balance']" 2>/dev/null || echo 0)
	N=40
	GOT=0
	for i in $(seq $N); do
		req POST /api/v1/chat/completions "${AUTH[@]}" \
			--data "{\"model\":\"perceptron/dev\",\"messages\":[{\"role\":\"user\",\"content\":\"count to $i\"}]}"
		[[ $STATUS == 200 ]] && GOT=$((GOT + 1))
		# The last answer is followed at once by kill -9: its settlement,
		# and maybe others, is then only in the journal.
		((i == N)) && kill -KILL "$SERVER_PID"
	done
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
	if ((GOT == N)); then ok "$N completions on SQLite"; else bad "$N completions on SQLite" "$GOT succeeded"; fi
	INDB=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from entries where type = ?", ("ChatInference",)).fetchone()[0])' "$DB" 2>/dev/null || echo '?')
	ok "server killed with SIGKILL right after the last answer ($INDB of $((ENTRIES + N)) charges were in the database, the rest only in the journal)"
	start_server "sqlite:$DB"
	req GET /api/credits/history -H "Authorization: Bearer $KEY"
	jcheck "after the restart, history has every charge ($ENTRIES + $N ChatInference entries), exact amounts add up" 200 "
len([t for t in b['transactions'] if t['tx_type'] == 'ChatInference']) == $ENTRIES + $N
and all(t['amount_micro_cents'] < 0 for t in b['transactions'] if t['tx_type'] == 'ChatInference')
and sum(t['amount'] for t in b['transactions']) == sum(t['amount_micro_cents'] for t in b['transactions']) // 1000000"
	EXACT=$(json "$BODY" "sum(t['amount_micro_cents'] for t in b['transactions'])" 2>/dev/null || echo 0)
	req GET /api/credits/balance -H "Authorization: Bearer $KEY"
	jcheck "after the restart, the balance is the exact entries' sum, at most what it was before the $N completions ($BEFORE)" 200 \
		"b['balance'] == $EXACT // 1000000 and b['balance'] <= $BEFORE"
	"$TMP/perceptron-server" -dev -db "sqlite:$DB" -addr 127.0.0.1:0 -ingress-addr 127.0.0.1:0 >"$TMP/second.out" 2>&1 &
	SECOND=$!
	sleep 1
	if kill -0 "$SECOND" 2>/dev/null; then
		kill -KILL "$SECOND"
		bad "a second server on the same SQLite file is refused" "it kept running"
	elif grep -q "in use by another process" "$TMP/second.out"; then
		ok "a second server on the same SQLite file is refused: $(grep -o 'sqlite: .*in use by another process' "$TMP/second.out" | head -c 120)"
	else
		bad "a second server on the same SQLite file is refused" "$(cat "$TMP/second.out")"
	fi
fi

summary
((FAIL == 0))
