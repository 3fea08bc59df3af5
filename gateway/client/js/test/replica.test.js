// replica.test.js - the local replica's API: every type's writes and reads, cursors, keys,
// encodings of members, and two replicas converging through the deltas they return
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Replica, TimelineObject } from '../crdt-wasm.js';
import { hex, loadWasm } from './helpers.js';

test('timeline: newest first, offsets, score cursors, bound and floor', async () => {
  const w = await loadWasm();
  const r = new Replica(w, { node: 7 });
  const t = r.timeline('feed:1', { maxSize: 10 });
  assert.equal(t.maxSize, 10);
  for (let i = 1; i <= 12; i++) assert.ok(t.add(`post:${i}`, 1700000000 + i) instanceof Uint8Array);
  assert.equal(t.card, 10, 'bounded to 10');
  assert.deepEqual(t.floor(), { member: 'post:2', score: 1700000002 }, 'the highest dropped entry');
  assert.equal(t.add('post:0', 1), null, 'below the floor: ignored');
  assert.equal(t.add('post:12', 1700000012), null, 'the same write again: no change');
  assert.deepEqual(t.newest(3).map((e) => e.member), ['post:12', 'post:11', 'post:10']);
  assert.deepEqual(t.range({ offset: 8, count: 5 }).map((e) => e.member), ['post:4', 'post:3']);
  assert.deepEqual(t.range({ offset: 50, count: 5 }), []);
  // page by score with a cursor: the last entry of a page starts the next
  const pages = [];
  let after;
  for (;;) {
    const page = t.rangeByScore({ max: 1700000011, min: 1700000004, after, limit: 3 });
    if (!page.length) break;
    pages.push(page.map((e) => e.member));
    after = page[page.length - 1];
  }
  assert.deepEqual(pages, [['post:11', 'post:10', 'post:9'], ['post:8', 'post:7', 'post:6'], ['post:5', 'post:4']]);
  assert.ok(t.remove('post:11', 1700000011), 'remove at an equal score wins');
  assert.equal(t.score('post:11'), undefined);
  assert.equal(t.score('post:10'), 1700000010);
  assert.equal(t.card, 9);
  assert.equal(r.timeline('feed:1', { maxSize: 3 }).maxSize, 10, 'an existing timeline keeps its bound');
  r.close();
});

test('counters, register, LWW-set and OR-set', async () => {
  const w = await loadWasm();
  let now = 1700000000000;
  const r = new Replica(w, { node: 7, now: () => now });
  const likes = r.gcounter('likes');
  likes.incr();
  likes.incr(4);
  assert.equal(likes.incr(0), null);
  assert.equal(likes.value(), 5);
  const bal = r.pncounter('balance');
  bal.incr(10);
  bal.incr(-25);
  assert.equal(bal.value(), -15);
  assert.equal(bal.bigValue(), -15n);

  const title = r.register('title');
  assert.equal(title.get(), null);
  title.set('first');
  now -= 1000; // the wall clock steps back: the HLC still orders the next write later
  title.set('second');
  const got = title.get();
  assert.equal(got.value, 'second');
  assert.equal(got.ts.node, 7);
  assert.equal(got.ts.ms, 1700000000000);
  assert.equal(got.ts.logical, 1);
  assert.equal(title.set('old', { ts: { ms: 5, logical: 0, node: 1 } }), null, 'an older timestamp loses');

  const follows = r.lwwset('follows');
  follows.add('alice');
  follows.add('bob');
  follows.remove('alice');
  assert.deepEqual(follows.members(), ['bob']);
  assert.equal(follows.has('alice'), false);
  assert.equal(follows.size, 1);

  const tags = r.orset('tags');
  tags.add('x');
  tags.add('y');
  tags.remove('x');
  assert.deepEqual(tags.members(), ['y']);
  assert.equal(tags.has('y'), true);
  assert.equal(tags.remove('nope'), null);

  assert.deepEqual(r.keys().sort(), ['balance', 'follows', 'likes', 'tags', 'title']);
  assert.equal(r.type('likes'), 'gcounter');
  assert.equal(r.type('none'), undefined);
  assert.equal(r.encode('none'), null);
  assert.equal(r.delete('likes'), true);
  assert.equal(r.delete('likes'), false);
  r.close();
});

