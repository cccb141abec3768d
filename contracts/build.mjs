// Compiles contracts/src with the pinned solc-js and writes one artifact per deployable contract
// (ABI + bytecode) to keeper/protocol/artifacts/. With --check it writes nothing and exits 1 when
// the committed artifacts differ from what the sources compile to.
import { createRequire } from "node:module";
import { readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync, statSync } from "node:fs";
import { join, relative, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const sourceDir = join(root, "contracts", "src");
const artifactDir = join(root, "keeper", "protocol", "artifacts");
const EVM_VERSION = "cancun";

function solidityFiles(dir) {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return solidityFiles(path);
      return name.endsWith(".sol") ? [path] : [];
    });
}

function compile() {
  const sources = {};
  for (const path of solidityFiles(sourceDir)) {
    sources[relative(sourceDir, path)] = { content: readFileSync(path, "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      evmVersion: EVM_VERSION,
      optimizer: { enabled: true, runs: 200 },
      viaIR: true,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: (p) => ({ error: `no import ${p}` }) }));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const message of output.errors ?? []) console.error(message.formattedMessage);
  if (errors.length > 0) process.exit(2);

  const artifacts = {};
  for (const [file, contracts] of Object.entries(output.contracts)) {
    for (const [name, contract] of Object.entries(contracts)) {
      // Deployable contracts live at the top of src/; interfaces/ and libraries/ are support code.
      if (file.includes("/") || !contract.evm.bytecode.object) continue;
      artifacts[name] = {
        contractName: name,
        sourceName: file,
        compiler: `solc ${solc.version()} evm ${EVM_VERSION} optimizer 200 via-ir`,
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
      };
    }
  }
  return artifacts;
}

const check = process.argv.includes("--check");
const artifacts = compile();
const stale = [];
mkdirSync(artifactDir, { recursive: true });
for (const [name, artifact] of Object.entries(artifacts).sort()) {
  const path = join(artifactDir, `${name}.json`);
  const text = `${JSON.stringify(artifact, null, 2)}\n`;
  const current = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (current === text) continue;
  if (check) stale.push(name);
  else writeFileSync(path, text);
}
const expected = new Set(Object.keys(artifacts).map((name) => `${name}.json`));
const orphans = readdirSync(artifactDir).filter((f) => f.endsWith(".json") && !expected.has(f));
if (check) {
  if (stale.length || orphans.length) {
    console.error(`stale artifacts: ${[...stale, ...orphans].join(", ")}; run 'make contracts' and commit them`);
    process.exit(1);
  }
  console.log(`artifacts match sources (${expected.size} contracts)`);
} else {
  if (orphans.length) console.error(`artifacts with no source, delete them: ${orphans.join(", ")}`);
  console.log(`compiled ${expected.size} contracts into ${relative(root, artifactDir)}`);
}
