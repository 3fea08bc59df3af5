// idb-storage.d.ts - types of idb-storage.js: the client's persistence in IndexedDB (browsers)

import type { Storage, StorageBatch, StoredData } from './client.js';

/** States, the resume cursor and the queue of unacknowledged ops in one IndexedDB database
 * (object stores 'meta', 'keys', 'ops'); each write() is one transaction, so a reload or a
 * browser restart finds what the last completed write left. */
export declare class IndexedDBStorage implements Storage {
  /** name: the database name (default 'crdtd'); one per client id and origin. indexedDB: the
   * factory (default globalThis.indexedDB). */
  constructor(opts?: { name?: string; indexedDB?: IDBFactory });
  load(): Promise<StoredData>;
  write(batch: StorageBatch): Promise<void>;
  close(): Promise<void>;
  /** Deletes the database (closing it first). */
  static destroy(name?: string, indexedDB?: IDBFactory): Promise<void>;
}
