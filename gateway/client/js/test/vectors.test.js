// vectors.test.js - the WebAssembly build against native libcrdt: same script, same bytes
//
// tests/wasm_vectors (native libcrdt) prints a seeded script of ops of every type with the result
// code and delta encoding of each, the final states, corrupted encodings with the error they get,
// and a replica's own writes. Here the same script runs through crdt.wasm: every result must be
// identical, byte for byte, and error for error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { CrdtError, Replica } from '../crdt-wasm.js';
import { hex, unhex, loadWasm, vectorsPath, rng } from './helpers.js';

function script(seed, nops) {
  const out = execFileSync(vectorsPath(), [String(seed), String(nops)], { encoding: 'utf8', maxBuffer: 1 << 26 });
  return out.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split('\t'));
}

// Runs a mutation; a CrdtError becomes its code, so it compares with the C result code.
function attempt(fn) {
  try {
    const d = fn();
    return { rc: d ? 1 : 0, delta: d ? hex(d) : '-' };
  } catch (e) {
    if (!(e instanceof CrdtError)) throw e;
    return { rc: e.code, delta: '-' };
  }
}

const SEEDS = [1, 2, 3, 17, 4242];

for (const seed of SEEDS) {
  test(`seed ${seed}: every op, state and error is the C one`, async () => {
    const w = await loadWasm();
    const heap0 = w.heapBytes;
    const objs = new Map();
    const deltas = new Map(); // key -> delta hexes, for the merge checks below
    const lines = script(seed, 400);
    let ops = 0;
    let bad = 0;
    let rep = 0;
    for (const f of lines) {
      if (f[0] === 'op') {
        const [, key, type, maxSize, kind, mhex, score, n, replica, ms, logical, node, rc, delta] = f;
        let o = objs.get(key);
        if (!o) objs.set(key, (o = w.create(type, { maxSize: Number(maxSize) })));
        const m = unhex(mhex);
        const ts = { ms: Number(ms), logical: Number(logical), node: Number(node) };
        let got;
        if (kind === 'delete') got = attempt(() => o.delete({ ts, replica: Number(replica) }));
        else if (type === 'timeline') got = attempt(() => o[kind](m, Number(score)));
        else if (type === 'gcounter' || type === 'pncounter') got = attempt(() => o.incr(BigInt(n), Number(replica)));
        else if (type === 'lwwreg') got = attempt(() => o.set(m, ts));
        else if (type === 'lwwset') got = attempt(() => o[kind](m, ts));
        else got = attempt(() => (kind === 'add' ? o.add(m, Number(replica)) : o.remove(m)));
        assert.deepEqual(got, { rc: Number(rc), delta }, `op ${ops} (${f.join(' ')})`);
        if (delta !== '-') {
          if (!deltas.has(key)) deltas.set(key, []);
          deltas.get(key).push(delta);
        }
        ops++;
      } else if (f[0] === 'state') {
        const [, key, want] = f;
        const o = objs.get(key);
        assert.ok(o, `the script wrote ${key}`);
        assert.equal(hex(o.encode()), want, `state of ${key}`);
        // the C encoding decodes here to the same state, and merging it changes nothing
        const d = w.decode(unhex(want));
        assert.ok(d.equals(o), `${key}: decoded C state equals the wasm state`);
        assert.equal(hex(d.encode()), want);
        assert.equal(o.merge(unhex(want)), false, `${key}: merging its own state is a no-op`);
        d.free();
        // the C deltas, shuffled and with duplicates, join into a fresh object to the same state
        const list = deltas.get(key) ?? [];
        const r = rng(seed);
        const order = r.shuffle([...list, ...list.filter(() => r() < 0.3)]);
        const f2 = w.create(o.type, { maxSize: o.type === 'timeline' ? o.maxSize : 0 });
        for (const dh of order) f2.merge(unhex(dh));
        assert.equal(hex(f2.encode()), want, `${key}: C deltas merged in wasm, shuffled and duplicated`);
        f2.free();
      } else if (f[0] === 'bad') {
        const [, key, input, rc, offset, text, after] = f;
        const o = objs.get(key).clone();
        const before = hex(o.encode());
        let got;
        try {
          got = { rc: o.merge(unhex(input)) ? 1 : 0 };
        } catch (e) {
          assert.ok(e instanceof CrdtError, `a CrdtError, not ${e}`);
          assert.ok(e.message.endsWith(text), `message "${e.message}" ends with the C text "${text}"`);
          got = { rc: e.code, offset: e.offset };
          assert.equal(hex(o.encode()), before, `${key}: a rejected merge leaves the state as it was`);
        }
        const want = Number(rc) < 0 ? { rc: Number(rc), offset: Number(offset) } : { rc: Number(rc) };
        assert.deepEqual(got, want, `bad input ${bad} for ${key}: ${text}`);
        assert.equal(hex(o.encode()), after, `${key}: state after bad input ${bad}`);
        o.free();
        bad++;
      } else if (f[0] === 'rep' || f[0] === 'repstate') {
        rep++;
      }
    }
    assert.ok(ops === 400 && bad > 50 && rep > 400, `the script ran (${ops} ops, ${bad} bad, ${rep} rep)`);
    for (const o of objs.values()) o.free();
    assert.equal(w.heapBytes, heap0, 'every object freed gives its heap back');
  });

  test(`seed ${seed}: a Replica of node 7 writes what libcrdt writes`, async () => {
    const w = await loadWasm();
    let now = 0;
    const r = new Replica(w, { node: 7, now: () => now, encoding: 'bytes' });
    const views = {
      'r:tl': r.timeline('r:tl'),
      'r:gc': r.gcounter('r:gc'),
      'r:pn': r.pncounter('r:pn'),
      'r:reg': r.register('r:reg'),
      'r:lws': r.lwwset('r:lws'),
      'r:ors': r.orset('r:ors'),
    };
    let n = 0;
    for (const f of script(seed, 400)) {
      if (f[0] === 'rep') {
        const [, at, key, kind, mhex, score, inc, rc, delta] = f;
        now = Number(at);
        const v = views[key];
        const m = unhex(mhex);
        let got;
        if (key === 'r:tl') got = attempt(() => v[kind](m, Number(score)));
        else if (key === 'r:gc' || key === 'r:pn') got = attempt(() => v.incr(Number(inc)));
        else if (key === 'r:reg') got = attempt(() => v.set(m));
        else got = attempt(() => v[kind](m));
        assert.deepEqual(got, { rc: Number(rc), delta }, `replica op ${n} (${f.join(' ')})`);
        n++;
      } else if (f[0] === 'repstate') {
        assert.equal(hex(r.encode(f[1])), f[2], `replica state of ${f[1]}`);
      }
    }
    assert.equal(n, 400);
    r.close();
  });
}
