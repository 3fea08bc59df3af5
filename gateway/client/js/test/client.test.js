// client.test.js - the client against a real crdtd (started here on a free port): every op,
// convergence byte for byte, timeline pages, the offline queue, resume by cursor, idempotent
// retries, token refresh, a server restart under it, persistence and compaction, refusals.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, MemoryStorage } from '../client.js';
import { NodeWebSocket } from '../node-ws.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hex, loadWasm } from './helpers.js';
import { mintToken, startCrdtd, until } from './server.js';

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
    clientId: `t-${process.pid}-${++nclient}`,
    ...opts,
  });
  clients.push(c);
  return c;
}

const online = (c) => until(() => c.status === 'online', 'online');

/** A WebSocket whose incoming messages a test can swallow (a lost ack) and count. */
function flakyWs() {
  const ctl = { drop: false, sockets: [], inBytes: [], all: [] };
  class Flaky extends NodeWebSocket {
    constructor(url, protos) {
      super(url, protos);
      ctl.sockets.push(this);
      let handler = null;
      Object.defineProperty(this, 'onmessage', {
        get: () => handler,
        set: (fn) => {
          handler = fn && ((ev) => {
            const n = typeof ev.data === 'string' ? Buffer.byteLength(ev.data) : ev.data.byteLength;
            ctl.all.push({ n, data: ev.data });
            if (!ctl.drop) fn(ev);
          });
        },
      });
    }
  }
  ctl.WebSocket = Flaky;
  return ctl;
}

test('every op applies locally at once, reaches the server and a subscriber, byte for byte', async () => {
  const a = await open();
  const b = await open();
  await online(a);
  await online(b);
  await b.subscribe({ prefixes: ['ops:'] });
  const changes = [];
  b.on('change', (e) => changes.push(e));

  const tl = a.timeline('ops:feed');
  assert.equal(typeof tl.add('post:1', 100), 'number');
  tl.add('post:2', 200);
  tl.add('post:3', 300);
  assert.equal(tl.remove('post:2', 200) !== null, true);
  assert.deepEqual(tl.newest(10).map((e) => e.member), ['post:3', 'post:1']);
  a.gcounter('ops:views').incr(5);
  a.pncounter('ops:likes').incr(3);
  a.pncounter('ops:likes').decr(1);
  a.register('ops:title').set('hello');
  a.lwwset('ops:follows').add('bob');
  a.lwwset('ops:follows').add('carol');
  a.lwwset('ops:follows').remove('bob');
  a.orset('ops:tags').add('crdt');
  a.orset('ops:tags').add('wasm');
  a.orset('ops:tags').remove('crdt');
  // local reads at once
  assert.equal(a.gcounter('ops:views').value(), 5);
  assert.equal(a.pncounter('ops:likes').value(), 2);
  assert.equal(a.register('ops:title').get(), 'hello');
  assert.deepEqual(a.lwwset('ops:follows').members(), ['carol']);
  assert.deepEqual(a.orset('ops:tags').members(), ['wasm']);
  assert.ok(a.pending > 0);
  await a.flush();
  assert.equal(a.pending, 0);

  const keys = ['ops:feed', 'ops:views', 'ops:likes', 'ops:title', 'ops:follows', 'ops:tags'];
  await until(() => keys.every((k) => b.replica.has(k) && hex(b.replica.encode(k)) === hex(a.replica.encode(k))), 'b converges');
  assert.ok(changes.every((e) => e.source === 'remote'));
  assert.equal(b.register('ops:title').get(), 'hello');
  assert.equal(b.pncounter('ops:likes').value(), 2);

  // a fresh client catching up from 0 gets the server's states: the same bytes
  const c = await open();
  await online(c);
  await c.subscribe({ keys });
  for (const k of keys) assert.equal(hex(c.replica.encode(k)), hex(a.replica.encode(k)), k);
  assert.equal(c.type('ops:tags'), 'orset');
});

