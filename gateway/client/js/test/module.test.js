// module.test.js - what crdt.wasm imports and exports, how it loads, and that memory is given back
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';
import { CrdtWasm, Replica } from '../crdt-wasm.js';
import { wasmBytes, wasmPath } from './helpers.js';

test('crdt.wasm imports nothing, exports the ABI and its memory only', async () => {
  const mod = await WebAssembly.compile(wasmBytes());
  assert.deepEqual(WebAssembly.Module.imports(mod), [], 'no imports: no WASI, no clock, no env');
  const exports = WebAssembly.Module.exports(mod);
  for (const e of exports) {
    assert.ok(e.name === 'memory' || e.name === '_initialize' || e.name.startsWith('crdt_wasm_'), `unexpected export ${e.name}`);
  }
  assert.ok(exports.some((e) => e.name === 'memory' && e.kind === 'memory'));
  assert.ok(exports.filter((e) => e.kind === 'function').length >= 30);
});

test('the import section is empty in the binary itself', () => {
  // read the sections by hand, not through the engine: id 2 is the import section
  const b = wasmBytes();
  assert.deepEqual([...b.subarray(0, 8)], [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  const sections = [];
  let p = 8;
  const leb = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const c = b[p++];
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
      if (c < 0x80) return v;
    }
  };
  while (p < b.length) {
    const id = b[p++];
    const len = leb();
    if (id === 2) sections.push({ id, count: (() => { const q = p; const n = leb(); p = q; return n; })() });
    else sections.push({ id });
    p += len;
  }
  assert.equal(p, b.length);
  const imp = sections.find((s) => s.id === 2);
  assert.ok(!imp || imp.count === 0, `import section with ${imp?.count} entries`);
});

test('loads from bytes, a Module, a path and a file URL', async () => {
  const from = [wasmBytes(), await WebAssembly.compile(wasmBytes()), wasmPath(), pathToFileURL(wasmPath()),
    pathToFileURL(wasmPath()).href];
  for (const src of from) {
    const w = await CrdtWasm.load(src);
    const r = new Replica(w, { node: 1 });
    r.timeline('t').add('m', 1);
    assert.equal(r.timeline('t').card, 1);
    r.close();
  }
  await assert.rejects(CrdtWasm.load(42), TypeError);
  const plain = await CrdtWasm.load(wasmBytes());
  assert.throws(() => plain.heapBytes, /countHeap/);
  await assert.rejects(CrdtWasm.load(new Uint8Array([0, 1, 2])), WebAssembly.CompileError);
});

test('a module with imports is refused', async () => {
  // (module (import "env" "f" (func)))
  const bytes = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 4, 1, 0x60, 0, 0, 2, 9, 1, 3, 0x65, 0x6e, 0x76, 1, 0x66, 0, 0]);
  await assert.rejects(CrdtWasm.load(bytes), /unexpected imports env\.f/);
});

test('no leaks: heap back to its start after many replicas, big inputs included', async () => {
  const w = await CrdtWasm.load(wasmBytes(), { countHeap: true });
  const heap0 = w.heapBytes;
  for (let round = 0; round < 20; round++) {
    const r = new Replica(w, { node: round + 1 });
    const t = r.timeline('feed', { maxSize: 100 });
    for (let i = 0; i < 500; i++) t.add(`post:${i}`, i);
    t.newest(50);
    t.rangeByScore({ max: 300, min: 100, limit: 20 });
    r.register('big').set('x'.repeat(100000 + round));
    r.orset('s').add('a');
    r.lwwset('l').add('b');
    r.pncounter('c').incr(3);
    const other = new Replica(w, { node: 99 });
    other.merge('feed', r.encode('feed'));
    other.merge('big', r.encode('big'));
    other.delete('feed');
    other.close();
    r.close();
    assert.equal(w.heapBytes, heap0, `round ${round}`);
  }
  const mem = w.memoryBytes;
  for (let round = 0; round < 20; round++) {
    const r = new Replica(w, { node: 1 });
    const t = r.timeline('feed', { maxSize: 100 });
    for (let i = 0; i < 500; i++) t.add(`post:${i}`, i);
    r.close();
  }
  assert.equal(w.memoryBytes, mem, 'the linear memory stops growing once the pattern repeats');
});

test('the heap: blocks on both sides of the small-size classes, reused, every byte given back', async () => {
  // heap.c serves blocks up to 512 bytes from size classes and larger ones from dlmalloc; a
  // growing buffer moves from one to the other. Members of 1 .. 700 bytes cross every class.
  const w = await CrdtWasm.load(wasmBytes(), { countHeap: true });
  const heap0 = w.heapBytes;
  const member = (i) => `${i}:`.padEnd(1 + (i % 700), 'm');
  const round = () => {
    const r = new Replica(w, { node: 1 });
    const other = new Replica(w, { node: 2 });
    const t = r.timeline('feed');
    for (let i = 0; i < 1400; i++) other.merge('feed', t.add(member(i), i));
    for (let i = 0; i < 1400; i += 3) other.merge('feed', t.remove(member(i), i + 0.5));
    assert.equal(t.card, 1400 - Math.ceil(1400 / 3));
    assert.deepEqual(other.encode('feed'), r.encode('feed'), 'the deltas rebuild the state');
    const got = t.newest(2000).map((e) => e.member);
    const want = [];
    for (let i = 1399; i >= 0; i--) if (i % 3) want.push(member(i));
    assert.deepEqual(got, want, 'every member read back, whatever block it was in');
    r.close();
    other.close();
  };
  round();
  assert.equal(w.heapBytes, heap0, 'every block given back');
  round(); // the result buffer, kept between calls, has grown to its size in the first
  const mem = w.memoryBytes;
  for (let k = 0; k < 3; k++) round();
  assert.equal(w.heapBytes, heap0);
  assert.equal(w.memoryBytes, mem, 'freed blocks are reused: the memory does not grow again');
});

test('each load salts the seeds of the member indexes with fresh random bytes', async () => {
  // linear memory has no ASLR: without a salt, a timeline's index seed would be the same in every
  // page, and members that collide in it could be computed offline
  const mod = await WebAssembly.compile(wasmBytes());
  const salts = [];
  for (let i = 0; i < 2; i++) {
    const inst = await WebAssembly.instantiate(mod, {});
    const exports = { ...inst.exports };
    exports.crdt_wasm_hash_salt = (lo, hi) => {
      salts.push([lo >>> 0, hi >>> 0]);
      inst.exports.crdt_wasm_hash_salt(lo, hi);
    };
    const w = new CrdtWasm({ exports });
    const r = new Replica(w, { node: 1 });
    r.timeline('feed', { maxSize: 10 }).add('m', 1);
    assert.equal(r.timeline('feed').card, 1);
    r.close();
  }
  assert.equal(salts.length, 2, 'one salt per load, before any object');
  assert.notDeepEqual(salts[0], salts[1]);
  assert.ok(salts.every(([lo, hi]) => lo !== 0 || hi !== 0));
});
