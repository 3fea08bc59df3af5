// idb-storage.js - the client's persistence in IndexedDB (browsers): states, the resume cursor and
// the queue of unacknowledged ops survive a reload and a browser restart.
//
//   import { IndexedDBStorage } from '@crdtd/client/idb-storage.js';
//   const c = await Client.open({ url, wasm, storage: new IndexedDBStorage({ name: 'feed-app' }) });
//
// One database, three object stores: 'meta' (one record, key 'meta'), 'keys' (per key, under its
// hex: { key, state, deltas }: the last whole state and the deltas appended since, which the
// client rewrites as one state once they outweigh it: compaction by bytes) and 'ops' (per op id:
// { id, key, delta }). Each write() is one transaction with strict durability, so what a reload
// finds is what the last completed write left.

const STORES = ['meta', 'keys', 'ops'];

const hexOf = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length; i++) s += (u8[i] < 16 ? '0' : '') + u8[i].toString(16);
  return s;
};

const req = (r) =>
  new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });

const done = (tx) =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });

const u8 = (v) => (v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : v);

export class IndexedDBStorage {
  #name;
  #idb;
  #db = null;

  constructor({ name = 'crdtd', indexedDB } = {}) {
    this.#name = name;
    this.#idb = indexedDB ?? globalThis.indexedDB;
    if (!this.#idb) throw new TypeError('IndexedDBStorage: no indexedDB here (a browser is needed; MemoryStorage elsewhere)');
  }

  async #open() {
    if (this.#db) return this.#db;
    const r = this.#idb.open(this.#name, 1);
    r.onupgradeneeded = () => {
      const db = r.result;
      for (const s of STORES) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s);
    };
    this.#db = await req(r);
    this.#db.onversionchange = () => {
      this.#db?.close();
      this.#db = null;
    };
    return this.#db;
  }

  #tx(db, mode) {
    try {
      return db.transaction(STORES, mode, { durability: 'strict' });
    } catch {
      return db.transaction(STORES, mode);
    }
  }

  async load() {
    const db = await this.#open();
    const tx = this.#tx(db, 'readonly');
    const [meta, keys, ops] = await Promise.all([
      req(tx.objectStore('meta').get('meta')),
      req(tx.objectStore('keys').getAll()),
      req(tx.objectStore('ops').getAll()),
    ]);
    await done(tx);
    return {
      meta: meta ? { ...meta, keys: meta.keys.map(u8), prefixes: meta.prefixes.map(u8), fresh: meta.fresh && { keys: meta.fresh.keys.map(u8), prefixes: meta.fresh.prefixes.map(u8) } } : null,
      keys: keys.map((k) => ({ key: u8(k.key), state: k.state ? u8(k.state) : null, deltas: k.deltas.map(u8) })),
      ops: ops.map((o) => ({ id: o.id, key: u8(o.key), delta: u8(o.delta) })).sort((a, b) => a.id - b.id),
    };
  }

  async write(b) {
    const db = await this.#open();
    const tx = this.#tx(db, 'readwrite');
    const finished = done(tx);
    if (b.meta) tx.objectStore('meta').put(b.meta, 'meta');
    const keys = tx.objectStore('keys');
    const states = new Map();
    for (const s of b.states ?? []) states.set(hexOf(s.key), s);
    for (const [h, s] of states) keys.put({ key: s.key, state: s.state, deltas: [] }, h);
    const appends = new Map();
    for (const d of b.deltas ?? []) {
      const h = hexOf(d.key);
      const a = appends.get(h) ?? { key: d.key, deltas: [] };
      a.deltas.push(d.delta);
      appends.set(h, a);
    }
    for (const [h, a] of appends) {
      const g = keys.get(h);
      g.onsuccess = () => {
        const cur = g.result ?? { key: a.key, state: null, deltas: [] };
        keys.put({ key: cur.key, state: cur.state, deltas: cur.deltas.concat(a.deltas) }, h);
      };
    }
    const ops = tx.objectStore('ops');
    for (const op of b.ops ?? []) ops.put({ id: op.id, key: op.key, delta: op.delta }, op.id);
    for (const id of b.deleteOps ?? []) ops.delete(id);
    await finished;
  }

  async close() {
    this.#db?.close();
    this.#db = null;
  }

  static async destroy(name = 'crdtd', indexedDB = globalThis.indexedDB) {
    await req(indexedDB.deleteDatabase(name));
  }
}