test('timeline pages with a cursor; a write of nothing is not sent', async () => {
  const a = await open();
  const tl = a.timeline('page:1');
  for (let i = 1; i <= 7; i++) tl.add(`m${i}`, i * 10);
  assert.equal(tl.add('m1', 10), null); // already there: no op
  const seen = [];
  let after = null;
  let pages = 0;
  do {
    const p = tl.page({ limit: 3, after });
    seen.push(...p.entries.map((e) => e.member));
    after = p.next;
    pages++;
  } while (after);
  assert.equal(pages, 3);
  assert.deepEqual(seen, ['m7', 'm6', 'm5', 'm4', 'm3', 'm2', 'm1']);
  assert.deepEqual(tl.range({ offset: 2, count: 2 }).map((e) => e.score), [50, 40]);
  assert.equal(tl.size, 7);
  assert.equal(tl.score('m3'), 30);
  await a.flush();
});

test('offline: reads and writes work, the queue is sent on connect, exactly once', async () => {
  const a = await open({ autoConnect: false });
  assert.equal(a.status, 'offline');
  a.pncounter('off:n').incr(2);
  a.orset('off:s').add('x');
  a.timeline('off:t').add('e', 1);
  assert.equal(a.pending, 3);
  assert.equal(a.pncounter('off:n').value(), 2);
  const pend = [];
  a.on('pending', (e) => pend.push(e.count));
  a.connect();
  await a.flush();
  assert.equal(a.pending, 0);
  assert.equal(pend.at(-1), 0);
  const b = await open();
  await online(b);
  await b.subscribe({ keys: ['off:n', 'off:s', 'off:t'] });
  assert.equal(b.pncounter('off:n').value(), 2);
  assert.deepEqual(b.orset('off:s').members(), ['x']);
});

test('resume: after a reconnect exactly the keys changed meanwhile come again', async () => {
  const a = await open();
  const b = await open();
  await online(a);
  for (let i = 0; i < 5; i++) a.gcounter(`res:${i}`).incr(1);
  await a.flush();
  await online(b);
  await b.subscribe({ prefixes: ['res:'] });
  assert.equal(b.keys().filter((k) => k.startsWith('res:')).length, 5);
  b.disconnect();
  assert.equal(b.status, 'offline');
  a.gcounter('res:2').incr(4);
  await a.flush();
  const got = [];
  b.on('change', (e) => got.push(e.key));
  const synced = new Promise((r) => b.on('synced', r));
  b.connect();
  await synced;
  assert.deepEqual(got, ['res:2']);
  assert.equal(b.gcounter('res:2').value(), 5);
});

test('a retry after a lost ack is acked as a duplicate and applied once', async () => {
  const ctl = flakyWs();
  const a = await open({ WebSocket: ctl.WebSocket });
  const watch = await open();
  await online(a);
  await online(watch);
  await watch.subscribe({ keys: ['dup:n'] });
  ctl.drop = true; // the ack will be lost
  const id = a.pncounter('dup:n').incr(1);
  const acked = a.whenAcked(id);
  await until(() => watch.pncounter('dup:n').value() === 1, 'the server applied the op');
  ctl.drop = false;
  ctl.sockets.at(-1).close(); // the session drops before the client saw the ack
  const ack = await acked;
  assert.equal(ack.id, id);
  assert.equal(ack.duplicate, true);
  assert.equal(ack.applied, false);
  const b = await open();
  await online(b);
  await b.subscribe({ keys: ['dup:n'] });
  assert.equal(b.pncounter('dup:n').value(), 1);
});

test('a small timeline change reaches a subscriber in far fewer bytes than 245', async (t) => {
  const ctl = flakyWs();
  const a = await open();
  const b = await open({ WebSocket: ctl.WebSocket });
  await online(a);
  await online(b);
  await b.subscribe({ keys: ['feed:12'] });
  const from = ctl.all.length;
  a.timeline('feed:12').add('post:3', 1700000400);
  await until(() => b.timeline('feed:12').size === 1, 'the change');
  const msgs = ctl.all.slice(from).filter((m) => typeof m.data !== 'string');
  assert.equal(msgs.length, 1);
  const payload = msgs[0].n;
  const wire = payload + 2; // a server frame under 126 bytes has a 2-byte header
  t.diagnostic(`one timeline change: ${payload} bytes of payload, ${wire} on the wire (JSON: 245, Yjs: 70)`);
  assert.ok(wire < 70, `${wire} bytes`);
});

