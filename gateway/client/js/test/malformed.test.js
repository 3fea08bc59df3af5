// malformed.test.js - a scripted server sends what crdtd never would: the client reports each
// with a clear 'error' event, keeps its replica and its queue, and resumes on a new session.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, binary } from '../client.js';
import { NodeWebSocket } from '../node-ws.js';
import { hex, loadWasm } from './helpers.js';
import { fakeServer, until, welcome } from './server.js';

let wasm;
before(async () => {
  wasm = await loadWasm();
});

/** A binary change as crdtd sends it (crdt_v1_bin.h). */
function change(cursor, seq, key, bytes, full = false) {
  const k = Buffer.from(key);
  return Buffer.concat([Buffer.from([0x41, cursor, full ? 1 : 0, seq, k.length]), k, Buffer.from(bytes)]);
}

const cases = [
  ['an unknown binary type', () => [0x99, 1, 2]],
  ['a truncated change', () => [0x41, 5]],
  ['a change with unknown flag bits', () => [0x41, 5, 0x80, 5, 1, 0x6b, 1, 1]],
  ['a change whose state is corrupt', (good) => { const b = Buffer.from(good); b[b.length - 1] ^= 0xff; return change(9, 9, 'm:t', b); }],
  ['a change of another type than the key holds', (good, counter) => change(9, 9, 'm:t', counter)],
  ['an ack with bytes after it', () => [0x42, 1, 5, 5, 0]],
  ['text that is not JSON', () => '{"type":'],
  ['a JSON change on a binary session', () => JSON.stringify({ type: 'change', cursor: 1, seq: 1, key: 'bTp0', delta: {} })],
  ['a second welcome', () => welcome()],
];

test('malformed or unexpected server messages: a clear error, the data kept, a new session', async () => {
  const sessions = [];
  const srv = await fakeServer((s) => sessions.push(s));
  const a = await Client.open({ url: srv.url, wasm, WebSocket: NodeWebSocket, backoff: { minMs: 10, maxMs: 50 }, clientId: 'mal' });
  try {
    a.timeline('m:t').add('kept', 1);
    const keep = hex(a.replica.encode('m:t'));
    const other = await Client.open({ url: 'ws://127.0.0.1:1/', wasm, autoConnect: false });
    other.gcounter('c').incr(1);
    const counter = other.replica.encode('c');
    const good = a.replica.encode('m:t');
    await other.close();
    const errors = [];
    a.on('error', (e) => errors.push(e));
    for (const [what, make] of cases) {
      await until(() => sessions.length > 0, 'a session');
      const s = sessions.at(-1);
      const hello = await s.next();
      assert.equal(hello.type, 'hello', what);
      assert.equal(hello.client, 'mal');
      s.send(welcome());
      // the client resubscribes nothing and resends its queued op: take it
      const op = await s.next();
      assert.ok(op instanceof Uint8Array && op[0] === 0x03, `${what}: the queued apply is sent`);
      const n = sessions.length;
      const bad = make(good, counter);
      s.send(typeof bad === 'string' ? bad : new Uint8Array(bad));
      await until(() => errors.length > 0, `${what}: an error event`);
      const e = errors.shift();
      assert.equal(e.name, 'ClientError', what);
      assert.equal(e.code, 'protocol', what);
      assert.match(e.message, /malformed or unexpected server message/, what);
      assert.equal(hex(a.replica.encode('m:t')), keep, `${what}: the replica is kept`);
      assert.equal(a.pending, 1, `${what}: the queue is kept`);
      await until(() => sessions.length > n, `${what}: a new session`);
    }
    // an unknown JSON type (a newer server's) is reported and skipped, the session goes on
    const s = sessions.at(-1);
    await s.next();
    s.send(welcome());
    const op = await s.next();
    const n = sessions.length;
    s.send(JSON.stringify({ type: 'future-thing' }));
    await until(() => errors.length > 0, 'an error for the unknown type');
    assert.equal(errors.shift().code, 'protocol');
    // then a good ack completes the op on the same session
    const id = Number(binaryId(op));
    s.send(new Uint8Array([0x42, 1, ...varint(id), 7]));
    await a.flush();
    assert.equal(sessions.length, n);
    assert.equal(a.status, 'online');
    // and a good change merges
    const d = change(8, 8, 'm:t', (() => { const o = wasm.create('timeline', { maxSize: 1000 }); const x = o.add('remote', 2); o.free(); return x; })());
    s.send(new Uint8Array(d));
    await until(() => a.timeline('m:t').size === 2, 'the good change');
    assert.equal(a.cursor, 8);
    assert.equal(errors.length, 0);
  } finally {
    await a.close();
    await srv.stop();
  }
});

function varint(v) {
  const out = [];
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

function binaryId(u8) {
  let v = 0;
  let mul = 1;
  for (let i = 1; ; i++) {
    v += (u8[i] & 0x7f) * mul;
    if (!(u8[i] & 0x80)) return v;
    mul *= 0x80;
  }
}

test('the binary codec: what the client writes is what crdt_v1_bin.h reads', () => {
  const sub = binary.subscribe(300, [Buffer.from('a')], [Buffer.from('')], 5);
  assert.equal(Buffer.from(sub).toString('hex'), '01ac0201050200016101' + '00');
  const ap = binary.apply(1, Buffer.from('k'), new Uint8Array([1, 2]));
  assert.equal(Buffer.from(ap).toString('hex'), '030101' + '6b' + '0102');
  const un = binary.unsubscribe(2, [], [Buffer.from('p')]);
  assert.equal(Buffer.from(un).toString('hex'), '0202010101' + '70');
  assert.deepEqual(binary.decode(new Uint8Array([0x43, 2, 0x81, 1])), { type: 'subscribed', id: 2, cursor: 129 });
  assert.deepEqual(binary.decode(new Uint8Array([0x42, 3, 9, 10])), { type: 'ack', id: 9, seq: 10, applied: true, duplicate: true });
  assert.throws(() => binary.decode(new Uint8Array([0x43, 2, 0x80, 0])), /not canonical/);
  assert.throws(() => binary.decode(new Uint8Array([0x43])), /truncated/);
});

test('a storage error: the op is retried under a new, higher id, and its waiter follows it', async () => {
  const sessions = [];
  const srv = await fakeServer((s) => sessions.push(s));
  const a = await Client.open({ url: srv.url, wasm, WebSocket: NodeWebSocket, backoff: { minMs: 10, maxMs: 50 }, clientId: 'st' });
  try {
    await until(() => sessions.length > 0, 'a session');
    const s = sessions[0];
    assert.equal((await s.next()).type, 'hello');
    s.send(welcome());
    await a.whenOnline();
    const id = a.gcounter('st:n').incr(1);
    const acked = a.whenAcked(id);
    const first = await s.next();
    assert.equal(binaryId(first), id);
    const errors = [];
    a.on('error', (e) => errors.push(e));
    s.send(JSON.stringify({ type: 'error', id, code: 'storage', message: 'disk full' }));
    const again = await s.next(4000);
    const id2 = binaryId(again);
    assert.ok(id2 > id, `retried as ${id2} > ${id}`);
    assert.deepEqual(again.subarray(again.length - 10), first.subarray(first.length - 10), 'the same delta');
    assert.equal(errors[0].code, 'storage');
    assert.equal(a.pending, 1);
    s.send(new Uint8Array([0x42, 1, ...varint(id2), 9]));
    const ack = await acked;
    assert.equal(ack.id, id2);
    assert.equal(a.pending, 0);
  } finally {
    await a.close();
    await srv.stop();
  }
});
