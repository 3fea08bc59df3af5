// polish.test.js - against a real crdtd: keys of any bytes, subscribe()'s promise and the catch-up,
// the network's online/offline events, errors found while restoring the storage, and deletes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, MemoryStorage, keyBytes, keyId, keyOut } from '../client.js';
import { NodeWebSocket } from '../node-ws.js';
import { hex, loadWasm } from './helpers.js';
import { startCrdtd, until } from './server.js';

let wasm;
let srv;
const clients = [];

before(async () => {
  wasm = await loadWasm();
  srv = await startCrdtd();
});

after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await srv?.stop();
});

let nclient = 0;
async function open(opts = {}) {
  const c = await Client.open({
    url: srv.url(),
    wasm,
    WebSocket: NodeWebSocket,
    backoff: { minMs: 20, maxMs: 200 },
    clientId: `p-${process.pid}-${++nclient}`,
    ...opts,
  });
  clients.push(c);
  return c;
}

const online = (c) => until(() => c.status === 'online', 'online');
const b64url = (u8) => Buffer.from(u8).toString('base64url');
const get64 = (u8) => fetch(`${srv.http()}/v1/keys64/${b64url(u8)}`);

test('key ids: text keys are their strings, other bytes round-trip as Uint8Array', () => {
  const bin = new Uint8Array([0xff, 0x00, 0x41]);
  assert.equal(keyId(new TextEncoder().encode('feed:ü')), 'feed:ü');
  assert.deepEqual([...keyBytes(keyId(bin))], [...bin]);
  assert.ok(keyOut(bin) instanceof Uint8Array);
  assert.deepEqual([...keyOut(keyId(bin))], [...bin]);
  assert.equal(keyOut('feed:1'), 'feed:1');
  // a BOM at the start of a key is kept (the decoder must not strip it)
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x61]);
  assert.deepEqual([...keyBytes(keyId(bom))], [...bom]);
  assert.notEqual(keyId(bom), keyId('a'));
  assert.throws(() => keyId('x\uD800'), /lone surrogate/);
  // the scan for surrogates before the regular expressions: pairs and binary ids pass, a lone
  // one anywhere is refused
  assert.equal(keyId('feed:\u{1F600}'), 'feed:\u{1F600}');
  assert.equal(keyId(keyId(bin)), keyId(bin));
  assert.throws(() => keyId('\uDFFFfeed'), /lone surrogate/);
  assert.throws(() => keyId('feed\uDC00'), /lone surrogate/);
  assert.throws(() => keyId(42), /string or a Uint8Array/);
});

test('binary keys: written, subscribed by key and by prefix, change events round-trip', async () => {
  const a = await open();
  const b = await open();
  const c = await open({ encoding: 'bytes' });
  await Promise.all([online(a), online(b), online(c)]);
  const pre = new Uint8Array([0x00, 0xfe]);
  const kTl = new Uint8Array([0x00, 0xfe, 0x01, 0xff]);
  const kCnt = new Uint8Array([0x00, 0xfe, 0x02, 0x80]);
  const kText = new Uint8Array([0x00, 0xfe, 0x41]); // 0xfe is never UTF-8
  await b.subscribe({ prefixes: [pre] });
  await c.subscribe({ keys: [kTl] });
  const seen = [];
  b.on('change', (e) => seen.push(e));
  const seenC = [];
  c.on('change', (e) => seenC.push(e));

  const id = a.timeline(kTl).add('post:1', 10);
  a.pncounter(kCnt).incr(7);
  a.register(kText).set('v');
  assert.equal(typeof id, 'number');
  assert.deepEqual(a.timeline(kTl).newest().map((e) => e.member), ['post:1']);
  await a.flush();

  // the server holds them under their bytes
  const r = await get64(kTl);
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.equal(body.type, 'timeline');
  assert.equal((await get64(kCnt)).status, 200);

  await until(() => b.pncounter(kCnt).value() === 7 && b.timeline(kTl).size === 1 && b.register(kText).get() === 'v', 'b converges');
  for (const k of [kTl, kCnt, kText]) assert.equal(hex(b.replica.encode(k)), hex(a.replica.encode(k)));
  // change events give the key as a Uint8Array (the bytes are not text), and it addresses the key
  const ev = seen.find((e) => e.type === 'timeline');
  assert.ok(ev.key instanceof Uint8Array, 'binary key given as bytes');
  assert.deepEqual([...ev.key], [...kTl]);
  assert.deepEqual([...ev.keyBytes], [...kTl]);
  assert.deepEqual(b.timeline(ev.key).newest().map((e) => e.member), ['post:1']);
  assert.ok(b.keys().some((k) => k instanceof Uint8Array && hex(k) === hex(kCnt)), 'keys() lists it as bytes');
  // a text key subscribed as bytes: given back as its string
  await b.subscribe({ keys: [new TextEncoder().encode('bin:text')] });
  a.gcounter('bin:text').incr(1);
  await until(() => seen.some((e) => e.key === 'bin:text'), 'a text key as a string');

  await until(() => seenC.length === 1, 'c, by key');
  assert.ok(seenC[0].key instanceof Uint8Array);
  assert.equal(hex(seenC[0].key), hex(kTl));
  assert.equal(c.pncounter(kCnt).value(), 0, 'c did not subscribe to the counter');
  // unsubscribe by bytes: nothing more arrives
  await c.unsubscribe({ keys: [kTl] });
  assert.equal(c.subscriptions().keys.length, 0);
});