test('a refused write: an error event with its id, whenAcked rejects, the queue moves on', async () => {
  const s2 = await startCrdtd({ secret: true, persist: false });
  try {
    const c = await Client.open({
      url: s2.url(), wasm, WebSocket: NodeWebSocket, backoff: { minMs: 20, maxMs: 200 },
      token: mintToken({ write: [] }), // reads everything, writes nothing
    });
    clients.push(c);
    await online(c);
    const errs = [];
    c.on('error', (e) => errs.push(e));
    const id = c.gcounter('ro:n').incr(1);
    await assert.rejects(c.whenAcked(id), (e) => e.code === 'unauthorized' && e.id === id);
    assert.equal(c.pending, 0);
    assert.equal(errs[0].code, 'unauthorized');
    assert.equal(c.status, 'online');
    const w = await Client.open({ url: s2.url(), wasm, WebSocket: NodeWebSocket, token: mintToken({ read: [] }) });
    clients.push(w);
    await online(w);
    await assert.rejects(w.subscribe({ prefixes: [''] }), (e) => e.code === 'unauthorized');
    assert.deepEqual(w.subscriptions().prefixes, []);
  } finally {
    await s2.stop();
  }
});

test('token refresh: an expiring token is replaced through getToken, writes carry on', async () => {
  const s2 = await startCrdtd({ secret: true, persist: false });
  try {
    let calls = 0;
    const c = await Client.open({
      url: s2.url(), wasm, WebSocket: NodeWebSocket, backoff: { minMs: 20, maxMs: 200 },
      getToken: async () => {
        calls++;
        return mintToken({ ttl: calls === 1 ? 2 : 3600 });
      },
    });
    clients.push(c);
    await online(c);
    assert.ok(calls >= 1 && calls <= 2);
    await c.subscribe({ keys: ['tok:n'] });
    const statuses = [];
    let welcomes = 0;
    c.on('status', (e) => statuses.push(e.status));
    c.on('welcome', () => welcomes++);
    // the next token is fetched ahead of the expiry; the server ends the session at it (4001);
    // the client starts a new one with the token it already has
    await until(() => calls === 2, 'the next token fetched ahead', 3000);
    await until(() => welcomes === 1 && c.status === 'online', 'a new session after the expiry', 8000);
    assert.ok(statuses.includes('connecting'));
    assert.equal(calls, 2, 'no fetch after the expiry: the token was at hand');
    c.gcounter('tok:n').incr(1);
    await c.flush();
    // a bad token with no way to renew it: offline, and a clear error
    const bad = await Client.open({ url: s2.url(), wasm, WebSocket: NodeWebSocket, token: mintToken({ secret: 'wrong-secret-wrong-secret' }) });
    clients.push(bad);
    const e = await new Promise((r) => bad.on('error', r));
    assert.equal(e.code, 'token');
    await until(() => bad.status === 'offline', 'offline');
    // getToken handing out a refused token: reported, retried with backoff, not in a tight loop
    let badCalls = 0;
    const loop = await Client.open({
      url: s2.url(), wasm, WebSocket: NodeWebSocket, backoff: { minMs: 100, maxMs: 400 },
      getToken: () => (badCalls++, mintToken({ secret: 'wrong-secret-wrong-secret' })),
    });
    clients.push(loop);
    const tokenErrors = [];
    loop.on('error', (e) => e.code === 'token' && tokenErrors.push(e));
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(tokenErrors.length >= 1, 'the refusal is reported');
    assert.ok(badCalls >= 2 && badCalls <= 12, `${badCalls} getToken calls in 1 s`);
    assert.equal(loop.status, 'connecting');
    loop.disconnect();
  } finally {
    await s2.stop();
  }
});

