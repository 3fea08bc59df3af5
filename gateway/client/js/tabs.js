// tabs.js - tabs of one origin share one connection: one tab (the leader) holds the WebSocket and
// the storage, the others (followers) keep a local replica, get every change from the leader and
// send their writes through it. The leader is elected with Web Locks (navigator.locks) when the
// browser has them, else over the BroadcastChannel itself; when the leader's tab goes, another
// takes over and reloads what the old one persisted.
//
//   import { openShared } from '@crdtd/client/tabs.js';
//   const c = await openShared({ url, wasm, storage: new IndexedDBStorage() });
//   c.role   // 'leader' | 'follower'; the rest of the API is Client's
//
// Channel messages (structured clone; keys as text, deltas as Uint8Array):
//   leader -> all:  lead {from, born}, status {status, pending}, change {k, delta},
//                   settled {to, lid, ack, err}, snapshot {to, states}
//   follower -> leader: hello {from}, write {from, lid, k, delta}, sub {keys, prefixes}
import { Client, ClientError, keyBytes } from './client.js';

const rid = () => Math.random().toString(36).slice(2) + Date.now().toString(36);

class Tab {
  constructor(client, { BC, locks, name, heartbeatMs, leaderTimeoutMs }) {
    this.c = client;
    this.id = rid();
    this.born = Date.now() + Math.random();
    this.name = name;
    this.locks = locks;
    this.hb = heartbeatMs;
    this.timeout = leaderTimeoutMs;
    this.ch = new BC(name);
    this.ch.onmessage = (ev) => this.#onMessage(ev.data);
    this.leader = false;
    this.leaderId = null;
    this.lastLead = 0;
    this.writes = new Map(); // follower: lid -> { k, delta }
    this.nextLid = Math.floor(Date.now() * 1000);
    this.relayed = new Map(); // leader: op id -> { to, lid }
    this.closed = false;
    this.gone = new Set();
    this.readyResolve = null;
    this.ready = new Promise((r) => (this.readyResolve = r));
  }

  get count() {
    return this.writes.size;
  }

  has(lid) {
    return this.writes.has(lid);
  }

