// helpers.js - what the tests share: crdt.wasm's and wasm_vectors' locations, hex, a seeded PRNG
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { CrdtWasm } from '../crdt-wasm.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

function locate(env, fallback, how) {
  const p = process.env[env] || path.join(root, fallback);
  if (!existsSync(p)) throw new Error(`${p} is missing: ${how} (or set ${env})`);
  return p;
}

/** build-wasm/crdt.wasm, or $CRDT_WASM. */
export const wasmPath = () => locate('CRDT_WASM', 'build-wasm/crdt.wasm', 'run scripts/build-wasm.sh');

/** The native vector generator, build/tests/wasm_vectors, or $CRDT_WASM_VECTORS. */
export const vectorsPath = () =>
  locate('CRDT_WASM_VECTORS', 'build/tests/wasm_vectors', 'build the native tree (cmake --build build)');

export const wasmBytes = () => readFileSync(wasmPath());

let shared;
/** One loaded module for a test file. */
export async function loadWasm() {
  shared ??= await CrdtWasm.load(wasmBytes(), { countHeap: true });
  return shared;
}

export function hex(u8) {
  return Buffer.from(u8).toString('hex');
}

export function unhex(s) {
  return s === '-' ? new Uint8Array(0) : new Uint8Array(Buffer.from(s, 'hex'));
}

/** The seed of a randomised test: $CRDT_SEED or the clock; printed so a failure can be replayed. */
export function seedFromEnv(t) {
  const s = process.env.CRDT_SEED ? Number(process.env.CRDT_SEED) : Date.now() % 1e9;
  t.diagnostic(`seed ${s} (replay with CRDT_SEED=${s})`);
  return s;
}

/** mulberry32: a small seeded PRNG for test cases. */
export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.below = (n) => Math.floor(next() * n);
  next.pick = (arr) => arr[Math.floor(next() * arr.length)];
  next.shuffle = (arr) => {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [arr[i], arr[j]] = [arr[j], arr[i]];
    }
    return arr;
  };
  return next;
}