test('a server restart under the client: it reconnects, resumes and sends what it queued', async () => {
  const s2 = await startCrdtd({ persist: true });
  try {
    const mk = (extra) => Client.open({ url: s2.url(), wasm, WebSocket: NodeWebSocket, backoff: { minMs: 20, maxMs: 200 }, ...extra });
    const a = await mk({ clientId: 'restart-a' });
    const b = await mk({ clientId: 'restart-b' });
    clients.push(a, b);
    await online(a);
    await online(b);
    await b.subscribe({ prefixes: ['rs:'] });
    a.timeline('rs:feed').add('before', 1);
    await a.flush();
    await until(() => b.timeline('rs:feed').size === 1, 'b has the first entry');
    const cursor = b.cursor;
    assert.ok(cursor > 0);
    await s2.kill();
    await until(() => a.status !== 'online' && b.status !== 'online', 'both notice');
    a.timeline('rs:feed').add('while-down', 2);
    assert.equal(a.pending, 1);
    await s2.restart();
    await a.flush();
    await until(() => b.timeline('rs:feed').size === 2, 'b gets the entry written while the server was down', 8000);
    assert.equal(b.node, 1);
    assert.ok(b.cursor >= cursor);
  } finally {
    await s2.stop();
  }
});

test('persistence: the replica, the queue and the cursor survive a reload; compaction by bytes', async () => {
  const storage = new MemoryStorage();
  const a = await open({ storage, autoConnect: false, clientId: 'persist-a', compactBytes: 200 });
  const tl = a.timeline('p:feed');
  for (let i = 0; i < 300; i++) tl.add(`post:${i}`, i);
  a.gcounter('p:n').incr(3);
  const pending = a.pending;
  assert.ok(pending < 300, `queued deltas of one key were joined (${pending} ops)`);
  await a.close();
  const used = storage.bytes;
  // 300 entries: the whole state is about 300 * 11 bytes; appended deltas alone would be more
  assert.ok(used < 300 * 26 * 2, `${used} bytes stored`);

  const b = await open({ storage, autoConnect: false, clientId: 'persist-a' });
  assert.equal(b.timeline('p:feed').size, 300);
  assert.equal(b.gcounter('p:n').value(), 3);
  assert.equal(b.pending, pending);
  b.connect();
  await b.flush();
  const c = await open();
  await online(c);
  await c.subscribe({ keys: ['p:feed', 'p:n'] });
  assert.equal(c.timeline('p:feed').size, 300);
  assert.equal(hex(c.replica.encode('p:feed')), hex(b.replica.encode('p:feed')));
  const cursor = c.cursor;
  const storage2 = new MemoryStorage();
  const d = await open({ storage: storage2, clientId: 'persist-d' });
  await online(d);
  await d.subscribe({ keys: ['p:n'] });
  const cur = d.cursor;
  await d.close();
  const d2 = await open({ storage: storage2, clientId: 'persist-d', autoConnect: false });
  assert.equal(d2.cursor, cur);
  assert.deepEqual(d2.subscriptions().keys.map((k) => Buffer.from(k).toString()), ['p:n']);
  assert.equal(d2.gcounter('p:n').value(), 3);
  assert.ok(cursor > 0);
});

test('a write over the server\'s --ws-max-message is refused by the client with its id', async () => {
  const s2 = await startCrdtd({ persist: false, args: ['--ws-max-message', '4096'] });
  try {
    const c = await Client.open({ url: s2.url(), wasm, WebSocket: NodeWebSocket, clientId: 'big' });
    clients.push(c);
    await online(c);
    const errs = [];
    c.on('error', (e) => errs.push(e));
    const id = c.register('big:r').set('x'.repeat(5000));
    await assert.rejects(c.whenAcked(id), (e) => e.code === 'too_large' && e.id === id);
    assert.equal(errs.length, 1);
    assert.equal(c.pending, 0);
    const ok2 = c.register('big:s').set('small');
    assert.equal((await c.whenAcked(ok2)).applied, true);
    assert.equal(c.status, 'online');
  } finally {
    await s2.stop();
  }
});

