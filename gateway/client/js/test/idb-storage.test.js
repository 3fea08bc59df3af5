// idb-storage.test.js - IndexedDBStorage through a small in-memory IndexedDB stand-in (the part of
// the API it uses: open with an upgrade, transactions over object stores, get/getAll/put/delete,
// values structured-cloned, completion after the last request): a client's states, queue and
// cursor survive a "reload" (a new storage and client on the same databases). The browser tests
// run it on Chromium's real IndexedDB.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { Client } from '../client.js';
import { IndexedDBStorage } from '../idb-storage.js';
import { hex, loadWasm } from './helpers.js';

class FakeRequest {
  constructor() {
    this.onsuccess = this.onerror = this.onupgradeneeded = null;
  }
}

function fakeIndexedDB() {
  const dbs = new Map(); // name -> Map(store -> Map(key -> value))
  const later = (fn) => setTimeout(fn, 0);
  const makeDb = (name) => {
    const stores = dbs.get(name);
    return {
      objectStoreNames: { contains: (s) => stores.has(s) },
      createObjectStore: (s) => stores.set(s, new Map()),
      close() {},
      transaction(names, mode) {
        let open = 0;
        let ended = false;
        const tx = { oncomplete: null, onerror: null, onabort: null, error: null };
        const maybeDone = () =>
          later(() => {
            if (open === 0 && !ended) {
              ended = true;
              tx.oncomplete?.();
            }
          });
        const op = (fn) => {
          const r = new FakeRequest();
          open++;
          queueMicrotask(() => {
            r.result = fn();
            r.onsuccess?.();
            open--;
            maybeDone();
          });
          return r;
        };
        tx.objectStore = (s) => {
          assert.ok(names.includes(s), `store ${s} is in the transaction`);
          const m = stores.get(s);
          return {
            get: (k) => op(() => structuredClone(m.get(k))),
            getAll: () => op(() => [...m.values()].map((v) => structuredClone(v))),
            put: (v, k) => {
              assert.equal(mode, 'readwrite');
              return op(() => (m.set(k, structuredClone(v)), k));
            },
            delete: (k) => op(() => (m.delete(k), undefined)),
          };
        };
        maybeDone();
        return tx;
      },
    };
  };
  return {
    dbs,
    open(name) {
      const r = new FakeRequest();
      later(() => {
        const fresh = !dbs.has(name);
        if (fresh) dbs.set(name, new Map());
        r.result = makeDb(name);
        if (fresh) r.onupgradeneeded?.();
        r.onsuccess?.();
      });
      return r;
    },
    deleteDatabase(name) {
      const r = new FakeRequest();
      later(() => (dbs.delete(name), r.onsuccess?.()));
      return r;
    },
  };
}

let wasm;
before(async () => {
  wasm = await loadWasm();
});

test('IndexedDBStorage: the replica, the queue, subscriptions and the cursor survive a reload', async () => {
  const idb = fakeIndexedDB();
  const open = () =>
    Client.open({ url: 'ws://127.0.0.1:1/', wasm, autoConnect: false, storage: new IndexedDBStorage({ name: 'app', indexedDB: idb }) });
  const a = await open();
  const tl = a.timeline('feed:1');
  for (let i = 0; i < 50; i++) tl.add(`post:${i}`, i);
  a.register('title').set('Our feed');
  a.orset('tags').add('crdt');
  // never connected: subscribe() waits for a catch-up that close() ends
  const sub = assert.rejects(a.subscribe({ prefixes: ['feed:'] }), /closed/);
  const enc = hex(a.replica.encode('feed:1'));
  const pending = a.pending;
  const id = a.clientId;
  await a.close();
  await sub;
  assert.ok(idb.dbs.get('app').get('ops').size > 0, 'ops were written');

  const b = await open();
  assert.equal(b.clientId, id, 'the client id is the persisted one');
  assert.equal(hex(b.replica.encode('feed:1')), enc);
  assert.equal(b.register('title').get(), 'Our feed');
  assert.deepEqual(b.orset('tags').members(), ['crdt']);
  assert.equal(b.pending, pending);
  assert.deepEqual(b.subscriptions().prefixes.map((p) => Buffer.from(p).toString()), ['feed:']);
  // more writes after the reload keep ids increasing
  const next = b.gcounter('n').incr(1);
  assert.ok(next > Math.max(...[...idb.dbs.get('app').get('ops').keys()].filter((k) => k !== next)));
  await b.close();
  await IndexedDBStorage.destroy('app', idb);
  assert.equal(idb.dbs.has('app'), false);
});

test('IndexedDBStorage without indexedDB: a clear error', () => {
  assert.throws(() => new IndexedDBStorage({ indexedDB: null }), /no indexedDB/);
});
