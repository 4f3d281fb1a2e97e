// Runs a benchmark compiled to wasm32-wasip1 under Node's WASI, in V8 (the
// engine Envoy runs the module in):
//
//   node benches/run-wasi.mjs target/wasm32-wasip1/release/deps/codec-*.wasm --bench
//
// The program sees an empty temporary folder as "/" (criterion writes its
// reports there) and the arguments after the file. The crate's proxy-wasm
// adapter links host functions in; a bench never calls them, so each is a
// function that throws.
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WASI } from "node:wasi";

const [file, ...args] = process.argv.slice(2);
const root = await mkdtemp(join(tmpdir(), "bench-wasi-"));
try {
  const wasi = new WASI({ version: "preview1", args: [file, ...args], env: {}, preopens: { "/": root }, returnOnExit: true });
  const module = await WebAssembly.compile(await readFile(file));
  const imports = wasi.getImportObject();
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (from !== "env" || kind !== "function") continue;
    imports.env ??= {};
    imports.env[name] = () => {
      throw new Error(`host function ${name} called in a bench`);
    };
  }
  const instance = await WebAssembly.instantiate(module, imports);
  // The adapter also exports the module's `_initialize`, which WASI's
  // start() refuses beside `_start`: hand it only what a command has.
  const { _start, memory } = instance.exports;
  process.exitCode = wasi.start({ exports: { _start, memory } });
} finally {
  await rm(root, { recursive: true, force: true });
}
