// badinput.test.js - malformed, truncated and corrupted encodings, wrong types and bad arguments
// are refused with a CrdtError (never a trap or a crash) and the state is kept
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CrdtCode, CrdtError, Replica } from '../crdt-wasm.js';
import { hex, loadWasm, rng, seedFromEnv } from './helpers.js';

function filled(w) {
  const r = new Replica(w, { node: 3, now: () => 1700000000000 });
  const t = r.timeline('tl', { maxSize: 5 });
  for (let i = 0; i < 9; i++) t.add(`post:${i}`, i * 1.5);
  t.remove('post:8', 20);
  r.pncounter('pn').incr(-4);
  r.gcounter('gc').incr(9);
  r.register('reg').set('hello');
  r.lwwset('lws').add('x');
  r.lwwset('lws').remove('y');
  r.orset('ors').add('p');
  r.orset('ors').add('q');
  r.orset('ors').remove('p');
  return r;
}

test('every truncation and random corruption of every type is refused or canonical', async (t) => {
  const w = await loadWasm();
  const seed = seedFromEnv(t);
  const g = rng(seed);
  const r = filled(w);
  let refused = 0;
  for (const key of r.keys()) {
    const enc = r.encode(key);
    const before = hex(enc);
    for (let n = 0; n < enc.length; n++) {
      assert.throws(() => r.merge(key, enc.subarray(0, n)), (e) => e instanceof CrdtError && e.code === CrdtCode.EDECODE,
        `${key}: ${n} of ${enc.length} bytes`);
      assert.throws(() => w.decode(enc.subarray(0, n)), CrdtError);
      refused += 2;
    }
    assert.throws(() => r.merge(key, new Uint8Array([...enc, 0])), /merge: /, `${key}: a trailing byte`);
    for (let i = 0; i < 300; i++) {
      const x = Uint8Array.from(enc);
      x[g.below(x.length)] ^= 1 + g.below(255);
      try {
        const o = w.decode(x);
        // anything accepted must be canonical: it re-encodes to exactly these bytes
        assert.equal(hex(o.encode()), hex(x), `${key}: an accepted corruption is canonical`);
        o.free();
      } catch (e) {
        assert.ok(e instanceof CrdtError, `a CrdtError, not ${e}`);
        assert.match(e.message, /^decode: ./);
        assert.equal(typeof e.offset, 'number');
        refused++;
      }
    }
    // garbage of every length, and the state kept through all of it
    for (let i = 0; i < 200; i++) {
      const x = new Uint8Array(g.below(64));
      for (let j = 0; j < x.length; j++) x[j] = g.below(256);
      if (x.length > 1 && g() < 0.5) x[0] = 1; // the right version byte, to get further in
      assert.throws(() => r.merge(key, x), CrdtError);
    }
    assert.equal(hex(r.encode(key)), before, `${key} kept its state`);
  }
  t.diagnostic(`${refused} refusals`);
  r.close();
});

test('errors say what went wrong', async () => {
  const w = await loadWasm();
  const r = filled(w);
  const tl = r.encode('tl');
  assert.throws(() => r.merge('tl', tl.subarray(0, tl.length - 1)), (e) => {
    assert.equal(e.name, 'CrdtError');
    assert.equal(e.codeName, 'EDECODE');
    assert.match(e.message, /^merge: checksum mismatch/);
    return true;
  });
  assert.throws(() => r.merge('tl', r.encode('gc')), (e) => e.code === CrdtCode.ETYPE && /gcounter encoding cannot join a timeline/.test(e.message));
  assert.throws(() => r.merge('tl', new Uint8Array(0)), /truncated: 0 bytes/);
  assert.throws(() => r.merge('tl', 'not bytes'.repeat(3)), CrdtError, 'a string is taken as its UTF-8 bytes and refused');
  assert.throws(() => r.merge('tl', 42), TypeError);
  // typed access to a key of another type
  assert.throws(() => r.gcounter('tl'), (e) => e.code === CrdtCode.ETYPE && /holds a timeline/.test(e.message));
  // arguments libcrdt refuses
  assert.throws(() => r.timeline('tl').add('a', NaN), (e) => e.code === CrdtCode.EINVAL);
  assert.throws(() => r.timeline('tl').add('a', Infinity), (e) => e.code === CrdtCode.EINVAL);
  assert.throws(() => r.gcounter('gc').incr(-1), RangeError);
  assert.throws(() => r.gcounter('gc').incr(1.5), TypeError);
  assert.throws(() => r.pncounter('pn').incr(2n ** 63n), RangeError);
  assert.throws(() => r.timeline('tl').add(7, 1), TypeError);
  assert.throws(() => new Replica(w, { node: 0 }), (e) => e.code === CrdtCode.EINVAL);
  assert.throws(() => new Replica(w, { node: 2n ** 63n }), CrdtError);
  assert.throws(() => new Replica(w, { node: -1 }), RangeError);
  assert.throws(() => r.register('reg').set('v', { ts: { ms: 1, logical: -1, node: 1 } }), RangeError);
  // counter overflow is an error, and the counter keeps its value
  const c = r.pncounter('big');
  c.incr(2n ** 62n);
  c.incr(2n ** 62n - 1n);
  assert.throws(() => c.incr(2n ** 62n), (e) => e.code === CrdtCode.EOVERFLOW);
  assert.equal(c.bigValue(), 2n ** 63n - 1n);
  assert.throws(() => c.value(), RangeError);
  // a clock far ahead is refused
  assert.throws(() => r.clock.recv({ ms: 1700000000000 + 3600e3, logical: 0, node: 5 }, 1700000000000),
    (e) => e.code === CrdtCode.ECLOCK);
  // freed things refuse to be used instead of touching freed memory
  const o = w.create('timeline');
  o.free();
  o.free();
  assert.throws(() => o.add('a', 1), /freed/);
  r.close();
  assert.throws(() => r.timeline('new'), /closed/);
});