test('binary keys survive a reload through the storage, queue included', async () => {
  const storage = new MemoryStorage();
  const k = new Uint8Array([0xc0, 0xaf, 0x01]);
  const a = await open({ autoConnect: false, storage, clientId: 'p-bin-reload' });
  a.orset(k).add('x');
  const sub = assert.rejects(a.subscribe({ keys: [k] }), /closed/); // never connected: close() rejects it
  await a.close();
  await sub;
  const b = await open({ storage, clientId: 'p-bin-reload' });
  assert.deepEqual(b.orset(k).members(), ['x']);
  assert.equal(b.pending, 1);
  assert.equal(hex(b.subscriptions().keys[0]), hex(k));
  await b.flush();
  assert.equal((await get64(k)).status, 200);
});

test('subscribe() resolves when the catch-up is complete, online or issued offline', async () => {
  const w = await open();
  await online(w);
  for (let i = 0; i < 20; i++) w.gcounter(`sub:${i}`).incr(i + 1);
  await w.flush();

  // online: every key of the prefix is in the replica when the promise resolves
  const a = await open();
  await online(a);
  await a.subscribe({ prefixes: ['sub:'] });
  assert.equal(a.keys().filter((k) => k.startsWith('sub:')).length, 20);
  assert.equal(a.gcounter('sub:19').value(), 20);
  // subscribing again to what is caught up resolves at once
  await a.subscribe({ prefixes: ['sub:'] });

  // issued offline: it waits for the connection and resolves after the resume's catch-up
  const b = await open({ autoConnect: false });
  let done = false;
  const p = b.subscribe({ prefixes: ['sub:'], keys: ['sub:3'] }).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(done, false, 'not resolved while offline');
  b.connect();
  await p;
  assert.equal(b.keys().filter((k) => k.startsWith('sub:')).length, 20, 'caught up when it resolved');
  assert.equal(b.gcounter('sub:3').value(), 4);

  // issued after a disconnect, for a topic held from before: resolves after the resume
  b.disconnect();
  w.gcounter('sub:5').incr(100);
  await w.flush();
  done = false;
  const q = b.subscribe({ prefixes: ['sub:'] }).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(done, false);
  b.connect();
  await q;
  assert.equal(b.gcounter('sub:5').value(), 106, 'what changed meanwhile is in when it resolves');

  // a refused subscribe rejects (a key over --max-key)
  await assert.rejects(b.subscribe({ keys: ['k'.repeat(100000)] }), /server/);
  // close() rejects what still waits
  const c = await open({ autoConnect: false });
  const r = assert.rejects(c.subscribe({ keys: ['sub:1'] }), /closed/);
  await c.close();
  await r;
});

test('network events: offline stops sending (queued), online reconnects at once', async () => {
  const net = new EventTarget();
  net.onLine = true;
  // a backoff so long that only the 'online' event can bring it back within the test
  const a = await open({ network: net, backoff: { minMs: 60000, maxMs: 60000 } });
  await online(a);
  const statuses = [];
  a.on('status', (e) => statuses.push(e.status));
  net.onLine = false;
  net.dispatchEvent(new Event('offline'));
  assert.equal(a.status, 'offline');
  a.gcounter('net:n').incr(3);
  assert.equal(a.pending, 1);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(a.pending, 1, 'nothing sent while offline');
  assert.equal((await fetch(`${srv.http()}/v1/keys/net%3An`)).status, 404, 'the server did not get it');
  assert.equal(a.status, 'offline', 'and no reconnect attempt');
  net.onLine = true;
  net.dispatchEvent(new Event('online'));
  await until(() => a.status === 'online', 'online at once, not after the 60 s backoff', 3000);
  await a.flush();
  assert.equal((await fetch(`${srv.http()}/v1/keys/net%3An`)).status, 200);
  assert.deepEqual(statuses.slice(0, 2), ['offline', 'connecting']);

  // a client opened while the network is down stays offline until 'online'
  net.onLine = false;
  const b = await open({ network: net });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(b.status, 'offline');
  net.onLine = true;
  net.dispatchEvent(new Event('online'));
  await online(b);
  // close() lets go of the events
  await b.close();
  net.dispatchEvent(new Event('online'));
  assert.equal(b.status, 'offline');
});

