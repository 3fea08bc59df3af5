// local-replica.js - two local replicas of an activity feed, converging through their deltas
//
//   scripts/build-wasm.sh && node gateway/client/js/examples/local-replica.js
//
// Each write returns its delta in libcrdt's binary encoding (what crdtd stores and sends); here
// the "network" is an array, and each replica merges what the other wrote.
import { fileURLToPath } from 'node:url';
import { CrdtWasm, Replica } from '../crdt-wasm.js';

const wasmFile = process.env.CRDT_WASM ?? fileURLToPath(new URL('../../../../build-wasm/crdt.wasm', import.meta.url));
const wasm = await CrdtWasm.load(wasmFile);

const alice = new Replica(wasm, { node: 1 });
const bob = new Replica(wasm, { node: 2 });
const wire = []; // [from, key, delta]
const send = (from, key, delta) => delta && wire.push([from, key, delta]);

// offline, each on its own: a bounded feed, like counters, a follow set, a title
send(alice, 'feed:1', alice.timeline('feed:1', { maxSize: 100 }).add('post:1', 1700000000));
send(alice, 'likes:post:1', alice.pncounter('likes:post:1').incr());
send(bob, 'feed:1', bob.timeline('feed:1', { maxSize: 100 }).add('post:2', 1700000060));
send(bob, 'likes:post:1', bob.pncounter('likes:post:1').incr());
send(bob, 'follows:bob', bob.orset('follows:bob').add('alice'));
send(alice, 'title', alice.register('title').set('Our feed'));

// back online: everyone merges what the others wrote
for (const [from, key, delta] of wire) for (const r of [alice, bob]) if (r !== from) r.merge(key, delta);

for (const [name, r] of [['alice', alice], ['bob', bob]]) {
  const feed = r.timeline('feed:1').newest(10).map((e) => `${e.member}@${e.score}`);
  console.log(`${name}: feed ${feed.join(', ')}; likes ${r.pncounter('likes:post:1').value()};`,
    `bob follows ${r.orset('follows:bob').members().join(', ')}; title "${r.register('title').get().value}"`);
}
const same = ['feed:1', 'likes:post:1', 'follows:bob', 'title'].every(
  (k) => Buffer.compare(alice.encode(k), bob.encode(k)) === 0);
console.log(same ? 'converged: identical encodings' : 'DIVERGED');
console.log(`a delta on the wire: ${wire[0][2].length} bytes; the whole feed: ${alice.encode('feed:1').length} bytes`);
alice.close();
bob.close();
process.exitCode = same ? 0 : 1;
