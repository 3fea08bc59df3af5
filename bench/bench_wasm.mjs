// bench_wasm.mjs - the WebAssembly half of bench_wasm.sh: the workload of bench_wasm_native.c
// through the JavaScript replica (string members encoded to UTF-8, deltas copied out as
// Uint8Array, as an application sees them).
// One warm-up pass of min(N, 20000) first (untimed), then the timed one.
// Usage: node bench/bench_wasm.mjs CRDT_WASM N  -> "apply_ops_s X", "merge_ops_s Y" (wall clock),
// "apply_cpu_ops_s", "merge_cpu_ops_s" (per second of the process's CPU time),
// "apply_drop_cpu_ops_s" (the adds again, each delta dropped once made), "state_fnv Z", and the
// log variant's "apply_log_ops_s", "merge_log_ops_s", "apply_log_cpu_ops_s", "merge_log_cpu_ops_s",
// "log_fnv" (runLog below: the deltas appended to one byte buffer instead of kept as N objects),
// "keep_cpu_ns" (keep below: CPU ns of one kept 30-byte Uint8Array copied out of wasm memory)
import { readFileSync } from 'node:fs';
import { CrdtWasm, Replica } from '../gateway/client/js/crdt-wasm.js';

const [wasmFile, nArg] = process.argv.slice(2);
const n = Number(nArg ?? 200000);
const wasm = await CrdtWasm.load(readFileSync(wasmFile));
const fnv1a = (u8) => {
  let h = 2166136261;
  for (const c of u8) h = Math.imul(h ^ c, 16777619) >>> 0;
  return h.toString(16).padStart(8, '0');
};

function run(count) {
  const a = new Replica(wasm, { node: 1 });
  const b = new Replica(wasm, { node: 2 });
  const tl = a.timeline('feed', { maxSize: 1000 });
  b.timeline('feed', { maxSize: 1000 });
  const deltas = new Array(count);
  let x = 12345;
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; }; // ms
  const c0 = cpu();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    deltas[i] = tl.add(`post:${i}`, i + (x % 100) / 8);
  }
  const t1 = performance.now();
  const c1 = cpu();
  for (let i = 0; i < count; i++) if (deltas[i]) b.merge('feed', deltas[i]);
  const t2 = performance.now();
  const c2 = cpu();
  const sa = a.encode('feed');
  if (fnv1a(sa) !== fnv1a(b.encode('feed'))) throw new Error('bench_wasm: the merged deltas do not give the state');
  a.close();
  b.close();
  return {
    apply: count / ((t1 - t0) / 1000),
    merge: count / ((t2 - t1) / 1000),
    applyCpu: count / ((c1 - c0) / 1000),
    mergeCpu: count / ((c2 - c1) / 1000),
    fnv: fnv1a(sa),
  };
}

// The same adds into a third replica, each delta made, copied out and dropped (a client that
// sends each and keeps none): what apply costs without the JavaScript heap holding N deltas.
function runDrop(count) {
  const c = new Replica(wasm, { node: 3 });
  const tl = c.timeline('feed', { maxSize: 1000 });
  let x = 12345;
  let bytes = 0;
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const c0 = cpu();
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const d = tl.add(`post:${i}`, i + (x % 100) / 8);
    if (d) bytes += d.length;
  }
  const c1 = cpu();
  c.close();
  return { dropCpu: count / ((c1 - c0) / 1000), bytes };
}

