// laws.test.js - the CRDT laws through the JavaScript replica, over random seeds: merge is
// commutative and idempotent, and shuffled, duplicated deltas converge (encodings compared)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Replica } from '../crdt-wasm.js';
import { hex, loadWasm, rng, seedFromEnv } from './helpers.js';

const MEMBERS = ['a', 'b', 'c', 'd', 'post:1', 'post:2', 'ü', '😀', ''];
const TYPES = ['timeline', 'gcounter', 'pncounter', 'lwwreg', 'lwwset', 'orset'];

// One random write on replica r at key (of type), returning its delta (or null).
function write(r, type, key, g) {
  const m = g.pick(MEMBERS);
  const add = g() < 0.7;
  switch (type) {
    case 'timeline': {
      const score = g.below(30) + g.pick([0, 0.5, 0.25]);
      const t = r.timeline(key, { maxSize: 6 });
      return add ? t.add(m, score) : t.remove(m, score);
    }
    case 'gcounter':
      return r.gcounter(key).incr(g.below(50));
    case 'pncounter':
      return r.pncounter(key).incr(g.below(100) - 50);
    case 'lwwreg':
      return r.register(key).set(m);
    case 'lwwset':
      return add ? r.lwwset(key).add(m) : r.lwwset(key).remove(m);
    default:
      return add ? r.orset(key).add(m) : r.orset(key).remove(m);
  }
}

// A fresh replica of the key: a bounded timeline is made with its bound first (a mutator's delta
// does not carry the bound, so a timeline built from deltas alone would be unbounded).
function fresh(w, node, type, key, opts = {}) {
  const r = new Replica(w, { node, ...opts });
  if (type === 'timeline') r.timeline(key, { maxSize: 6 });
  return r;
}

test('laws over random seeds, every type', async (t) => {
  const w = await loadWasm();
  const heap0 = w.heapBytes;
  const seed0 = seedFromEnv(t);
  for (let s = 0; s < 60; s++) {
    const seed = seed0 + s;
    const g = rng(seed);
    const type = TYPES[s % TYPES.length];
    const key = `k:${type}`;
    // three replicas with their own clocks (time jumps around: HLCs keep it ordered)
    let now = 1700000000000;
    const clockNow = () => (now += g.below(3) - 1);
    const reps = [1, 2, 3].map((node) => new Replica(w, { node, now: clockNow }));
    const deltas = [];
    for (let i = 0; i < 40; i++) {
      const r = g.pick(reps);
      const d = write(r, type, key, g);
      if (d) deltas.push(d);
      // sometimes a replica hears from another (so removes observe remote adds)
      if (g() < 0.2 && deltas.length) g.pick(reps).merge(key, g.pick(deltas));
    }
    const states = reps.filter((r) => r.has(key)).map((r) => r.encode(key));
    const ctx = `seed ${seed} (${type})`;
    // commutative: a ⊔ b and b ⊔ a encode identically
    for (let i = 0; i < states.length; i++) {
      for (let j = 0; j < states.length; j++) {
        const x = fresh(w, 9, type, key);
        x.merge(key, states[i]);
        x.merge(key, states[j]);
        const y = fresh(w, 9, type, key);
        y.merge(key, states[j]);
        y.merge(key, states[i]);
        assert.equal(hex(x.encode(key)), hex(y.encode(key)), `${ctx}: commutative ${i},${j}`);
        // idempotent: joining either again changes nothing
        assert.equal(x.merge(key, states[i]), false, `${ctx}: idempotent`);
        assert.equal(x.merge(key, states[j]), false, `${ctx}: idempotent`);
        x.close();
        y.close();
      }
    }
    // every delta, shuffled with duplicates, into fresh replicas: one state, the join of all
    const all = fresh(w, 9, type, key);
    for (const st of states) all.merge(key, st);
    for (const d of deltas) all.merge(key, d);
    const want = hex(all.encode(key));
    for (let k = 0; k < 3; k++) {
      const x = fresh(w, 10 + k, type, key);
      const order = g.shuffle([...deltas, ...deltas.filter(() => g() < 0.5)]);
      for (const d of order) x.merge(key, d);
      for (const st of states) assert.equal(x.merge(key, st), false, `${ctx}: the deltas hold every state`);
      assert.equal(hex(x.encode(key)), want, `${ctx}: shuffled, duplicated deltas converge`);
      x.close();
    }
    // a delta joined into the state before it equals the write applied there
    const a = fresh(w, 4, type, key, { now: clockNow });
    const b = fresh(w, 5, type, key);
    for (const d of deltas.slice(0, 10)) {
      a.merge(key, d);
      b.merge(key, d);
    }
    const d = write(a, type, key, g);
    if (d) b.merge(key, d);
    assert.equal(hex(b.encode(key)), hex(a.encode(key)), `${ctx}: delta = mutator`);
    for (const r of [...reps, all, a, b]) r.close();
  }
  assert.equal(w.heapBytes, heap0, 'closing every replica gives the heap back');
});
