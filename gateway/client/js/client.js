// client.js - crdtd's JavaScript client: crdt.v1 over a WebSocket, with a local replica in
// WebAssembly (crdt-wasm.js), an offline queue of writes, resume by cursor and persistence.
//
//   const wasm = await CrdtWasm.load(new URL('./crdt.wasm', import.meta.url));
//   const c = await Client.open({ url: 'ws://127.0.0.1:7379/', wasm });
//   await c.subscribe({ prefixes: ['feed:'] });
//   c.timeline('feed:1').add('post:1', Date.now() / 1000);   // applied at once, queued, sent
//   c.on('change', ({ key }) => render(key));
//
// Every write is made by the local replica's mutator and travels as its delta (libcrdt's binary
// encoding) in a binary crdt.v1 apply (docs/protocol.md, "Binary crdt.v1"): a join, so a retry
// (same op id, or after a reload) can never apply it twice. Changes from the server are joined
// into the replica. docs/web-client.md is the guide.

import { CrdtError, CrdtWasm, Replica, keyBytes, keyId, keyOut } from './crdt-wasm.js';

export * from './crdt-wasm.js';

export const BIN_PROTOCOL = 'crdt.v1.bin';
export const JSON_PROTOCOL = 'crdt.v1';

// binary message types (gateway/proto/crdt_v1_bin.h)
const B_SUBSCRIBE = 0x01;
const B_UNSUBSCRIBE = 0x02;
const B_APPLY = 0x03;
const B_CHANGE = 0x41;
const B_ACK = 0x42;
const B_SUBSCRIBED = 0x43;

const MAX_ID = 2 ** 53; // op ids are 1 .. 2^53-1
const CLIENT_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const utf8 = new TextEncoder();

/** An error the client reports in an 'error' event. */
export class ClientError extends Error {
  constructor(code, message, { id, key } = {}) {
    super(message);
    this.name = 'ClientError';
    this.code = code;
    if (id !== undefined) this.id = id;
    if (key !== undefined) this.key = key;
  }
}

// ---- bytes -----------------------------------------------------------------------------------

const toBytes = (k, what = 'key') => {
  if (typeof k === 'string') return utf8.encode(k);
  if (k instanceof Uint8Array) return k;
  throw new TypeError(`${what}: expected a string or a Uint8Array`);
};

const hexOf = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length; i++) s += (u8[i] < 16 ? '0' : '') + u8[i].toString(16);
  return s;
};