// The log variant (apply-log, merge-log): the same adds, each delta appended to one growing
// byte buffer and dropped (a client that appends what it sends to one send buffer or log), its
// end offset noted in a Uint32Array; then the deltas merged from that buffer (a subarray each).
// bench_wasm_native.c's run_log does the same with one crdt_buf_t: the JavaScript heap holds no
// N objects here, where run() keeps N Uint8Arrays (a garbage collector's work that N malloc'd
// blocks do not cost natively). log_fnv, the log's checksum, is compared with the native one.
function runLog(count) {
  const a = new Replica(wasm, { node: 1 });
  const b = new Replica(wasm, { node: 2 });
  const tl = a.timeline('feed', { maxSize: 1000 });
  b.timeline('feed', { maxSize: 1000 });
  const ends = new Uint32Array(count);
  let log = new Uint8Array(1 << 16);
  let len = 0;
  let x = 12345;
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const c0 = cpu();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const d = tl.add(`post:${i}`, i + (x % 100) / 8);
    if (d) {
      if (len + d.length > log.length) {
        const grown = new Uint8Array(Math.max(log.length * 2, len + d.length));
        grown.set(log.subarray(0, len));
        log = grown;
      }
      log.set(d, len);
      len += d.length;
    }
    ends[i] = len;
  }
  const t1 = performance.now();
  const c1 = cpu();
  for (let i = 0, start = 0; i < count; start = ends[i++])
    if (ends[i] > start) b.merge('feed', log.subarray(start, ends[i]));
  const t2 = performance.now();
  const c2 = cpu();
  const sa = a.encode('feed');
  if (fnv1a(sa) !== fnv1a(b.encode('feed'))) throw new Error('bench_wasm: the logged deltas do not give the state');
  a.close();
  b.close();
  return {
    apply: count / ((t1 - t0) / 1000),
    merge: count / ((t2 - t1) / 1000),
    applyCpu: count / ((c1 - c0) / 1000),
    mergeCpu: count / ((c2 - c1) / 1000),
    fnv: fnv1a(sa),
    logFnv: fnv1a(log.subarray(0, len)),
  };
}

// The floor of the kept variant without libcrdt (bench_wasm_native.c's run_keep): N 30-byte
// copies out of the wasm memory (the workload's deltas average 30.4 bytes), each a slice as
// _outBytes makes it, kept in one array as run() keeps the deltas. CPU ns per copy.
function keep(count) {
  const mem = new Uint8Array(wasm._x.memory.buffer);
  const at = wasm._inPtr;
  const kept = new Array(count);
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const c0 = cpu();
  for (let i = 0; i < count; i++) {
    mem[at] = i & 255; // not one copy made n times
    kept[i] = mem.slice(at, at + 30);
  }
  const c1 = cpu();
  if (kept[count - 1][0] !== ((count - 1) & 255)) throw new Error('bench_wasm: keep copied wrong');
  return ((c1 - c0) * 1e6) / count;
}

// A warm-up pass, as bench_wasm_native.c makes too: the engine compiles wasm with a baseline
// compiler first and optimises hot functions a little later; a page that syncs runs warm.
run(Math.min(n, 20000));
const r = run(n);
runDrop(Math.min(n, 20000));
const dr = runDrop(n);
runLog(Math.min(n, 20000));
const lr = runLog(n);
if (lr.fnv !== r.fnv) throw new Error('bench_wasm: the log variant ends in another state');
keep(Math.min(n, 20000));
const keepNs = keep(n);
console.log(`apply_ops_s ${Math.round(r.apply)}`);
console.log(`merge_ops_s ${Math.round(r.merge)}`);
console.log(`apply_cpu_ops_s ${Math.round(r.applyCpu)}`);
console.log(`merge_cpu_ops_s ${Math.round(r.mergeCpu)}`);
console.log(`apply_drop_cpu_ops_s ${Math.round(dr.dropCpu)}`);
console.log(`drop_bytes ${dr.bytes}`);
console.log(`state_fnv ${r.fnv}`);
console.log(`apply_log_ops_s ${Math.round(lr.apply)}`);
console.log(`merge_log_ops_s ${Math.round(lr.merge)}`);
console.log(`apply_log_cpu_ops_s ${Math.round(lr.applyCpu)}`);
console.log(`merge_log_cpu_ops_s ${Math.round(lr.mergeCpu)}`);
console.log(`log_fnv ${lr.logFnv}`);
console.log(`keep_cpu_ns ${keepNs.toFixed(1)}`);
