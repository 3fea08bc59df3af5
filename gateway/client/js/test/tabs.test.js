// tabs.test.js - tabs of one origin share one connection (tabs.js), in Node: BroadcastChannel is
// Node's own, the tabs are clients in one process sharing a MemoryStorage (as tabs share their
// IndexedDB), the leader elected over the channel and, separately, with a small Web Locks stand-in.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client, MemoryStorage } from '../client.js';
import { NodeWebSocket } from '../node-ws.js';
import { openShared } from '../tabs.js';
import { hex, loadWasm } from './helpers.js';
import { startCrdtd, until } from './server.js';

let wasm;
let srv;
before(async () => {
  wasm = await loadWasm();
  srv = await startCrdtd({ persist: false });
});
after(async () => {
  await srv?.stop();
});

/** navigator.locks' request(name, cb) for exclusive locks: cb runs when the lock is free; the
 * lock is held until the promise cb returns settles. */
class FakeLocks {
  #held = new Map();
  request(name, cb) {
    const q = this.#held.get(name) ?? [];
    this.#held.set(name, q);
    return new Promise((resolve, reject) => {
      const run = async () => {
        try {
          resolve(await cb({ name, mode: 'exclusive' }));
        } catch (e) {
          reject(e);
        } finally {
          q.shift();
          if (q.length) q[0]();
        }
      };
      q.push(run);
      if (q.length === 1) run();
    });
  }
}

function counting() {
  const ctl = { opened: 0 };
  ctl.WebSocket = class extends NodeWebSocket {
    constructor(url, p) {
      super(url, p);
      ctl.opened++;
    }
  };
  return ctl;
}

async function tabs(n, extra) {
  const ctl = counting();
  const storage = new MemoryStorage();
  const list = [];
  for (let i = 0; i < n; i++)
    list.push(
      await openShared({
        url: srv.url(), wasm, WebSocket: ctl.WebSocket, storage, clientId: 'tabs-client',
        backoff: { minMs: 20, maxMs: 200 }, heartbeatMs: 50, leaderTimeoutMs: 200, ...extra,
      }),
    );
  return { ctl, storage, list };
}

for (const [how, extra, P] of [
  ['over the channel', () => ({ locks: null, channel: `ch-${Math.random()}` }), 'ch:'],
  ['with Web Locks', () => ({ locks: new FakeLocks(), channel: `lk-${Math.random()}` }), 'lk:'],
]) {
  test(`three tabs, one connection (${how}); writes through the leader; a new leader takes over`, async () => {
    const { ctl, list } = await tabs(3, extra());
    try {
      await until(() => list.filter((c) => c.role === 'leader').length === 1, 'one leader');
      const leader = list.find((c) => c.role === 'leader');
      const followers = list.filter((c) => c !== leader);
      assert.equal(followers.length, 2);
      assert.ok(followers.every((c) => c.role === 'follower'));
      await until(() => list.every((c) => c.status === 'online'), 'every tab shows online');
      assert.equal(ctl.opened, 1, 'one WebSocket for three tabs');

      await followers[0].subscribe({ prefixes: [P] });
      // a follower writes: applied locally at once, pending until the leader's op is acked
      const lid = followers[0].pncounter(`${P}likes`).incr(2);
      assert.equal(followers[0].pncounter(`${P}likes`).value(), 2);
      assert.equal(followers[0].pending, 1);
      const ack = await followers[0].whenAcked(lid);
      assert.equal(ack.applied, true);
      assert.equal(followers[0].pending, 0);
      await until(() => list.every((c) => c.pncounter(`${P}likes`).value() === 2), 'every tab sees it');
      // the leader's own write reaches the followers too
      leader.orset(`${P}tags`).add('crdt');
      await until(() => followers.every((c) => c.orset(`${P}tags`).has('crdt')), 'followers see the leader');
      // and a write made elsewhere (another client of the server) reaches every tab
      const other = await Client.open({ url: srv.url(), wasm, WebSocket: NodeWebSocket, clientId: 'tabs-other' });
      other.timeline(`${P}feed`).add('p1', 1);
      await other.flush();
      await other.close();
      await until(() => list.every((c) => c.timeline(`${P}feed`).size === 1), 'every tab gets the server change');

      // the leader's tab closes: one of the others leads, with a connection of its own
      await leader.close();
      await until(() => followers.filter((c) => c.role === 'leader').length === 1, 'a new leader', 5000);
      await until(() => followers.every((c) => c.status === 'online'), 'online again', 5000);
      assert.equal(ctl.opened, 2);
      const nl = followers.find((c) => c.role === 'leader');
      const f = followers.find((c) => c !== nl);
      const lid2 = f.gcounter(`${P}n`).incr(1);
      await f.whenAcked(lid2);
      await until(() => nl.gcounter(`${P}n`).value() === 1, 'the new leader has the follower write');
      assert.equal(hex(nl.replica.encode(`${P}likes`)), hex(f.replica.encode(`${P}likes`)));
      // the subscription made through the old leader holds under the new one
      const late = await Client.open({ url: srv.url(), wasm, WebSocket: NodeWebSocket, clientId: `tabs-late-${P}` });
      late.timeline(`${P}after`).add('p2', 2);
      await late.flush();
      await late.close();
      await until(() => followers.every((c) => c.timeline(`${P}after`).size === 1), 'a change after the takeover reaches both');
    } finally {
      for (const c of list) await c.close().catch(() => {});
    }
  });
}

test('a follower that writes while the leader is offline: pending, then sent when it is back', async () => {
  const { list } = await tabs(2, { locks: new FakeLocks(), channel: `off-${Math.random()}` });
  try {
    await until(() => list.some((c) => c.role === 'leader'), 'a leader');
    const leader = list.find((c) => c.role === 'leader');
    const f = list.find((c) => c !== leader);
    await until(() => f.status === 'online', 'the follower shows online');
    leader.disconnect();
    await until(() => f.status === 'offline', 'the follower shows offline');
    f.lwwset('tab:off').add('x');
    assert.equal(f.pending, 1);
    await until(() => leader.pending === 1, 'the leader queued it');
    leader.connect();
    await f.flush();
    assert.equal(leader.pending, 0);
  } finally {
    for (const c of list) await c.close().catch(() => {});
  }
});

test('a key that is not UTF-8 goes through the tabs: a follower writes it, every tab and crdtd have it', async () => {
  const { list } = await tabs(2, { locks: new FakeLocks(), channel: `bin-${Math.random()}` });
  try {
    await until(() => list.some((c) => c.role === 'leader'), 'a leader');
    const leader = list.find((c) => c.role === 'leader');
    const f = list.find((c) => c !== leader);
    await until(() => f.status === 'online', 'the follower online');
    const k = new Uint8Array([0xfe, 0x00, 0x7f]);
    const seen = [];
    leader.on('change', (e) => seen.push(e));
    const id = f.orset(k).add('m');
    await f.whenAcked(id);
    await until(() => leader.orset(k).has('m'), 'the leader has it');
    assert.ok(seen[0].key instanceof Uint8Array && hex(seen[0].key) === hex(k), 'the leader sees the bytes');
    const r = await fetch(`${srv.http()}/v1/keys64/${Buffer.from(k).toString('base64url')}`);
    assert.equal(r.status, 200, 'crdtd has the key under its bytes');
    leader.orset(k).add('n');
    await until(() => f.orset(k).has('n'), 'the follower gets the leader write');
  } finally {
    for (const c of list) await c.close().catch(() => {});
  }
});