/** A growable byte writer with LEB128 varints. */
class Writer {
  constructor(n = 64) {
    this.b = new Uint8Array(n);
    this.n = 0;
  }
  room(k) {
    if (this.n + k <= this.b.length) return;
    const nb = new Uint8Array(Math.max(this.b.length * 2, this.n + k));
    nb.set(this.b.subarray(0, this.n));
    this.b = nb;
  }
  byte(v) {
    this.room(1);
    this.b[this.n++] = v;
  }
  varint(v) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint: ${v}`);
    this.room(8);
    while (v >= 0x80) {
      this.b[this.n++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.b[this.n++] = v;
  }
  bytes(u8) {
    this.room(u8.length);
    this.b.set(u8, this.n);
    this.n += u8.length;
  }
  lbytes(u8) {
    this.varint(u8.length);
    this.bytes(u8);
  }
  done() {
    return this.b.subarray(0, this.n);
  }
}

class ProtocolError extends Error {}

/** Reads what Writer writes; throws ProtocolError on anything malformed. */
class Reader {
  constructor(u8) {
    this.b = u8;
    this.at = 0;
  }
  byte(what) {
    if (this.at >= this.b.length) throw new ProtocolError(`${what}: truncated`);
    return this.b[this.at++];
  }
  varint(what) {
    let v = 0;
    let mul = 1;
    for (let i = 0; ; i++) {
      if (this.at >= this.b.length) throw new ProtocolError(`${what}: truncated`);
      const c = this.b[this.at++];
      if (i > 0 && c === 0) throw new ProtocolError(`${what}: a varint that is not canonical`);
      v += (c & 0x7f) * mul;
      if (!(c & 0x80)) break;
      mul *= 0x80;
      if (i >= 7) throw new ProtocolError(`${what}: a varint over 2^53`);
    }
    if (!Number.isSafeInteger(v)) throw new ProtocolError(`${what}: over 2^53`);
    return v;
  }
  lbytes(what) {
    const n = this.varint(what);
    if (n > this.b.length - this.at) throw new ProtocolError(`${what}: truncated`);
    const out = this.b.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  rest() {
    const out = this.b.slice(this.at);
    this.at = this.b.length;
    return out;
  }
  end(what) {
    if (this.at !== this.b.length) throw new ProtocolError(`${what}: ${this.b.length - this.at} bytes after the end`);
  }
}

/** Binary crdt.v1: the client's messages. */
export const binary = {
  subscribe(id, keys, prefixes, since) {
    const w = new Writer();
    w.byte(B_SUBSCRIBE);
    w.varint(id);
    w.byte(since === undefined ? 0 : 1);
    if (since !== undefined) w.varint(since);
    w.varint(keys.length + prefixes.length);
    for (const k of keys) (w.byte(0), w.lbytes(k));
    for (const p of prefixes) (w.byte(1), w.lbytes(p));
    return w.done();
  },
  unsubscribe(id, keys, prefixes) {
    const w = new Writer();
    w.byte(B_UNSUBSCRIBE);
    w.varint(id);
    w.varint(keys.length + prefixes.length);
    for (const k of keys) (w.byte(0), w.lbytes(k));
    for (const p of prefixes) (w.byte(1), w.lbytes(p));
    return w.done();
  },
  apply(id, key, delta) {
    const w = new Writer(16 + key.length + delta.length);
    w.byte(B_APPLY);
    w.varint(id);
    w.lbytes(key);
    w.bytes(delta);
    return w.done();
  },
  /** A server message: { type: 'change', cursor, full, seq, key, bytes } | { type: 'ack', ... } |
   * { type: 'subscribed', id, cursor }. Throws ProtocolError. */
  decode(u8) {
    const r = new Reader(u8);
    const t = r.byte('type');
    if (t === B_CHANGE) {
      const cursor = r.varint('cursor');
      const flags = r.byte('flags');
      if (flags & ~1) throw new ProtocolError(`change flags 0x${flags.toString(16)}`);
      const seq = r.varint('seq');
      const key = r.lbytes('key');
      if (!key.length) throw new ProtocolError('change: an empty key');
      const bytes = r.rest();
      if (!bytes.length) throw new ProtocolError('change: no state or delta');
      return { type: 'change', cursor, full: (flags & 1) === 1, seq, key, bytes };
    }
    if (t === B_ACK) {
      const flags = r.byte('flags');
      if (flags & ~3) throw new ProtocolError(`ack flags 0x${flags.toString(16)}`);
      const id = r.varint('id');
      const seq = r.varint('seq');
      r.end('ack');
      return { type: 'ack', id, seq, applied: (flags & 1) === 1, duplicate: (flags & 2) === 2 };
    }
    if (t === B_SUBSCRIBED) {
      const id = r.varint('id');
      const cursor = r.varint('cursor');
      r.end('subscribed');
      return { type: 'subscribed', id, cursor };
    }
    throw new ProtocolError(`unknown binary message type 0x${t.toString(16)}`);
  },
};

// ---- storage ---------------------------------------------------------------------------------

const copyMeta = (m) => m && { ...m, keys: [...m.keys], prefixes: [...m.prefixes], fresh: m.fresh && { keys: [...m.fresh.keys], prefixes: [...m.fresh.prefixes] } };

/** Keeps everything in memory: a reload loses it. The default storage, and the reference for
 * what a Storage does (IndexedDBStorage does the same in IndexedDB). */
export class MemoryStorage {
  #meta = null;
  #keys = new Map(); // hex -> { key, state, deltas }
  #ops = new Map();
  #writes = 0;

  async load() {
    return {
      meta: copyMeta(this.#meta),
      keys: [...this.#keys.values()].map((k) => ({ key: k.key, state: k.state, deltas: [...k.deltas] })),
      ops: [...this.#ops.values()].sort((a, b) => a.id - b.id),
    };
  }

  async write(b) {
    this.#writes++;
    if (b.meta) this.#meta = copyMeta(b.meta);
    for (const { key, state } of b.states ?? []) this.#keys.set(hexOf(key), { key, state, deltas: [] });
    for (const { key, delta } of b.deltas ?? []) {
      const h = hexOf(key);
      const k = this.#keys.get(h) ?? { key, state: null, deltas: [] };
      k.deltas.push(delta);
      this.#keys.set(h, k);
    }
    for (const op of b.ops ?? []) this.#ops.set(op.id, { id: op.id, key: op.key, delta: op.delta });
    for (const id of b.deleteOps ?? []) this.#ops.delete(id);
  }

  async close() {}

  get bytes() {
    let n = 0;
    for (const k of this.#keys.values()) {
      n += k.key.length + (k.state?.length ?? 0);
      for (const d of k.deltas) n += d.length;
    }
    for (const op of this.#ops.values()) n += op.key.length + op.delta.length;
    return n;
  }

  get writes() {
    return this.#writes;
  }
}

// ---- the client ------------------------------------------------------------------------------

const randomId = (bytes) => {
  const b = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(b);
  return b;
};

const newClientId = () => 'js-' + hexOf(randomId(8));

const newReplicaId = () => {
  const b = randomId(8);
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  v &= (1n << 62n) - 1n;
  return String(v === 0n ? 1n : v);
};

const STATE_LOG_MIN = 4096;

export class Client {
  #o;
  #wasm;
  #replica;
  #storage;
  #meta;
  #queue = new Map(); // op id -> { id, key (bytes), k (text), delta, sent }
  #queueBytes = 0;
  #subs = { keys: new Map(), prefixes: new Map() }; // hex -> { bytes, synced }
  #logBytes = new Map(); // text key -> bytes of deltas appended since its last whole state
  #stateBytes = new Map(); // text key -> size of the last whole state written
  #events = new Map();
  #ackWaiters = new Map();
  #outcomes = new Map(); // op id -> { ack, err } of the last settled ops
  #flushWaiters = [];
  #onlineWaiters = [];
  #reqs = new Map(); // request id -> { resolve, reject, keys, prefixes, fresh }
  #reqId = 1;
  #ws = null;
  #status = 'offline';
  #want = false; // connect() was called and not disconnect()
  #attempt = 0;
  #timer = null;
  #token = null;
  #nextToken = null; // fetched ahead of the session token's expiry
  #renewTimer = null;
  #welcome = null;
  #batch = null;
  #saving = Promise.resolve();
  #closed = false;
  #refusedQuiet = false; // #onError reported the error already
  #role = 'solo';
  #link = null; // tabs.js: a follower's way to its leader, a leader's to its followers
  #subWaiters = new Set(); // subscribe() promises: { need: Set of topic tags, resolve, reject }
  #net = null; // what gives 'online'/'offline' events (the browser's window), or null
  #onNet = null;
  #netDown = false; // the last network event said offline: nothing is dialled until 'online'
  #restoreErrors = [];

  /** Use Client.open(). */
  constructor(opts, loaded, _internal = {}) {
    this.#o = opts;
    this.#wasm = opts.wasm;
    this.#storage = opts.storage;
    this.#token = opts.token ?? null;
    this.#role = _internal.role ?? 'solo';
    const meta = loaded.meta ?? {};
    this.#meta = {
      clientId: opts.clientId ?? meta.clientId ?? newClientId(),
      // a new replica id every time: two tabs loading one storage, or a reload that lost its last
      // unsaved writes, must never reuse counter slots, OR-set dots or timestamps
      replicaId: newReplicaId(),
      nextOpId: Math.max(meta.nextOpId ?? 1, Math.floor(this.#now() * 1000)),
      cursor: meta.cursor ?? 0,
      node: meta.node ?? 0,
      keys: meta.keys ?? [],
      prefixes: meta.prefixes ?? [],
      fresh: meta.fresh ?? { keys: [], prefixes: [] },
    };
    if (!CLIENT_ID_RE.test(this.#meta.clientId)) throw new TypeError('clientId: 1..64 of [A-Za-z0-9._:-]');
    this.#replica = new Replica(this.#wasm, {
      node: BigInt(this.#meta.replicaId),
      now: () => this.#now(),
      encoding: opts.encoding ?? 'utf8',
    });
    for (const k of this.#meta.keys) this.#subs.keys.set(hexOf(k), { bytes: k, synced: true, live: false });
    for (const p of this.#meta.prefixes) this.#subs.prefixes.set(hexOf(p), { bytes: p, synced: true, live: false });
    for (const k of this.#meta.fresh.keys) this.#subs.keys.set(hexOf(k), { bytes: k, synced: false, live: false });
    for (const p of this.#meta.fresh.prefixes) this.#subs.prefixes.set(hexOf(p), { bytes: p, synced: false, live: false });
    this._restore(loaded);
    this.#save({ meta: true });
    this.#watchNetwork(opts.network);
  }

  /** The browser's online/offline events (a WebSocket may stay open long after the network
   * went away, and DevTools' offline mode stalls one without closing it). */
  #watchNetwork(net) {
    if (net === undefined)
      net = typeof globalThis.addEventListener === 'function' && typeof globalThis.navigator?.onLine === 'boolean' ? globalThis : null;
    if (!net) return;
    if (typeof net.addEventListener !== 'function') throw new TypeError('Client.open: opts.network must be an EventTarget (or null)');
    this.#net = net;
    this.#onNet = (ev) => this.#network(ev.type === 'online');
    net.addEventListener('online', this.#onNet);
    net.addEventListener('offline', this.#onNet);
    const on = net === globalThis ? globalThis.navigator.onLine : net.onLine;
    this.#netDown = on === false;
  }

  #network(up) {
    if (this.#closed) return;
    if (!up) {
      this.#netDown = true;
      clearTimeout(this.#timer);
      this.#timer = null;
      const ws = this.#ws;
      this.#ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
          ws.close(1000, 'offline');
        } catch {
          /* not open */
        }
        this.#sessionLost();
      }
      if (this.#role !== 'follower') this.#setStatus('offline');
      return;
    }
    this.#netDown = false;
    // back online: dial at once, with the backoff reset
    if (this.#want && !this.#ws && this.#role !== 'follower') {
      clearTimeout(this.#timer);
      this.#timer = null;
      this.#attempt = 0;
      this.#dial();
    }
  }

  /** Errors found while restoring the storage (also emitted as 'error' events, deferred to
   * after open() resolved, so listeners attached right after it get them). */
  get restoreErrors() {
    return [...this.#restoreErrors];
  }

  /** Joins persisted states and queued ops into the replica (also a promoted tab's reload). */
  _restore(loaded) {
    const errs = [];
    for (const { key, state, deltas } of loaded.keys) {
      let k;
      try {
        k = keyId(key);
        let bytes = 0;
        if (state) this._merge(k, state, true);
        this.#stateBytes.set(k, state?.length ?? 0);
        for (const d of deltas) {
          this._merge(k, d, false); // a timeline known by deltas only gets its bound first
          bytes += d.length;
        }
        this.#logBytes.set(k, bytes);
      } catch (e) {
        errs.push(new ClientError('storage', `stored state of key ${k} is unreadable: ${e.message}`, { key }));
      }
    }
    for (const op of loaded.ops) {
      if (this.#queue.has(op.id)) continue;
      let k;
      try {
        k = keyId(op.key);
        this._merge(k, op.delta, false);
      } catch (e) {
        errs.push(new ClientError('storage', `stored op ${op.id} is unreadable: ${e.message}`, { id: op.id, key: op.key }));
        continue;
      }
      this.#queue.set(op.id, { id: op.id, key: op.key, k, delta: op.delta, sent: false });
      this.#queueBytes += op.delta.length;
      if (op.id >= this.#meta.nextOpId) this.#meta.nextOpId = op.id + 1;
    }
    if (errs.length) {
      this.#restoreErrors.push(...errs);
      setTimeout(() => {
        for (const e of errs) this.#emitError(e);
      }, 0);
    }
  }

  static async open(opts) {
    if (!opts || typeof opts !== 'object') throw new TypeError('Client.open: options expected');
    if (!(opts.wasm instanceof CrdtWasm)) throw new TypeError('Client.open: opts.wasm must be a loaded CrdtWasm');
    if (opts.binary === false) throw new TypeError('Client.open: only binary crdt.v1 is supported (the WebAssembly replica merges binary encodings)');
    const url = new URL(opts.url);
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new TypeError(`Client.open: ${opts.url}: expected ws:// or wss://`);
    const o = { ...opts, storage: opts.storage ?? new MemoryStorage() };
    const loaded = await o.storage.load();
    const c = new Client(o, loaded, opts._internal ?? {});
    if (o.autoConnect !== false && c.#role !== 'follower') c.connect();
    return c;
  }

