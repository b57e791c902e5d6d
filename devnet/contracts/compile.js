// Compiles TestUSDT.sol with solc-js and writes TestUSDT.abi and TestUSDT.bin
// next to it. Not part of the Go build: the outputs are committed.
//
//   mkdir /tmp/solc && cd /tmp/solc && npm install solc@0.8.30
//   NODE_PATH=/tmp/solc/node_modules node devnet/contracts/compile.js
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const WANT = "0.8.30+commit.73712a01";
if (!solc.version().startsWith(WANT)) {
  throw new Error(`solc ${solc.version()}, want ${WANT}`);
}
const dir = __dirname;
const input = {
  language: "Solidity",
  sources: { "TestUSDT.sol": { content: fs.readFileSync(path.join(dir, "TestUSDT.sol"), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
const c = out.contracts["TestUSDT.sol"].TestUSDT;
fs.writeFileSync(path.join(dir, "TestUSDT.abi"), JSON.stringify(c.abi, null, 2) + "\n");
fs.writeFileSync(path.join(dir, "TestUSDT.bin"), c.evm.bytecode.object + "\n");
console.log(`compiled with solc ${solc.version()}: ${c.evm.bytecode.object.length / 2} bytes`);
