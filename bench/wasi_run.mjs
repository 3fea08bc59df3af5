// wasi_run.mjs - runs a wasm32-wasi command (a C program built with clang --target=wasm32-wasi)
// in Node's WASI, with its arguments: bench_wasm_wasi.sh runs bench_wasm_native.c this way.
// Usage: node bench/wasi_run.mjs PROGRAM.wasm [ARGS...]
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(readFileSync(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
