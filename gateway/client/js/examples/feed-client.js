// feed-client.js - two clients of one crdtd: an activity feed that keeps working offline
//
//   build/gateway/crdtd --no-persist &                       # listens on 127.0.0.1:7379
//   node gateway/client/js/examples/feed-client.js ws://127.0.0.1:7379/
//
// alice and bob subscribe to the feed, alice posts, bob likes; bob goes offline, writes, comes
// back: his queued writes are sent, and both end with identical states.
import { fileURLToPath } from 'node:url';
import { Client, CrdtWasm } from '../client.js';
import { NodeWebSocket } from '../node-ws.js';

const url = process.argv[2] ?? 'ws://127.0.0.1:7379/';
const wasmFile = process.env.CRDT_WASM ?? fileURLToPath(new URL('../../../../build-wasm/crdt.wasm', import.meta.url));
const wasm = await CrdtWasm.load(wasmFile);
const WebSocket = globalThis.WebSocket ?? NodeWebSocket; // Node 20 has none of its own
const run = Date.now().toString(36); // fresh keys on every run
const feed = `feed:${run}`;
const likes = `likes:${run}:post:1`;

const open = (name) => Client.open({ url, wasm, WebSocket, clientId: `${name}-${run}` });
const alice = await open('alice');
const bob = await open('bob');
bob.on('change', (e) => e.source === 'remote' && console.log(`bob sees a change of ${e.key.replace(run, 'RUN')}`));
await Promise.all([alice.whenOnline(), bob.whenOnline()]);
await alice.subscribe({ keys: [feed, likes] });
await bob.subscribe({ keys: [feed, likes] });

alice.timeline(feed).add('post:1', 1700000000); // applied locally at once, sent, acked
await alice.flush();
await until(() => bob.timeline(feed).size === 1);

bob.disconnect(); // offline: reads and writes go on
bob.pncounter(likes).incr();
bob.timeline(feed).add('post:2', 1700000060);
console.log(`bob offline: status ${bob.status}, ${bob.pending} writes pending, feed ${entries(bob)}`);

bob.connect(); // back: resumes from its cursor, then sends the queue
await bob.flush();
await until(() => alice.timeline(feed).size === 2 && alice.pncounter(likes).value() === 1);
console.log(`alice: feed ${entries(alice)}; likes ${alice.pncounter(likes).value()}`);
console.log(`bob: feed ${entries(bob)}; likes ${bob.pncounter(likes).value()}`);
const same = [feed, likes].every((k) => Buffer.compare(alice.replica.encode(k), bob.replica.encode(k)) === 0);
console.log(same ? 'converged: identical encodings' : 'NOT converged');
await alice.close();
await bob.close();

function entries(c) {
  return c.timeline(feed).newest(10).map((e) => `${e.member}@${e.score}`).join(', ');
}

async function until(cond) {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error('timed out');
}