test('two replicas converge through the deltas their writes return', async () => {
  const w = await loadWasm();
  const a = new Replica(w, { node: 1 });
  const b = new Replica(w, { node: 2 });
  const toB = [];
  const toA = [];
  toB.push(['feed', a.timeline('feed').add('post:1', 10)]);
  toA.push(['feed', b.timeline('feed').add('post:2', 20)]);
  toB.push(['likes', a.pncounter('likes').incr(3)]);
  toA.push(['likes', b.pncounter('likes').incr(4)]);
  toB.push(['tags', a.orset('tags').add('t')]);
  // b removes what it has not seen: the concurrent add survives (add wins)
  toA.push(['tags', b.orset('tags').remove('t')]);
  for (const [k, d] of toB) if (d) b.merge(k, d);
  for (const [k, d] of toA) if (d) a.merge(k, d);
  for (const k of ['feed', 'likes', 'tags']) assert.equal(hex(a.encode(k)), hex(b.encode(k)), k);
  assert.deepEqual(b.timeline('feed').newest().map((e) => e.member), ['post:2', 'post:1']);
  assert.equal(a.pncounter('likes').value(), 7);
  assert.deepEqual(b.orset('tags').members(), ['t']);
  a.close();
  b.close();
});

test('a merged register advances the clock: the next local write wins over it', async () => {
  const w = await loadWasm();
  const now = 1700000000000;
  const a = new Replica(w, { node: 1, now: () => now + 30000 }); // 30 s ahead
  const b = new Replica(w, { node: 2, now: () => now });
  b.merge('title', a.register('title').set('from a'));
  b.register('title').set('from b, later');
  assert.equal(b.register('title').get().value, 'from b, later');
  a.close();
  b.close();
});

test('bytes and text: keys and members as strings or Uint8Array', async () => {
  const w = await loadWasm();
  const r = new Replica(w, { node: 7, encoding: 'bytes' });
  const m = new Uint8Array([0, 255, 1]);
  r.timeline(new TextEncoder().encode('k')).add(m, 1);
  r.timeline('k').add('ü', 2);
  const got = r.timeline('k').newest();
  assert.deepEqual(got.map((e) => [...e.member]), [[0xc3, 0xbc], [0, 255, 1]]);
  assert.ok(r.timeline('k') === r.timeline(new TextEncoder().encode('k')), 'one key, one view');
  // a key that is not UTF-8 is a key like any other, listed as its bytes; text keys as strings
  r.timeline(new Uint8Array([0xff, 0])).add('x', 1);
  assert.deepEqual(r.timeline(new Uint8Array([0xff, 0])).newest().map((e) => [...e.member]), [[0x78]]);
  assert.equal(r.type(new Uint8Array([0xff])), undefined, 'another key');
  assert.deepEqual(r.keys().map((k) => (typeof k === 'string' ? k : [...k])), ['k', [0xff, 0]]);
  assert.throws(() => r.timeline('a\uD800b'), /lone surrogate/);
  const o = w.create('timeline');
  assert.ok(o instanceof TimelineObject);
  o.add('a', 1);
  assert.deepEqual(o.newest(1, { text: true }), [{ member: 'a', score: 1 }]);
  o.free();
  r.close();
});