test('errors found while restoring the storage reach listeners attached after open()', async () => {
  const storage = new MemoryStorage();
  await storage.write({
    meta: { clientId: 'p-restore', nextOpId: 1, cursor: 0, node: 0, keys: [], prefixes: [], fresh: { keys: [], prefixes: [] } },
    states: [{ key: new TextEncoder().encode('bad:state'), state: new Uint8Array([0x06, 0xff, 0xff, 0xff]) }],
    ops: [{ id: 5, key: new TextEncoder().encode('bad:op'), delta: new Uint8Array([0x99]) }],
  });
  const good = wasm.create('gcounter');
  good.incr(2, 9n);
  await storage.write({ states: [{ key: new TextEncoder().encode('good'), state: good.encode() }] });
  good.free();
  const c = await open({ storage, autoConnect: false, clientId: 'p-restore' });
  const errs = [];
  c.on('error', (e) => errs.push(e));
  assert.equal(c.restoreErrors.length, 2, 'listed at once');
  await until(() => errs.length === 2, 'emitted to a listener attached after open()');
  assert.ok(errs.every((e) => e.code === 'storage'));
  assert.match(errs[0].message, /bad:state/);
  assert.match(errs[1].message, /op 5/);
  assert.equal(c.gcounter('good').value(), 2, 'the rest restored');
  assert.equal(c.pending, 0, 'the unreadable op is not queued');
});

test('delete() per type converges with the server: GET is 404 after, subscribers see it', async () => {
  const a = await open();
  const b = await open();
  await Promise.all([online(a), online(b)]);
  await b.subscribe({ prefixes: ['del:'] });
  const errs = [];
  a.on('error', (e) => errs.push(e));
  b.on('error', (e) => errs.push(e));
  a.timeline('del:tl').add('p1', 1);
  a.timeline('del:tl').add('p2', 2);
  a.pncounter('del:pn').incr(5);
  a.register('del:reg').set('v');
  a.lwwset('del:lw').add('m');
  a.orset('del:or').add('m');
  a.gcounter('del:g').incr(1);
  a.orset(new Uint8Array([0xff, 0x01])).add('z');
  await a.flush();
  const names = ['del:tl', 'del:pn', 'del:reg', 'del:lw', 'del:or'];
  for (const k of names) assert.equal((await fetch(`${srv.http()}/v1/keys/${encodeURIComponent(k)}`)).status, 200, k);
  await until(() => b.pncounter('del:pn').value() === 5 && b.orset('del:or').has('m') && b.timeline('del:tl').size === 2, 'b has them');

  const ids = [
    a.timeline('del:tl').delete(),
    a.pncounter('del:pn').delete(),
    a.register('del:reg').delete(),
    a.lwwset('del:lw').delete(),
    a.orset('del:or').delete(),
    a.orset(new Uint8Array([0xff, 0x01])).delete(),
  ];
  assert.ok(ids.every((id) => typeof id === 'number'), 'each delete is a queued write');
  assert.equal(a.gcounter('del:g').delete, undefined, 'a gcounter cannot be deleted');
  assert.equal(a.timeline('del:none').delete(), null, 'nothing there: no write');
  assert.equal(a.orset('del:or').delete(), null, 'nothing live: no write');
  // local reads at once
  assert.deepEqual(a.timeline('del:tl').newest(), []);
  assert.equal(a.pncounter('del:pn').value(), 0);
  assert.equal(a.register('del:reg').get(), null);
  assert.deepEqual(a.lwwset('del:lw').members(), []);
  assert.deepEqual(a.orset('del:or').members(), []);
  await a.flush();
  for (const k of names) assert.equal((await fetch(`${srv.http()}/v1/keys/${encodeURIComponent(k)}`)).status, 404, `${k} after delete`);
  assert.equal((await get64(new Uint8Array([0xff, 0x01]))).status, 404);
  await until(() => names.every((k) => hex(b.replica.encode(k)) === hex(a.replica.encode(k))), 'b converges on the deletes');
  assert.equal(b.pncounter('del:pn').value(), 0);
  assert.deepEqual(b.orset('del:or').members(), []);

  // observed-remove: a write after the delete makes the key live again, everywhere
  a.register('del:reg').set('again');
  await a.flush();
  const r = await fetch(`${srv.http()}/v1/keys/del%3Areg`);
  assert.equal(r.status, 200);
  await until(() => b.register('del:reg').get() === 'again', 'b sees the new value');
  assert.deepEqual(errs.map((e) => e.message), [], 'no error on either side (a cleared register merges cleanly)');
});
