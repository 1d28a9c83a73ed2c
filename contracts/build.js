#!/usr/bin/env node
// Compile contracts/solidity/**/*.sol with the pinned npm `solc` (solcjs) through its standard-JSON API
// and write contracts/artifacts/<Contract>.json (abi, bytecode, deployedBytecode).
//
// Why a script and not the solcjs CLI: the CLI cannot set the EVM version, and we need `shanghai`
// (it runs on py-evm, anvil and ganache alike). Output is deterministic (sorted keys, 2-space JSON,
// relative source names) so the committed artifacts can be checked: `node contracts/build.js --check`
// recompiles in memory and exits 1 when any artifact differs from the committed one.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SOURCE_DIR = path.join(__dirname, "solidity");
const ARTIFACT_DIR = path.join(__dirname, "artifacts");
const EXPECTED_SOLC = "0.8.28";
const SETTINGS = {
  evmVersion: "shanghai",
  optimizer: { enabled: true, runs: 200 },
  viaIR: false,
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function listSources(dir) {
  const found = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listSources(full));
    else if (entry.name.endsWith(".sol")) found.push(full);
  }
  return found.sort();
}

function findImport(importPath) {
  // OpenZeppelin (and any other package) imports resolve from the repo's node_modules only.
  const candidate = path.join(ROOT, "node_modules", importPath);
  if (!candidate.startsWith(path.join(ROOT, "node_modules") + path.sep)) {
    return { error: `import escapes node_modules: ${importPath}` };
  }
  if (!fs.existsSync(candidate)) return { error: `not found: ${importPath} (run npm ci)` };
  return { contents: fs.readFileSync(candidate, "utf8") };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

function compile() {
  const version = solc.version();
  if (!version.startsWith(EXPECTED_SOLC + "+")) {
    throw new Error(`solc ${version} found, ${EXPECTED_SOLC} pinned: run npm ci`);
  }
  const sources = {};
  for (const file of listSources(SOURCE_DIR)) {
    // Relative, forward-slash names: the metadata hash in the bytecode must not depend on the checkout.
    const name = path.relative(ROOT, file).split(path.sep).join("/");
    sources[name] = { content: fs.readFileSync(file, "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) throw new Error(`${errors.length} compilation error(s)`);

  const artifacts = {};
  for (const sourceName of Object.keys(sources)) {
    for (const [contractName, contract] of Object.entries(output.contracts[sourceName] || {})) {
      if (!contract.evm.bytecode.object) continue; // interfaces and abstract contracts
      if (artifacts[contractName]) throw new Error(`duplicate contract name ${contractName}`);
      artifacts[contractName] = sortKeys({
        contractName,
        sourceName,
        compiler: { name: "solc", version, settings: { ...SETTINGS, outputSelection: undefined } },
        abi: contract.abi,
        bytecode: "0x" + contract.evm.bytecode.object,
        deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
      });
    }
  }
  const rendered = {};
  for (const name of Object.keys(artifacts).sort()) {
    rendered[`${name}.json`] = JSON.stringify(artifacts[name], null, 2) + "\n";
  }
  return rendered;
}

function main() {
  const check = process.argv.includes("--check");
  const rendered = compile();
  if (check) {
    const existing = fs.existsSync(ARTIFACT_DIR)
      ? fs.readdirSync(ARTIFACT_DIR).filter((f) => f.endsWith(".json")).sort()
      : [];
    const problems = [];
    for (const [file, text] of Object.entries(rendered)) {
      const target = path.join(ARTIFACT_DIR, file);
      if (!fs.existsSync(target)) problems.push(`missing ${file}`);
      else if (fs.readFileSync(target, "utf8") !== text) problems.push(`differs ${file}`);
    }
    for (const file of existing) if (!rendered[file]) problems.push(`stale ${file}`);
    if (problems.length) {
      process.stderr.write(
        "contracts/artifacts are not what the sources compile to:\n  " +
          problems.join("\n  ") +
          "\nrun: node contracts/build.js\n",
      );
      process.exit(1);
    }
    process.stdout.write(`contracts/artifacts up to date (${Object.keys(rendered).length} artifacts)\n`);
    return;
  }
  fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
  for (const file of fs.readdirSync(ARTIFACT_DIR)) {
    if (file.endsWith(".json") && !rendered[file]) fs.unlinkSync(path.join(ARTIFACT_DIR, file));
  }
  for (const [file, text] of Object.entries(rendered)) fs.writeFileSync(path.join(ARTIFACT_DIR, file), text);
  process.stdout.write(`wrote ${Object.keys(rendered).join(", ")} to contracts/artifacts\n`);
}

main();