  #now() {
    return (this.#o.now ?? Date.now)();
  }

  // ---- getters

  get status() {
    return this.#status;
  }
  get pending() {
    return this.#role === 'follower' ? (this.#link?.count ?? 0) : this.#queue.size;
  }
  get clientId() {
    return this.#meta.clientId;
  }
  get cursor() {
    return this.#meta.cursor;
  }
  get node() {
    return this.#meta.node;
  }
  get role() {
    return this.#role;
  }
  get binary() {
    return !!this.#ws && this.#status === 'online';
  }
  get replica() {
    return this.#replica;
  }

  // ---- events

  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('on: a function is needed');
    let s = this.#events.get(event);
    if (!s) this.#events.set(event, (s = new Set()));
    s.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#events.get(event)?.delete(fn);
  }

  #emit(event, ev) {
    for (const fn of [...(this.#events.get(event) ?? [])]) {
      try {
        fn(ev);
      } catch (e) {
        // a listener's failure is its own; report it without breaking the client
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  #emitError(err) {
    this.#emit('error', err);
  }

  #setStatus(s) {
    if (this.#status === s) return;
    this.#status = s;
    this.#emit('status', { status: s });
    if (s === 'online') for (const w of this.#onlineWaiters.splice(0)) w();
    this.#link?.status?.(s);
  }

  #pendingChanged() {
    const n = this.pending;
    this.#emit('pending', { count: n });
    if (!n) for (const w of this.#flushWaiters.splice(0)) w();
    if (this.#role !== 'follower') this.#link?.pending?.(n);
  }

  // ---- persistence

  #save(what) {
    if (!this.#batch) {
      this.#batch = { meta: false, states: new Map(), deltas: [], ops: new Map(), deleteOps: new Set() };
      setTimeout(() => this.#persist(), 0);
    }
    const b = this.#batch;
    if (what.meta) b.meta = true;
    if (what.state) {
      b.states.set(what.state.k, what.state);
      b.deltas = b.deltas.filter((d) => d.k !== what.state.k);
    }
    if (what.delta) {
      if (b.states.has(what.delta.k)) {
        b.states.set(what.delta.k, { k: what.delta.k, key: what.delta.key }); // re-encoded at write
      } else b.deltas.push(what.delta);
    }
    if (what.op) b.ops.set(what.op.id, what.op);
    if (what.deleteOp !== undefined) {
      if (b.ops.has(what.deleteOp)) b.ops.delete(what.deleteOp);
      b.deleteOps.add(what.deleteOp);
    }
  }

  #persist() {
    const b = this.#batch;
    this.#batch = null;
    if (!b || this.#role === 'follower') return this.#saving;
    const batch = {};
    if (b.meta) batch.meta = this.#metaOut();
    if (b.states.size) {
      batch.states = [];
      for (const s of b.states.values()) {
        const state = this.#replica.has(s.k) ? this.#replica.encode(s.k) : null;
        if (state) batch.states.push({ key: s.key, state });
        if (state) this.#stateBytes.set(s.k, state.length);
      }
    }
    if (b.deltas.length) batch.deltas = b.deltas.map((d) => ({ key: d.key, delta: d.delta }));
    if (b.ops.size) batch.ops = [...b.ops.values()].map((o) => ({ id: o.id, key: o.key, delta: o.delta }));
    if (b.deleteOps.size) batch.deleteOps = [...b.deleteOps];
    if (batch.ops || batch.deleteOps) batch.meta ??= this.#metaOut();
    this.#saving = this.#saving
      .then(() => this.#storage.write(batch))
      .catch((e) => this.#emitError(new ClientError('storage', `persisting failed: ${e?.message ?? e}`)));
    return this.#saving;
  }

  #metaOut() {
    const keys = [];
    const prefixes = [];
    const fresh = { keys: [], prefixes: [] };
    for (const s of this.#subs.keys.values()) (s.synced ? keys : fresh.keys).push(s.bytes);
    for (const s of this.#subs.prefixes.values()) (s.synced ? prefixes : fresh.prefixes).push(s.bytes);
    const m = this.#meta;
    return { clientId: m.clientId, replicaId: m.replicaId, nextOpId: m.nextOpId, cursor: m.cursor, node: m.node, keys, prefixes, fresh };
  }

  /** A key changed by `delta`: persist the delta, or the whole state once the deltas appended
   * since the last one outweigh it (compaction by bytes). */
  #persistKey(k, key, delta) {
    const logged = (this.#logBytes.get(k) ?? 0) + delta.length;
    const limit = Math.max(STATE_LOG_MIN, this.#stateBytes.get(k) ?? 0);
    if (logged > limit) {
      this.#logBytes.set(k, 0);
      this.#save({ state: { k, key } });
    } else {
      this.#logBytes.set(k, logged);
      this.#save({ delta: { k, key, delta } });
    }
  }

  // ---- local writes

  /** k: the replica's id of the key (its text, or an id of bytes that are not text); bytes:
   * what the wire carries. */
  #keyText(key) {
    const k = keyId(key);
    const bytes = key instanceof Uint8Array ? key : keyBytes(k);
    if (!bytes.length) throw new TypeError('key: an empty key');
    return { k, bytes };
  }

  /** Runs a local write (fn returns its delta or null) and queues it. */
  _write(key, fn) {
    if (this.#closed) throw new Error('this client is closed');
    const { k, bytes } = this.#keyText(key);
    const delta = fn(k);
    if (!delta) return null;
    this.#emit('change', { key: this.#keyOut(k, bytes), keyBytes: bytes, type: this.#replica.type(k), source: 'local' });
    if (this.#role === 'follower') return this.#link.write(k, bytes, delta);
    return this._enqueue(k, bytes, delta);
  }

  /** Queues a delta already joined into the replica (a local write, or a follower tab's). */
  _enqueue(k, bytes, delta) {
    const id = this.#meta.nextOpId++;
    if (id >= MAX_ID) throw new Error('op ids exhausted');
    const op = { id, key: bytes, k, delta, sent: false };
    this.#queue.set(id, op);
    this.#queueBytes += delta.length;
    this.#persistKey(k, bytes, delta);
    this.#save({ op, meta: true });
    this.#compact();
    this.#pendingChanged();
    this.#link?.change?.(k, bytes, delta);
    this.#sendOp(op);
    return id;
  }

  /** Joins the unsent queued deltas of each key into one (the last id) once the queue is over
   * compactBytes. */
  #compact() {
    const limit = this.#o.compactBytes ?? 65536;
    if (this.#queueBytes <= limit) return;
    const byKey = new Map();
    for (const op of this.#queue.values()) {
      if (op.sent) continue;
      const g = byKey.get(op.k) ?? [];
      g.push(op);
      byKey.set(op.k, g);
    }
    for (const g of byKey.values()) {
      if (g.length < 2) continue;
      const obj = this.#wasm.decode(g[0].delta);
      try {
        for (const op of g.slice(1)) obj.merge(op.delta);
        const joined = obj.encode();
        const last = g[g.length - 1];
        for (const op of g) {
          this.#queueBytes -= op.delta.length;
          if (op !== last) {
            this.#queue.delete(op.id);
            this.#save({ deleteOp: op.id });
            this._moveWaiters(op.id, last.id);
          }
        }
        last.delta = joined;
        this.#queueBytes += joined.length;
        this.#save({ op: last });
      } finally {
        obj.free();
      }
    }
  }

  /** The queued op again under a new (higher) id, unsent; its waiters follow it. */
  #reissue(op) {
    const id = this.#meta.nextOpId++;
    this.#queue.delete(op.id);
    this.#save({ deleteOp: op.id });
    const again = { ...op, id, sent: false };
    this.#queue.set(id, again);
    this.#save({ op: again, meta: true });
    this._moveWaiters(op.id, id);
    return again;
  }

  _moveWaiters(from, to) {
    const w = this.#ackWaiters.get(from);
    if (!w) return;
    this.#ackWaiters.delete(from);
    const t = this.#ackWaiters.get(to) ?? [];
    this.#ackWaiters.set(to, t.concat(w));
  }

  #keyOut(k, bytes) {
    return (this.#o.encoding ?? 'utf8') === 'bytes' ? bytes : keyOut(k);
  }

  timeline(key) {
    return new TimelineHandle(this, key);
  }
  gcounter(key) {
    return new CounterHandle(this, key, 'gcounter');
  }
  pncounter(key) {
    return new PnCounterHandle(this, key, 'pncounter');
  }
  register(key) {
    return new RegisterHandle(this, key);
  }
  lwwset(key) {
    return new SetHandle(this, key, 'lwwset');
  }
  orset(key) {
    return new SetHandle(this, key, 'orset');
  }
  type(key) {
    return this.#replica.type(this.#keyText(key).k);
  }
  keys() {
    const ks = this.#replica.keys();
    return (this.#o.encoding ?? 'utf8') === 'bytes' ? ks.map((k) => keyBytes(k)) : ks;
  }

  /** For the handles: the replica's view of key as type (null when it holds another type or none
   * and `create` is false). */
  _view(key, type, create) {
    const { k } = this.#keyText(key);
    const has = this.#replica.type(k);
    if (!has && !create) return null;
    if (has && has !== type) throw new CrdtError(-3, `key ${typeof keyOut(k) === 'string' ? k : '0x' + hexOf(keyBytes(k))} holds a ${has}, not a ${type}`);
    switch (type) {
      case 'timeline':
        return this.#replica.timeline(k, { maxSize: this.#o.timelineMaxSize ?? 1000 });
      case 'gcounter':
        return this.#replica.gcounter(k);
      case 'pncounter':
        return this.#replica.pncounter(k);
      case 'lwwreg':
        return this.#replica.register(k);
      case 'lwwset':
        return this.#replica.lwwset(k);
      default:
        return this.#replica.orset(k);
    }
  }

  // ---- acks, flush

  whenAcked(id) {
    const was = this.#outcomes.get(id);
    if (was) return was.err ? Promise.reject(was.err) : Promise.resolve(was.ack);
    if (!this.#queue.has(id) && !(this.#role === 'follower' && this.#link?.has(id)))
      return Promise.reject(new ClientError('unknown', `op ${id} is not pending`, { id }));
    return new Promise((resolve, reject) => {
      const w = this.#ackWaiters.get(id) ?? [];
      w.push({ resolve, reject });
      this.#ackWaiters.set(id, w);
    });
  }

  flush() {
    if (!this.pending) return Promise.resolve();
    return new Promise((r) => this.#flushWaiters.push(r));
  }

  whenOnline() {
    if (this.#status === 'online') return Promise.resolve();
    return new Promise((r) => this.#onlineWaiters.push(r));
  }

  _settle(id, ack, err) {
    // kept for a while, so whenAcked of an op settled before it was asked still answers
    this.#outcomes.set(id, { ack, err });
    if (this.#outcomes.size > 1024) this.#outcomes.delete(this.#outcomes.keys().next().value);
    const w = this.#ackWaiters.get(id);
    this.#ackWaiters.delete(id);
    for (const x of w ?? []) err ? x.reject(err) : x.resolve(ack);
  }

  #dropRefused(id, err) {
    this.#refusedQuiet = true;
    try {
      this.#done(id, null, err);
    } finally {
      this.#refusedQuiet = false;
    }
  }

  #done(id, ack, err) {
    const op = this.#queue.get(id);
    if (!op) return;
    if (err && !this.#refusedQuiet) this.#emitError(err);
    this.#queue.delete(id);
    this.#queueBytes -= op.delta.length;
    this.#save({ deleteOp: id });
    if (ack) this.#emit('ack', ack);
    this._settle(id, ack, err);
    this.#link?.settled?.(id, ack, err);
    this.#pendingChanged();
  }

  // ---- subscriptions

  subscriptions() {
    return { keys: [...this.#subs.keys.values()].map((s) => s.bytes), prefixes: [...this.#subs.prefixes.values()].map((s) => s.bytes) };
  }

  subscribe({ keys = [], prefixes = [] } = {}) {
    if (this.#closed) return Promise.reject(new Error('this client is closed'));
    const ks = keys.map((k) => this.#keyText(k).bytes);
    const ps = prefixes.map((p) => toBytes(p, 'prefix'));
    if (!ks.length && !ps.length) return Promise.reject(new TypeError('subscribe: no keys and no prefixes'));
    const nk = [];
    const np = [];
    const need = new Set();
    for (const k of ks) {
      const h = hexOf(k);
      let s = this.#subs.keys.get(h);
      if (!s) (this.#subs.keys.set(h, (s = { bytes: k, synced: false, live: false })), nk.push(k));
      if (!s.live) need.add('k' + h);
    }
    for (const p of ps) {
      const h = hexOf(p);
      let s = this.#subs.prefixes.get(h);
      if (!s) (this.#subs.prefixes.set(h, (s = { bytes: p, synced: false, live: false })), np.push(p));
      if (!s.live) need.add('p' + h);
    }
    this.#save({ meta: true });
    if (this.#role === 'follower') {
      // the leader tab subscribes; a follower does not see its catch-up
      this.#link.subscribe(nk, np);
      return Promise.resolve();
    }
    if ((nk.length || np.length) && this.#status === 'online' && this.#welcome) this.#sendSubscribe(nk, np, 0);
    if (!need.size) return Promise.resolve();
    // resolved once the server's `subscribed` for every topic came on this session (or, offline,
    // on the next one: the resume subscribes them all)
    return new Promise((resolve, reject) => this.#subWaiters.add({ need, resolve, reject }));
  }

  #checkSubWaiters() {
    for (const w of [...this.#subWaiters]) {
      for (const t of [...w.need]) {
        const s = (t[0] === 'k' ? this.#subs.keys : this.#subs.prefixes).get(t.slice(1));
        if (!s || s.live) w.need.delete(t); // caught up, or unsubscribed meanwhile
      }
      if (w.need.size) continue;
      this.#subWaiters.delete(w);
      w.resolve();
    }
  }

  unsubscribe({ keys = [], prefixes = [] } = {}) {
    const ks = keys.map((k) => this.#keyText(k).bytes);
    const ps = prefixes.map((p) => toBytes(p, 'prefix'));
    for (const k of ks) this.#subs.keys.delete(hexOf(k));
    for (const p of ps) this.#subs.prefixes.delete(hexOf(p));
    this.#save({ meta: true });
    this.#checkSubWaiters();
    if (this.#status === 'online' && (ks.length || ps.length) && this.#role !== 'follower') {
      const id = this.#reqId++;
      this.#send(binary.unsubscribe(id, ks, ps));
    }
    return Promise.resolve();
  }

  #sendSubscribe(keys, prefixes, since) {
    const id = this.#reqId++;
    this.#reqs.set(id, { keys, prefixes });
    this.#send(binary.subscribe(id, keys, prefixes, since));
  }

  // ---- the connection

  connect() {
    if (this.#closed) throw new Error('this client is closed');
    if (this.#role === 'follower') return;
    this.#want = true;
    if (!this.#ws && !this.#timer) this.#dial();
  }

  disconnect() {
    this.#want = false;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#timer);
    this.#timer = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = null;
      ws.onclose = null;
      try {
        ws.close(1000, 'client disconnect');
      } catch {
        /* not open */
      }
    }
    this.#sessionLost();
    this.#setStatus('offline');
  }

  async close() {
    if (this.#closed) return;
    this.disconnect();
    if (this.#net) {
      this.#net.removeEventListener('online', this.#onNet);
      this.#net.removeEventListener('offline', this.#onNet);
      this.#net = null;
    }
    const closed = new ClientError('closed', 'the client was closed');
    for (const w of this.#subWaiters) w.reject(closed);
    this.#subWaiters.clear();
    this.#link?.close?.();
    this.#persist();
    await this.#saving;
    this.#closed = true;
    await this.#storage.close?.();
    this.#replica.close();
  }

  async #dial() {
    this.#timer = null;
    if (!this.#want || this.#closed) return;
    if (this.#netDown) {
      this.#setStatus('offline'); // dialled at the 'online' event
      return;
    }
    this.#setStatus('connecting');
    const WS = this.#o.WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      this.#emitError(new ClientError('transport', 'no WebSocket: pass opts.WebSocket (in Node 20: NodeWebSocket from node-ws.js)'));
      this.#want = false;
      this.#setStatus('offline');
      return;
    }
    if (!this.#token && this.#o.getToken) {
      try {
        this.#token = await this.#o.getToken();
      } catch (e) {
        this.#emitError(new ClientError('token', `getToken failed: ${e?.message ?? e}`));
        this.#retry();
        return;
      }
      if (!this.#want || this.#closed) return;
    }
    let ws;
    try {
      ws = new WS(this.#o.url, [BIN_PROTOCOL]);
    } catch (e) {
      this.#emitError(new ClientError('transport', `connecting failed: ${e?.message ?? e}`));
      this.#retry();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#welcome = null;
    ws.onopen = () => {
      if (ws.protocol && ws.protocol !== BIN_PROTOCOL) {
        this.#emitError(new ClientError('protocol', `the server chose subprotocol ${ws.protocol}`));
        ws.close(1000);
        return;
      }
      const hello = { type: 'hello', client: this.#meta.clientId, cursor: this.#meta.cursor };
      if (this.#token) hello.token = this.#token;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      try {
        if (typeof ev.data === 'string') this.#onText(ev.data);
        else this.#onBinary(new Uint8Array(ev.data));
      } catch (e) {
        if (e instanceof ProtocolError) this.#protocolError(e.message);
        else throw e;
      }
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#onClose(ev.code, ev.reason ?? '');
    };
  }

  #send(data) {
    try {
      this.#ws?.send(data);
    } catch {
      /* the close event follows */
    }
  }

  #sendOp(op) {
    if (this.#status !== 'online' || op.sent) return;
    const msg = binary.apply(op.id, op.key, op.delta);
    const max = this.#welcome?.limits?.max_message;
    if (Number.isSafeInteger(max) && max > 0 && msg.length > max) {
      // the server would discard it unread (no id in its error): refuse it here, for good
      this.#done(op.id, null, new ClientError('too_large', `op ${op.id}: ${msg.length} bytes, over the server's ${max} (--ws-max-message)`, { id: op.id, key: op.key }));
      return;
    }
    op.sent = true;
    this.#send(msg);
  }

  #protocolError(why) {
    this.#emitError(new ClientError('protocol', `malformed or unexpected server message: ${why}`));
    // what came after it cannot be trusted to line up with the cursor: resume from the last
    // good one on a new session
    const ws = this.#ws;
    if (ws) {
      this.#ws = null;
      ws.onclose = ws.onmessage = null;
      try {
        ws.close(4000, 'protocol error');
      } catch {
        /* gone */
      }
      this.#onClose(4000, 'protocol error');
    }
  }

  #sessionLost() {
    for (const op of this.#queue.values()) op.sent = false;
    // subscriptions are asked again on the next session; subscribe()'s promises wait for that
    for (const s of this.#subs.keys.values()) s.live = false;
    for (const s of this.#subs.prefixes.values()) s.live = false;
    this.#reqs.clear();
    this.#welcome = null;
  }

  #onClose(code, reason) {
    const welcomed = !!this.#welcome;
    this.#sessionLost();
    if (code === 4001) {
      this.#token = welcomed ? this.#nextToken : null;
      this.#nextToken = null;
      if (!this.#o.getToken) {
        this.#emitError(new ClientError('token', `the server refused the token (${reason}); pass getToken to renew it`));
        this.#want = false;
        this.#setStatus('offline');
        return;
      }
      // a token that expired during a session is renewed at once; one refused at hello (getToken
      // gave a bad one) waits its backoff like any failure
      if (welcomed) {
        this.#attempt = 0;
        this.#retry(true);
        return;
      }
      this.#emitError(new ClientError('token', `the server refused the token from getToken (${reason})`));
    } else if (code === 4003 || code === 4009) {
      this.#emitError(new ClientError('closed', `the server closed the session: ${code} ${reason}`));
      this.#want = false;
      this.#setStatus('offline');
      return;
    }
    this.#retry();
  }

  #retry(immediate = false) {
    if (!this.#want || this.#closed || this.#netDown) {
      this.#setStatus('offline');
      return;
    }
    this.#setStatus('connecting');
    const b = this.#o.backoff ?? {};
    const min = b.minMs ?? 250;
    const max = b.maxMs ?? 30000;
    const cap = Math.min(max, min * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    // jitter over [min/2, cap]; a token that expired mid-session is renewed at once
    const delay = immediate ? 0 : min / 2 + Math.random() * (cap - min / 2);
    this.#timer = setTimeout(() => this.#dial(), delay);
  }

  #onText(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      throw new ProtocolError('not JSON');
    }
    if (!m || typeof m !== 'object' || typeof m.type !== 'string') throw new ProtocolError('not a crdt.v1 message');
    switch (m.type) {
      case 'welcome':
        return this.#onWelcome(m);
      case 'error':
        return this.#onError(m);
      case 'pong':
      case 'unsubscribed':
        return;
      case 'ack':
      case 'subscribed':
        return this.#onBinaryMsg(m);
      case 'change':
        throw new ProtocolError('a JSON change on a binary session');
      default:
        this.#emitError(new ClientError('protocol', `unknown server message type ${JSON.stringify(m.type)} (ignored)`));
    }
  }

  #onBinary(u8) {
    if (!this.#welcome) throw new ProtocolError('a binary message before welcome');
    this.#onBinaryMsg(binary.decode(u8));
  }

  #onBinaryMsg(m) {
    if (!this.#welcome) throw new ProtocolError(`${m.type} before welcome`);
    if (m.type === 'change') return this.#onChange(m);
    if (m.type === 'ack') {
      if (!Number.isSafeInteger(m.id)) throw new ProtocolError('ack without an id');
      if (!this.#queue.has(m.id)) return; // an ack of an op compacted away or acked already
      return this.#done(m.id, { id: m.id, seq: m.seq, applied: !!m.applied, duplicate: !!m.duplicate }, null);
    }
    if (m.type === 'subscribed') {
      if (Number.isSafeInteger(m.cursor)) this.#setCursor(m.cursor);
      const r = this.#reqs.get(m.id);
      if (!r) return;
      this.#reqs.delete(m.id);
      for (const k of r.keys) {
        const s = this.#subs.keys.get(hexOf(k));
        if (s) s.synced = s.live = true;
      }
      for (const p of r.prefixes) {
        const s = this.#subs.prefixes.get(hexOf(p));
        if (s) s.synced = s.live = true;
      }
      this.#save({ meta: true });
      const out = (b) => this.#keyOut(keyId(b), b);
      this.#emit('synced', { keys: r.keys.map(out), prefixes: r.prefixes.map(out), cursor: this.#meta.cursor });
      this.#checkSubWaiters();
    }
  }

  #setCursor(c) {
    if (c === this.#meta.cursor) return;
    this.#meta.cursor = c;
    this.#save({ meta: true });
  }

  #onWelcome(m) {
    if (this.#welcome) throw new ProtocolError('a second welcome');
    if (!Number.isSafeInteger(m.node) || !Number.isSafeInteger(m.seq)) throw new ProtocolError('welcome without node or seq');
    this.#welcome = m;
    this.#attempt = 0;
    if (m.node !== this.#meta.node) {
      // cursors are positions in one node's feed: another node's means nothing here
      this.#meta.node = m.node;
      this.#meta.cursor = 0;
      this.#save({ meta: true });
    }
    this.#setStatus('online');
    clearTimeout(this.#renewTimer);
    if (m.expires > 0 && this.#o.getToken) {
      // fetch the next token ahead of time (10 s before expiry), so the new session after the
      // server's 4001 "token expired" starts at once
      const ms = Math.max(0, m.expires * 1000 - Date.now() - 10000);
      this.#renewTimer = setTimeout(async () => {
        try {
          this.#nextToken = await this.#o.getToken();
        } catch {
          this.#nextToken = null; // fetched again when needed
        }
      }, Math.min(ms, 2 ** 31 - 1));
      this.#renewTimer.unref?.();
    }
    this.#emit('welcome', { node: m.node, seq: m.seq, session: m.session ?? '', subject: m.subject ?? '', expires: m.expires ?? 0 });
    // resume: what was held from the cursor, what is new from 0; then every unacked op
    const held = { keys: [], prefixes: [] };
    const fresh = { keys: [], prefixes: [] };
    for (const s of this.#subs.keys.values()) (s.synced ? held : fresh).keys.push(s.bytes);
    for (const s of this.#subs.prefixes.values()) (s.synced ? held : fresh).prefixes.push(s.bytes);
    if (held.keys.length || held.prefixes.length) this.#sendSubscribe(held.keys, held.prefixes, this.#meta.cursor);
    if (fresh.keys.length || fresh.prefixes.length) this.#sendSubscribe(fresh.keys, fresh.prefixes, 0);
    for (const id of [...this.#queue.keys()].sort((a, b) => a - b)) this.#sendOp(this.#queue.get(id));
  }

  #onError(m) {
    const code = typeof m.code === 'string' ? m.code : 'unknown';
    const id = Number.isSafeInteger(m.id) ? m.id : undefined;
    const err = new ClientError(code, `server: ${code}: ${m.message ?? ''}`, { id });
    this.#emitError(err);
    if (id === undefined) return;
    const r = this.#reqs.get(id);
    if (r) {
      // a refused subscribe: nothing of it is subscribed
      this.#reqs.delete(id);
      for (const k of r.keys) this.#subs.keys.delete(hexOf(k));
      for (const p of r.prefixes) this.#subs.prefixes.delete(hexOf(p));
      this.#save({ meta: true });
      const refused = new Set([...r.keys.map((k) => 'k' + hexOf(k)), ...r.prefixes.map((p) => 'p' + hexOf(p))]);
      for (const w of [...this.#subWaiters]) {
        if (![...w.need].some((t) => refused.has(t))) continue;
        this.#subWaiters.delete(w);
        w.reject(err);
      }
      return;
    }
    const op = this.#queue.get(id);
    if (!op) return;
    if (code === 'storage' || code === 'internal' || code === 'expired') {
      // retried later under a new id: once a later id is applied the server counts this one as a
      // duplicate, and the delta (a join) may be sent again safely
      const again = this.#reissue(op);
      if (code !== 'expired') {
        const ws = this.#ws;
        setTimeout(() => this.#ws === ws && this.#status === 'online' && this.#sendOp(again), 1000 + Math.random() * 1000);
      }
      return;
    }
    this.#queue.get(id) && this.#dropRefused(id, err); // refused for good (unauthorized, wrong_type, bad_request, ...)
  }

  #onChange(m) {
    const k = keyId(m.key);
    let changed;
    try {
      changed = this._merge(k, m.bytes, m.full);
    } catch (e) {
      throw new ProtocolError(`change ${m.seq} of key ${k}: ${e.message}`);
    }
    this.#setCursor(m.cursor);
    if (!changed) return;
    this.#persistKey(k, m.key, m.bytes);
    this.#link?.change?.(k, m.key, m.bytes);
    this.#emit('change', { key: this.#keyOut(k, m.key), keyBytes: m.key, type: this.#replica.type(k), source: 'remote' });
  }

  /** Joins bytes into key k. A delta of a timeline the replica does not hold yet makes it with
   * the server's bound first (a delta does not carry it), so local encodings equal crdtd's. */
  _merge(k, bytes, full) {
    if (!full && !this.#replica.has(k)) {
      const o = this.#wasm.decode(bytes);
      const t = o.type;
      o.free();
      if (t === 'timeline') this.#replica.timeline(k, { maxSize: this.#o.timelineMaxSize ?? 1000 });
    }
    return this.#replica.merge(k, bytes);
  }

  // ---- tabs.js

  /** A change that came from the leader tab (followers) or a follower's write (leader). */
  _remote(k, bytes, delta, source) {
    let changed;
    try {
      changed = this._merge(k, delta, false);
    } catch (e) {
      this.#emitError(new ClientError('protocol', `a tab sent a bad delta for ${k}: ${e.message}`));
      return false;
    }
    if (changed) this.#emit('change', { key: this.#keyOut(k, bytes), keyBytes: bytes, type: this.#replica.type(k), source });
    return changed;
  }

  _attach(link, role) {
    this.#link = link;
    if (role) this.#role = role;
  }

  /** A follower mirrors its leader's connection status. */
  _followerStatus(status) {
    if (this.#role === 'follower') this.#setStatus(status);
  }

  _followerPending() {
    this.#pendingChanged();
  }

  _followerError(err) {
    this.#emitError(err);
  }

  /** A leader that finds an older leader steps down: its connection closes and its queued
   * writes are handed over (returned; the new leader sends them). */
  _demote() {
    this.disconnect();
    this.#role = 'follower';
    const ops = [...this.#queue.values()].sort((a, b) => a.id - b.id);
    this.#queue.clear(); // their waiters move to the follower's ids (tabs.js)
    this.#queueBytes = 0;
    return ops;
  }

  /** A follower becomes the leader: reload what the old leader persisted, connect. */
  async _promote() {
    this.#role = 'leader';
    const loaded = await this.#storage.load();
    if (loaded.meta?.nextOpId > this.#meta.nextOpId) this.#meta.nextOpId = loaded.meta.nextOpId;
    if (loaded.meta) {
      for (const k of loaded.meta.keys) if (!this.#subs.keys.has(hexOf(k))) this.#subs.keys.set(hexOf(k), { bytes: k, synced: true, live: false });
      for (const p of loaded.meta.prefixes) if (!this.#subs.prefixes.has(hexOf(p))) this.#subs.prefixes.set(hexOf(p), { bytes: p, synced: true, live: false });
      if (loaded.meta.node) {
        this.#meta.node = loaded.meta.node;
        this.#meta.cursor = loaded.meta.cursor;
      }
    }
    this._restore(loaded);
    this.#save({ meta: true });
    this.#pendingChanged();
    if (this.#o.autoConnect !== false) this.connect();
  }

  _topics() {
    return this.subscriptions();
  }

  _statesForFollower() {
    return this.#replica.keys().map((k) => [keyId(k), this.#replica.encode(k)]);
  }
}

// ---- typed handles ---------------------------------------------------------------------------

class Handle {
  constructor(client, key, type) {
    this._c = client;
    this.key = key;
    this._t = type;
  }
  _v(create = false) {
    return this._c._view(this.key, this._t, create);
  }
  _w(fn) {
    return this._c._write(this.key, () => fn(this._v(true)));
  }
}

const checkScore = (s) => {
  if (typeof s !== 'number' || Number.isNaN(s)) throw new TypeError('score: expected a number');
};

export class TimelineHandle extends Handle {
  constructor(c, key) {
    super(c, key, 'timeline');
  }
  add(member, score) {
    checkScore(score);
    return this._w((v) => v.add(member, score));
  }
  remove(member, score) {
    checkScore(score);
    return this._w((v) => v.remove(member, score));
  }
  newest(count = 50) {
    return this._v()?.newest(count) ?? [];
  }
  range({ offset = 0, count = 50 } = {}) {
    return this._v()?.range({ offset, count }) ?? [];
  }
  page({ limit = 50, after = null, max, min } = {}) {
    const v = this._v();
    if (!v) return { entries: [], next: null };
    const opts = { limit: limit + 1 };
    if (max !== undefined) opts.max = max;
    if (min !== undefined) opts.min = min;
    if (after) opts.after = after;
    const got = v.rangeByScore(opts);
    const entries = got.slice(0, limit);
    const last = entries[entries.length - 1];
    const next = got.length > limit && last ? { member: toBytes(last.member, 'member'), score: last.score } : null;
    return { entries, next };
  }
  score(member) {
    return this._v()?.score(member);
  }
  get size() {
    return this._v()?.card ?? 0;
  }
  /** Deletes every entry seen here (observed-remove): the op id, or null when none was live. */
  delete() {
    return this._v() ? this._w((v) => v.delete()) : null;
  }
}

export class CounterHandle extends Handle {
  incr(by = 1) {
    if (!Number.isSafeInteger(by) || (this._t === 'gcounter' && by < 0))
      throw new TypeError(this._t === 'gcounter' ? 'incr: a non-negative integer' : 'incr: an integer');
    if (by === 0) return null;
    return this._w((v) => v.incr(by));
  }
  value() {
    return this._v()?.value() ?? 0;
  }
}

export class PnCounterHandle extends CounterHandle {
  decr(by = 1) {
    if (!Number.isSafeInteger(by)) throw new TypeError('decr: an integer');
    return this.incr(-by);
  }
  /** Brings the counter to 0 as seen here (what others add meanwhile survives): the op id, or
   * null when it was 0. */
  delete() {
    return this._v() ? this._w((v) => v.delete()) : null;
  }
}

export class RegisterHandle extends Handle {
  constructor(c, key) {
    super(c, key, 'lwwreg');
  }
  set(value) {
    return this._w((v) => v.set(value));
  }
  get() {
    return this._v()?.get()?.value ?? null;
  }
  entry() {
    return this._v()?.get() ?? null;
  }
  /** Clears the register (a later set wins): the op id, or null when it held no value. */
  delete() {
    return this._v() ? this._w((v) => v.delete()) : null;
  }
}

export class SetHandle extends Handle {
  add(member) {
    return this._w((v) => v.add(member));
  }
  remove(member) {
    return this._w((v) => v.remove(member));
  }
  has(member) {
    return this._v()?.has(member) ?? false;
  }
  members() {
    return this._v()?.members() ?? [];
  }
  get size() {
    return this._v()?.size ?? 0;
  }
  /** Removes every member seen here (observed-remove): the op id, or null when none was live. */
  delete() {
    return this._v() ? this._w((v) => v.delete()) : null;
  }
}
