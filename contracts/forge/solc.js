#!/usr/bin/env node
// A `solc` for `forge --use`: forge never downloads a compiler (it cannot here), it runs this instead.
// Answers `--version` like the native binary and compiles `--standard-json` (stdin → stdout) with the
// pinned npm solcjs, resolving imports from the repository (node_modules for @openzeppelin).
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..", "..");

if (process.argv.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!process.argv.includes("--standard-json")) {
  process.stderr.write("this shim only answers --version and --standard-json\n");
  process.exit(2);
}

function findImport(importPath) {
  for (const base of [ROOT, path.join(ROOT, "node_modules")]) {
    const candidate = path.resolve(base, importPath);
    if (candidate.startsWith(ROOT + path.sep) && fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `not found: ${importPath}` };
}

const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImport }));
