// check_updates.mjs - the Yjs updates bench_yjs.c writes are the ones yjs makes for the same
// writes, byte for byte: reads `bench_yjs --print-yjs N CLIENT SHAPE` (hex, one a line) on stdin,
// makes writes 0 .. N-1 with yjs (a Y.Doc whose clientID is CLIENT: Y.Map "feed" set
// post:<i> -> 1.764e12 + i, or Y.Array "feed" push post:<i>), compares each update, and applies
// the C ones to a fresh document, which must read back the same content.
//   build-rel/bench/bench_yjs --print-yjs 300 2415919105 map | node bench/yjs/check_updates.mjs 2415919105 map
import * as Y from 'yjs';

const [clientArg, shape = 'map'] = process.argv.slice(2);
const client = Number(clientArg);
const lines = (await new Response(process.stdin).text()).trim().split('\n');
const fromHex = (h) => Uint8Array.from(h.match(/../g).map((b) => parseInt(b, 16)));
const doc = new Y.Doc();
doc.clientID = client;
let made = null;
doc.on('update', (u) => { made = u; });
const check = new Y.Doc();
for (let i = 0; i < lines.length; i++) {
  if (shape === 'map') doc.getMap('feed').set(`post:${i}`, 1764000000000 + i);
  else doc.getArray('feed').push([`post:${i}`]);
  const ours = fromHex(lines[i]);
  if (Buffer.compare(Buffer.from(made), Buffer.from(ours)) !== 0) {
    console.error(`check_updates: write ${i}: yjs makes ${Buffer.from(made).toString('hex')}, bench_yjs ${lines[i]}`);
    process.exit(1);
  }
  Y.applyUpdate(check, ours);
}
const a = JSON.stringify(doc.get('feed', shape === 'map' ? Y.Map : Y.Array).toJSON());
const b = JSON.stringify(check.get('feed', shape === 'map' ? Y.Map : Y.Array).toJSON());
if (a !== b) {
  console.error('check_updates: the updates applied do not give the same document');
  process.exit(1);
}
console.log(`check_updates: ${lines.length} ${shape} updates identical to yjs's`);
