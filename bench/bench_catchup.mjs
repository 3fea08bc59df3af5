// bench_catchup.mjs - the JavaScript client's side of bench_catchup.sh:
//   node bench/bench_catchup.mjs seed URL KEY N    writes N timeline entries to KEY (one client)
//   node bench/bench_catchup.mjs page URL KEY      one catch-up as a fresh page does it: Client.open
//                                                  (crdt.wasm already loaded), subscribe to KEY from
//                                                  0, synced, newest 50 read; prints "ms N"
import { fileURLToPath } from 'node:url';
import { Client, CrdtWasm } from '../gateway/client/js/client.js';
import { NodeWebSocket } from '../gateway/client/js/node-ws.js';

const [mode, url, key, n] = process.argv.slice(2);
const wasmFile = process.env.CRDT_WASM ?? fileURLToPath(new URL('../build-wasm/crdt.wasm', import.meta.url));
const wasm = await CrdtWasm.load(wasmFile);
const WebSocket = globalThis.WebSocket ?? NodeWebSocket;

if (mode === 'seed') {
  const c = await Client.open({ url, wasm, WebSocket, autoConnect: false, timelineMaxSize: 0, clientId: 'seed', compactBytes: 1 << 16 });
  const tl = c.timeline(key);
  for (let i = 0; i < Number(n); i++) tl.add(`post:${i}:${'x'.repeat(12)}`, 1700000000 + i);
  c.connect();
  await c.flush();
  await c.close();
  console.log(`seeded ${key} with ${n} entries`);
} else if (mode === 'page') {
  const t0 = performance.now();
  const c = await Client.open({ url, wasm, WebSocket, timelineMaxSize: 0, clientId: 'page' });
  await c.whenOnline();
  await c.subscribe({ keys: [key] });
  const page = c.timeline(key).newest(50); // rendered
  const ms = performance.now() - t0;
  const size = c.timeline(key).size;
  await c.close();
  if (page.length === 0) process.exit(1);
  console.log(`${ms.toFixed(2)} ${size}`);
} else {
  console.error('usage: bench_catchup.mjs seed URL KEY N | page URL KEY');
  process.exit(2);
}