test('views delete() where the objects do (observed-remove); a gcounter view has none', async () => {
  const w = await loadWasm();
  const a = new Replica(w, { node: 7 });
  const b = new Replica(w, { node: 8 });
  const sync = (k, d) => d && b.merge(k, d);
  sync('t', a.timeline('t').add('x', 1));
  sync('c', a.pncounter('c').incr(4));
  sync('r', a.register('r').set('v'));
  sync('l', a.lwwset('l').add('m'));
  sync('o', a.orset('o').add('m'));
  // b adds what a has not seen: it survives a's delete
  const unseen = b.orset('o').add('n');
  for (const [k, view] of [['t', a.timeline('t')], ['c', a.pncounter('c')], ['r', a.register('r')], ['l', a.lwwset('l')], ['o', a.orset('o')]]) {
    const d = view.delete();
    assert.ok(d instanceof Uint8Array, `${k}: a delta`);
    assert.equal(view.delete(), null, `${k}: nothing live the second time`);
    b.merge(k, d);
  }
  a.merge('o', unseen);
  assert.deepEqual(b.timeline('t').newest(), []);
  assert.equal(b.pncounter('c').value(), 0);
  assert.equal(b.register('r').get(), null);
  assert.deepEqual(b.lwwset('l').members(), []);
  assert.deepEqual(b.orset('o').members(), ['n']);
  assert.equal(hex(a.encode('o')), hex(b.encode('o')));
  assert.equal(a.gcounter('g').delete, undefined);
  a.close();
  b.close();
});

test('a register delete from elsewhere advances the clock: a later local set wins over it', async () => {
  const w = await loadWasm();
  let now = 1000;
  const a = new Replica(w, { node: 1, now: () => now });
  // b's clock is far ahead (within the drift allowed)
  const b = new Replica(w, { node: 2, now: () => now + 30000 });
  a.merge('r', b.register('r').set('x'));
  b.merge('r', a.register('r').set('y'));
  const del = b.register('r').delete();
  assert.equal(b.register('r').get(), null);
  a.merge('r', del);
  assert.equal(a.register('r').get(), null, 'cleared');
  assert.ok(a.register('r').set('after') !== null, 'the set after the clear is a change');
  assert.equal(a.register('r').get().value, 'after', 'and wins over the tombstone');
  a.close();
  b.close();
});

test('timeline writes: each delta is its one write alone, whatever the writes before (the reused delta)', async () => {
  const w = await loadWasm();
  const heap0 = w.heapBytes;
  const a = new Replica(w, { node: 1 });
  const b = new Replica(w, { node: 2 });
  const t = a.timeline('feed', { maxSize: 3 });
  b.timeline('feed', { maxSize: 3 });
  const long = (c, n) => c.repeat(n);
  const writes = [
    ['add', long('x', 5000), 10], // longer than the delta the module keeps: it is made anew
    ['add', 'p1', 11],
    ['remove', 'p1', 12],
    ['add', 'p2', 9],
    ['add', long('y', 70), 13],
    ['add', 'p3', 14], // trims the timeline to 3: the floor moves
    ['add', 'p0', 1], // below the floor: no delta
    ['remove', 'p2', 8], // loses against the add at 9: no delta
    ['add', long('z', 4097), 15],
    ['add', '', 16],
  ];
  for (const [op, m, s] of writes) {
    const d = t[op](m, s);
    const alone = new Replica(w, { node: 3 });
    const changed = alone.timeline('one')[op](m, s);
    if (m === 'p0' || (op === 'remove' && m === 'p2')) assert.equal(d, null, `${op} ${m.slice(0, 8)}`);
    else {
      assert.ok(d instanceof Uint8Array && d.length > 0);
      assert.equal(d.buffer.byteLength, d.length, 'the delta owns a buffer of exactly its bytes');
      assert.equal(hex(d), hex(changed), `${op} ${m.slice(0, 8)}: the write's delta alone`);
      assert.equal(hex(d), hex(alone.encode('one')));
      b.merge('feed', d);
    }
    alone.close();
  }
  assert.equal(hex(b.encode('feed')), hex(a.encode('feed')), 'the deltas give the state');
  a.close();
  b.close();
  assert.equal(w.heapBytes, heap0, 'the module keeps no heap of the callers after the writes');
});