test('compaction by bytes: a key\'s appended deltas never outweigh its state (and 4 KiB) for long', async () => {
  const storage = new MemoryStorage();
  const a = await open({ storage, autoConnect: false, clientId: 'compact' });
  const tl = a.timeline('c:feed');
  let worst = 0;
  let rewrites = 0;
  let last = null;
  for (let i = 0; i < 2000; i++) {
    tl.add(`a-rather-long-member-name-${i}`, i);
    if (i % 50 === 49) {
      await new Promise((r) => setTimeout(r, 1)); // let the batch be written
      const k = (await storage.load()).keys.find((x) => Buffer.from(x.key).toString() === 'c:feed');
      const logged = k.deltas.reduce((n, d) => n + d.length, 0);
      const bound = Math.max(4096, k.state?.length ?? 0);
      worst = Math.max(worst, logged / bound);
      if (k.state && k.state !== last) rewrites++;
      last = k.state;
    }
  }
  await a.close();
  assert.ok(worst <= 1.05, `appended deltas reached ${worst.toFixed(2)}x of their bound`);
  assert.ok(rewrites >= 2, `the state was rewritten ${rewrites} times`);
  const b = await open({ storage, autoConnect: false, clientId: 'compact' });
  assert.equal(b.timeline('c:feed').size, 1000, 'restored with its bound (1000 of 2000 kept)');
});

test('wss://: the same client over TLS, checked against the CA; a wrong CA is refused', async () => {
  const certs = mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'crdtd-js-tls-'));
  const script = fileURLToPath(new URL('../../../../scripts/tls-certs.sh', import.meta.url));
  execFileSync('sh', [script, certs, 'localhost'], { stdio: 'ignore' });
  const other = path.join(certs, 'other');
  execFileSync('sh', [script, other, 'localhost'], { stdio: 'ignore' }); // another CA
  const s2 = await startCrdtd({ persist: false, args: ['--tls-cert', path.join(certs, 'localhost.pem'), '--tls-key', path.join(certs, 'localhost.key')] });
  try {
    assert.match(s2.url(), /^wss:/);
    const withCa = (ca) => class extends NodeWebSocket {
      constructor(u, p) {
        super(u, p, { ca });
      }
    };
    const a = await Client.open({ url: s2.url(), wasm, WebSocket: withCa(readFileSync(path.join(certs, 'ca.pem'))), clientId: 'tls-a' });
    const b = await Client.open({ url: s2.url(), wasm, WebSocket: withCa(readFileSync(path.join(certs, 'ca.pem'))), clientId: 'tls-b' });
    clients.push(a, b);
    await online(a);
    await online(b);
    await b.subscribe({ keys: ['tls:feed'] });
    a.timeline('tls:feed').add('secure', 1);
    await a.flush();
    await until(() => b.timeline('tls:feed').size === 1, 'the change over wss://');
    const bad = await Client.open({ url: s2.url(), wasm, WebSocket: withCa(readFileSync(path.join(other, 'ca.pem'))), clientId: 'tls-bad', backoff: { minMs: 50, maxMs: 100 } });
    clients.push(bad);
    await new Promise((r) => setTimeout(r, 500));
    assert.notEqual(bad.status, 'online', 'a certificate of another CA is not accepted');
    bad.disconnect();
  } finally {
    await s2.stop();
    rmSync(certs, { recursive: true, force: true });
  }
});

test('bad arguments get clear errors', async () => {
  await assert.rejects(Client.open({ url: 'http://x/', wasm }), /ws:\/\/ or wss:\/\//);
  await assert.rejects(Client.open({ url: 'ws://x/' }), /CrdtWasm/);
  await assert.rejects(Client.open({ url: 'ws://x/', wasm, binary: false }), /binary/);
  const a = await open({ autoConnect: false });
  assert.throws(() => a.gcounter('x').incr(-1), /non-negative/);
  assert.throws(() => a.timeline('x:t').add('m', 'high'), /score/);
  assert.throws(() => a.timeline('x\uDFFF').add('m', 1), /lone surrogate/);
  assert.throws(() => a.timeline(new Uint8Array(0)).add('m', 1), /empty key/);
  a.gcounter('x:c').incr(1);
  assert.throws(() => a.timeline('x:c').add('m', 1), /holds a gcounter/);
  await assert.rejects(a.whenAcked(12345), /not pending/);
});