  #post(m) {
    if (!this.closed) this.ch.postMessage(m);
  }

  start() {
    if (this.locks) {
      // the lock is held for as long as this tab lives: the next waiting tab gets it when it goes
      this.locks
        .request(this.name, () => {
          if (this.closed) return undefined;
          return new Promise((release) => {
            this.release = release;
            this.#lead();
          });
        })
        .catch(() => {});
      this.#post({ t: 'hello', from: this.id });
    } else {
      this.#post({ t: 'hello', from: this.id });
      this.watch = setInterval(() => this.#check(), this.hb);
      this.claimTimer = setTimeout(() => this.#check(), this.timeout);
    }
  }

  // ---- election over the channel (no Web Locks)

  #check() {
    if (this.leader || this.closed || this.claiming) return;
    if (Date.now() - this.lastLead < this.timeout && this.leaderId) return;
    this.claiming = true;
    this.beaten = false;
    this.#post({ t: 'claim', from: this.id, born: this.born });
    setTimeout(() => {
      this.claiming = false;
      if (this.closed || this.beaten || (this.leaderId && Date.now() - this.lastLead < this.timeout)) return;
      this.#lead();
    }, this.hb);
  }

  #older(born, from) {
    return born < this.born || (born === this.born && from < this.id);
  }

  #lead() {
    this.#becomeLeader().catch((e) =>
      this.c._followerError(new ClientError('storage', `taking the lead failed: ${e?.message ?? e}`)),
    );
  }

  async #becomeLeader() {
    if (this.leader || this.closed) return;
    this.leader = true;
    this.leaderId = this.id;
    this.#post({ t: 'lead', from: this.id, born: this.born });
    this.beat = setInterval(() => this.#post({ t: 'lead', from: this.id, born: this.born }), this.hb);
    await this.c._promote();
    // what this tab wrote as a follower and was not settled: its own queue now
    for (const [lid, w] of [...this.writes]) {
      this.writes.delete(lid);
      const id = this.c._enqueue(w.k, keyBytes(w.k), w.delta);
      this.c._moveWaiters(lid, id);
    }
    this.status(this.c.status);
    this.readyResolve();
  }

  #stepDown() {
    clearInterval(this.beat);
    this.leader = false;
    const ops = this.c._demote();
    for (const op of ops) {
      const lid = this.write(op.k, op.key, op.delta);
      this.c._moveWaiters(op.id, lid);
    }
  }

  // ---- leader side (called by the Client)

  change(k, bytes, delta) {
    if (this.leader) this.#post({ t: 'change', k, delta });
  }

  settled(id, ack, err) {
    const r = this.relayed.get(id);
    if (!r) return;
    this.relayed.delete(id);
    this.#post({ t: 'settled', to: r.to, lid: r.lid, ack, err: err && { code: err.code, message: err.message } });
  }

  status(s) {
    if (this.leader) this.#post({ t: 'status', status: s });
  }

  pending() {}

  // ---- follower side

  write(k, bytes, delta) {
    const lid = this.nextLid++;
    this.writes.set(lid, { k, delta });
    this.c._followerPending();
    this.#post({ t: 'write', from: this.id, lid, k, delta });
    return lid;
  }

  subscribe(keys, prefixes) {
    this.#post({ t: 'sub', keys, prefixes });
  }

  // ---- messages

  #onMessage(m) {
    if (!m || typeof m !== 'object' || this.closed) return;
    switch (m.t) {
      case 'lead':
        if (m.from === this.id || this.gone.has(m.from)) return;
        if (this.leader) {
          // two leaders (a channel election raced; never with Web Locks): the older one stays
          if (!this.locks && this.#older(m.born, m.from)) this.#stepDown();
          else return;
        }
        if (this.leaderId !== m.from) {
          this.leaderId = m.from;
          // a new leader: catch up, and send it again what it may not have (subscriptions and
          // writes are both harmless to repeat)
          this.#post({ t: 'hello', from: this.id });
          const subs = this.c.subscriptions();
          if (subs.keys.length || subs.prefixes.length) this.#post({ t: 'sub', keys: subs.keys, prefixes: subs.prefixes });
          for (const [lid, w] of this.writes) this.#post({ t: 'write', from: this.id, lid, k: w.k, delta: w.delta });
        }
        this.lastLead = Date.now();
        return;
      case 'bye':
        // a closed tab: its messages still in flight are ignored; a follower elects at once
        this.gone.add(m.from);
        if (m.from === this.leaderId) {
          this.leaderId = null;
          if (!this.locks) this.#check();
        }
        return;
      case 'claim':
        if (m.from === this.id) return;
        if (this.leader) this.#post({ t: 'lead', from: this.id, born: this.born });
        else if (this.#older(m.born, m.from)) this.beaten = true;
        return;
      case 'hello':
        if (!this.leader) return;
        this.#post({ t: 'lead', from: this.id, born: this.born });
        this.#post({ t: 'snapshot', to: m.from, states: this.c._statesForFollower(), status: this.c.status });
        return;
      case 'snapshot':
        if (m.to !== this.id || this.leader) return;
        for (const [k, state] of m.states) this.c._remote(k, keyBytes(k), state, 'remote');
        this.c._followerStatus(m.status);
        this.readyResolve();
        return;
      case 'status':
        if (!this.leader) this.c._followerStatus(m.status);
        return;
      case 'change':
        if (!this.leader) this.c._remote(m.k, keyBytes(m.k), m.delta, 'remote');
        return;
      case 'write': {
        if (!this.leader) return;
        const bytes = keyBytes(m.k);
        if (!(m.delta instanceof Uint8Array)) return;
        this.c._remote(m.k, bytes, m.delta, 'local');
        try {
          const id = this.c._enqueue(m.k, bytes, m.delta);
          this.relayed.set(id, { to: m.from, lid: m.lid });
        } catch (e) {
          this.#post({ t: 'settled', to: m.from, lid: m.lid, err: { code: 'internal', message: e.message } });
        }
        return;
      }
      case 'sub':
        if (this.leader) this.c.subscribe({ keys: m.keys, prefixes: m.prefixes }).catch(() => {});
        return;
      case 'settled': {
        if (m.to !== this.id || !this.writes.has(m.lid)) return;
        this.writes.delete(m.lid);
        const err = m.err && new ClientError(m.err.code, m.err.message, { id: m.lid });
        if (err) this.c._followerError(err);
        this.c._settle(m.lid, m.ack && { ...m.ack, id: m.lid }, err);
        this.c._followerPending();
        return;
      }
      default:
    }
  }

  close() {
    this.#post({ t: 'bye', from: this.id });
    this.closed = true;
    clearInterval(this.beat);
    clearInterval(this.watch);
    clearTimeout(this.claimTimer);
    this.release?.();
    this.ch.close();
  }
}

/** A Client whose tab shares one connection with the other tabs of the origin (tabs.d.ts). */
export async function openShared(opts) {
  const BC = opts.BroadcastChannel ?? globalThis.BroadcastChannel;
  if (!BC) throw new TypeError('openShared: no BroadcastChannel');
  const locks = opts.locks !== undefined ? opts.locks : (globalThis.navigator?.locks ?? null);
  const client = await Client.open({ ...opts, _internal: { role: 'follower' } });
  const tab = new Tab(client, {
    BC,
    locks,
    name: opts.channel ?? `crdtd:${opts.url}`,
    heartbeatMs: opts.heartbeatMs ?? 500,
    leaderTimeoutMs: opts.leaderTimeoutMs ?? 2000,
  });
  client._attach(tab);
  tab.start();
  // a role within a bounded wait: leader, or a follower that has the leader's snapshot
  await Promise.race([tab.ready, new Promise((r) => setTimeout(r, (opts.leaderTimeoutMs ?? 2000) * 3).unref?.())]);
  return client;
}
